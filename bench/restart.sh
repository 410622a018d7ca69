#!/usr/bin/env bash
# How a broker's start grows with finished jobs (docs/PERFORMANCE.md, "How cost grows"): for a
# database holding FINISHED succeeded jobs (100-byte payloads, a 3-event history each, written
# straight into the file with the sqlite3 tool) and LIVE ready ones (submitted through the
# broker), the time from spawn to the first PONG and the broker's RSS then, warm (file in the page
# cache) and cold (page cache dropped first, which needs root), ROUNDS times each, interleaved.
#
#   bench/restart.sh [BUILD_DIR] [FINISHED] [LIVE] [ROUNDS]     (default: build 1000000 1000 3)
#
# BUILD_DIR is a meson build of errand (broker/errand-broker and client/errand). The figures are
# per round and their median. Needs sqlite3 (Debian package sqlite3). With MIGRATE_WITH=BUILD2
# it times instead one start of BUILD2's broker on the file BUILD_DIR made (its migration).
set -euo pipefail
build=${1:-build}
finished=${2:-1000000}
live=${3:-1000}
rounds=${4:-3}
broker=$build/broker/errand-broker
cli=$build/client/errand
dir=$(mktemp -d /tmp/errand-restart.XXXXXX)
port=$(( 20000 + RANDOM % 20000 ))
ep=tcp://127.0.0.1:$port
pid=
cleanup() { [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT

start() {
  "$broker" --listen "$ep" --db "$dir/errand.db" --log-level warn > "$dir/broker.log" 2>&1 &
  pid=$!
}
stop() { kill "$pid"; wait "$pid" 2>/dev/null || true; pid=; }
# Sets ms: milliseconds from spawn to the first answered PING.
time_to_pong() {
  local t0 t1
  t0=$(date +%s%N)
  start
  until "$cli" --broker "$ep" --request-timeout 200ms ping > /dev/null 2>&1; do
    kill -0 "$pid" 2>/dev/null || { cat "$dir/broker.log"; exit 1; }
  done
  t1=$(date +%s%N)
  ms=$(( (t1 - t0) / 1000000 ))
}
rss_mib() { awk '/VmRSS/ { printf "%.0f", $2 / 1024 }' "/proc/$pid/status"; }

# The schema, made by the broker itself; then the live jobs through it.
start
until "$cli" --broker "$ep" --request-timeout 200ms ping > /dev/null 2>&1; do :; done
seq "$live" | awk '{ printf "{\"queue\":\"live\",\"payload\":\"%0100d\"}\n", $1 }' |
  "$cli" --broker "$ep" submit --jsonl - > /dev/null
stop
echo "loading $finished finished jobs..." >&2
t0=$(date +%s)
version=$(sqlite3 "$dir/errand.db" "SELECT version FROM schema_version")
# Version 8 keeps a job's first event in its row (about 40 bytes) and the others as events rows;
# before, all three were packed in the row's history column (about 120 bytes).
hist=120
# Finished within the last day: inside the default retention (7 days), so none is deleted.
since=$(( ($(date +%s) - 86400) * 1000 ))
[ "$version" -ge 8 ] && hist=40
sqlite3 "$dir/errand.db" > /dev/null <<SQL
PRAGMA journal_mode = WAL;
BEGIN;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $finished)
INSERT INTO jobs (id, queue, state, payload, attempts, max_attempts, created_at, started_at,
                  finished_at, worker, exit_code, result, history)
SELECT 10000000000 + i, 'done', 'succeeded', randomblob(100), 1, 3, $since + i / 100,
       $since + i / 100 + 1, $since + i / 100 + 2, 'bench-worker', 0, x'6f6b', randomblob($hist)
FROM n;
COMMIT;
SQL
if [ "$version" -ge 8 ]; then
  sqlite3 "$dir/errand.db" <<SQL
BEGIN;
INSERT INTO events (job_id, id, at, from_state, to_state, attempt, worker, reason)
  SELECT id, 1099511627776 + 2 * (id - 10000000000) + k, created_at + k + 1,
         CASE k WHEN 0 THEN 'ready' ELSE 'running' END, CASE k WHEN 0 THEN 'running' ELSE 'succeeded' END,
         1, 'bench-worker', CASE k WHEN 0 THEN 'dispatched' ELSE 'done' END
  FROM jobs, (SELECT 0 AS k UNION ALL SELECT 1) WHERE id > 10000000000;
UPDATE event_seq SET n = 1099511627776 + 2 * $finished + 2;
INSERT INTO job_counts VALUES ('done', 'succeeded', $finished);
COMMIT;
SQL
fi
sqlite3 "$dir/errand.db" "PRAGMA wal_checkpoint(TRUNCATE)" > /dev/null
echo "loaded in $(( $(date +%s) - t0 )) s; file $(( $(stat -c %s "$dir/errand.db") / 1048576 )) MiB" >&2

# MIGRATE_WITH=BUILD: start that build's broker once on the file BUILD_DIR's made (a newer
# schema: it migrates first) and print how long until it answered; nothing else.
if [ -n "${MIGRATE_WITH:-}" ]; then
  broker=$MIGRATE_WITH/broker/errand-broker
  time_to_pong
  printf 'migration: %s finished jobs, schema %s -> %s, first PONG after %s ms, RSS %s MiB\n' \
    "$finished" "$version" "$(sqlite3 "$dir/errand.db" "SELECT version FROM schema_version")" \
    "$ms" "$(rss_mib)"
  stop
  exit 0
fi

median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
warm_ms=() warm_rss=() cold_ms=() cold_rss=()
for r in $(seq "$rounds"); do
  time_to_pong; warm_ms+=("$ms"); warm_rss+=("$(rss_mib)"); stop
  if sync && echo 3 > /proc/sys/vm/drop_caches 2> /dev/null; then
    time_to_pong; cold_ms+=("$ms"); cold_rss+=("$(rss_mib)"); stop
  fi
done
printf 'finished=%s live=%s rounds=%s load=%s\n' "$finished" "$live" "$rounds" "$(cut -d' ' -f1-3 /proc/loadavg)"
printf 'warm: first PONG ms %s (median %s), RSS MiB %s (median %s)\n' "${warm_ms[*]}" \
  "$(printf '%s\n' "${warm_ms[@]}" | median)" "${warm_rss[*]}" "$(printf '%s\n' "${warm_rss[@]}" | median)"
if [ ${#cold_ms[@]} -gt 0 ]; then
  printf 'cold: first PONG ms %s (median %s), RSS MiB %s (median %s)\n' "${cold_ms[*]}" \
    "$(printf '%s\n' "${cold_ms[@]}" | median)" "${cold_rss[*]}" "$(printf '%s\n' "${cold_rss[@]}" | median)"
else
  echo "cold: not measured (dropping the page cache needs root)"
fi
