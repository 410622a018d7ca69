#!/usr/bin/env bash
# The most a PostgreSQL server on this machine can do for errand, without errand: the life of a
# job (insert + its event, claim + event, result + event: three commits, as a broker does it)
# written set-based, BATCH jobs per statement, on errand's own schema (made by the broker's
# migrations), driven by pgbench with CLIENTS connections for SECONDS (fsync on,
# synchronous_commit on, PostgreSQL's defaults). No broker, no ZeroMQ, no workers: an upper bound
# for errand-bench e2e on PostgreSQL, which also spends CPU on the broker, clients and workers.
#
#   bench/pg_ceiling.sh BUILD_DIR [BATCH [CLIENTS [SECONDS]]]     (defaults 1000 2 20)
#
# Prints pgbench's summary (one pgbench transaction = one batch's three commits) and the jobs
# that went through their whole life per second. Runs as root (postgres then
# runs as the `postgres` user) or as a user who may run postgres.
set -euo pipefail
build=${1:?build dir}
batch=${2:-1000}
clients=${3:-2}
seconds=${4:-20}
bin=${ERRAND_PG_BIN:-/usr/lib/postgresql/15/bin}
dir=$(mktemp -d)
as=()
if [ "$(id -u)" = 0 ]; then
    chown postgres "$dir"
    as=(runuser -u postgres --)
fi
pm=""
broker=""
cleanup() {
    [ -n "$broker" ] && kill "$broker" 2>/dev/null && wait "$broker" 2>/dev/null
    if [ -n "$pm" ] && [ -f "$dir/data/postmaster.pid" ]; then
        kill -INT "$(head -1 "$dir/data/postmaster.pid")" 2>/dev/null || true
        wait "$pm" 2>/dev/null || true
    fi
    rm -rf "$dir"
}
trap cleanup EXIT
"${as[@]}" "$bin/initdb" -D "$dir/data" -A trust -U errand -E UTF8 --no-sync >"$dir/initdb.log"
"${as[@]}" "$bin/postgres" -D "$dir/data" -k "$dir" -c listen_addresses= >"$dir/log" 2>&1 &
pm=$!
q() { "$bin/psql" -X -q -h "$dir" -U errand "$@"; }
for _ in $(seq 100); do "$bin/pg_isready" -q -h "$dir" && break; sleep 0.1; done
q -d postgres -c "CREATE DATABASE errand"
uri="postgresql:///errand?host=$dir&user=errand"

# errand's schema, by errand's migrations: a broker started once on the database.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$build/broker/errand-broker" --db "$uri" --listen "tcp://127.0.0.1:$port" >"$dir/broker.log" 2>&1 &
broker=$!
for _ in $(seq 100); do
    [ "$(q -d errand -At -c "SELECT count(*) FROM pg_tables WHERE tablename = 'leader'")" = 1 ] && break
    sleep 0.1
done
kill "$broker"; wait "$broker" 2>/dev/null || true; broker=""

# One pgbench "transaction" is one of the three steps, chosen in turn per client; each client
# works on a queue of its own so claims do not queue behind each other's locks.
cat >"$dir/life.sql" <<SQL
\set q :client_id
WITH j AS (INSERT INTO jobs (token, queue, state, payload, priority, max_attempts, created_at)
  SELECT md5(random()::text || g), 'ceil' || :q, 'ready', '\x0102030405060708'::bytea, 0, 3, 1
  FROM generate_series(1, $batch) g RETURNING id)
INSERT INTO job_events (job_id, at, from_state, to_state, attempt, worker, reason)
  SELECT id, 1, NULL, 'ready', 0, NULL, 'submitted' FROM j;
WITH c AS (UPDATE jobs SET state = 'running', attempts = attempts + 1, worker = 'w',
  started_at = 2, broker = 'b' WHERE id IN (SELECT id FROM jobs WHERE queue = 'ceil' || :q
  AND state = 'ready' ORDER BY priority DESC, ready_seq LIMIT $batch FOR UPDATE SKIP LOCKED)
  RETURNING id, attempts)
INSERT INTO job_events (job_id, at, from_state, to_state, attempt, worker, reason)
  SELECT id, 2, 'ready', 'running', attempts, 'w', 'dispatched' FROM c;
WITH d AS (UPDATE jobs SET state = 'succeeded', finished_at = 3, exit_code = 0,
  result = '\x6f6b'::bytea WHERE id IN (SELECT id FROM jobs WHERE broker = 'b'
  AND state = 'running' AND queue = 'ceil' || :q LIMIT $batch FOR UPDATE SKIP LOCKED)
  RETURNING id, attempts)
INSERT INTO job_events (job_id, at, from_state, to_state, attempt, worker, reason)
  SELECT id, 3, 'running', 'succeeded', attempts, 'w', 'succeeded' FROM d;
SQL
echo "batch=$batch clients=$clients seconds=$seconds load=$(cut -d' ' -f1-3 /proc/loadavg)"
out=$("$bin/pgbench" -n -h "$dir" -U errand -c "$clients" -j "$clients" -T "$seconds" \
    -f "$dir/life.sql" errand 2>&1)
echo "$out" | grep -E "number of transactions|latency average|tps"
tps=$(echo "$out" | sed -n 's/^tps = \([0-9.]*\).*/\1/p')
done_jobs=$(q -d errand -At -c "SELECT count(*) FROM jobs WHERE state = 'succeeded'")
echo "jobs through their whole life: $done_jobs in ${seconds}s = $((done_jobs / seconds)) jobs/s (3 commits per batch of $batch, each of the three steps set-based)"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
