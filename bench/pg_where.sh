#!/usr/bin/env bash
# Where errand's time goes on PostgreSQL: one `errand-bench e2e --mode batch` run against a
# PostgreSQL server of its own (fsync on, synchronous_commit on, pg_stat_statements loaded),
# with, over a 5 s window in the middle of the run, each broker's and each broker backend's
# share of the time on a CPU, runnable but waiting for one, and asleep (/proc/PID/schedstat);
# then, for the whole run, the statements by server time (pg_stat_statements) and the WAL
# written and synced (pg_stat_wal).
#
#   bench/pg_where.sh BUILD_DIR BROKERS JOBS [more errand-bench e2e flags]
#
# JOBS must keep the run going for 8 s or more (the window starts 2.5 s in).
# Runs as root (postgres then runs as the `postgres` user) or as a user who may run postgres.
set -euo pipefail
build=${1:?build dir}
n=${2:?brokers}
jobs=${3:?jobs}
shift 3
bin=${ERRAND_PG_BIN:-/usr/lib/postgresql/15/bin}
dir=$(mktemp -d)
as=()
if [ "$(id -u)" = 0 ]; then
    chown postgres "$dir"
    as=(runuser -u postgres --)
fi
pm=""
cleanup() {
    # runuser does not pass signals on: stop the postmaster itself (fast shutdown), by its pid.
    if [ -n "$pm" ] && [ -f "$dir/data/postmaster.pid" ]; then
        kill -INT "$(head -1 "$dir/data/postmaster.pid")" 2>/dev/null || true
        wait "$pm" 2>/dev/null || true
    fi
    rm -rf "$dir"
}
trap cleanup EXIT
"${as[@]}" "$bin/initdb" -D "$dir/data" -A trust -U errand -E UTF8 --no-sync >"$dir/initdb.log"
"${as[@]}" "$bin/postgres" -D "$dir/data" -k "$dir" -c listen_addresses= \
    -c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all \
    -c track_wal_io_timing=on >"$dir/log" 2>&1 &
pm=$!
q() { "$bin/psql" -X -q -h "$dir" -U errand "$@"; }
for _ in $(seq 100); do "$bin/pg_isready" -q -h "$dir" && break; sleep 0.1; done
q -d postgres -c "CREATE DATABASE errand"
q -d errand -c "CREATE EXTENSION pg_stat_statements" -c "SELECT pg_stat_statements_reset()" >/dev/null

"$build/bench/errand-bench" e2e --mode batch -n "$jobs" --brokers "$n" \
    --db "postgresql:///errand?host=$dir&user=errand" "$@" >"$dir/run.out" &
bench=$!
sleep 2.5  # past the start-up, into the run
brokers=$(pgrep -P "$bench" -f errand-broker | tr '\n' ' ')
backends=$(q -d errand -At -c "SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'errand-broker%'" | tr '\n' ' ')
snap() { for p in $brokers $backends; do echo "$p $(cat "/proc/$p/schedstat" 2>/dev/null || echo gone)"; done; }
s0=$(snap); t0=$(date +%s.%N)
sleep 5
s1=$(snap); t1=$(date +%s.%N)
wait "$bench"
grep -v '^    ' "$dir/run.out"
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$s0" "$s1" "$t0" "$t1" "$brokers" <<'PY'
import sys
s0 = {l.split()[0]: list(map(int, l.split()[1:3])) for l in sys.argv[1].splitlines()}
s1 = {l.split()[0]: list(map(int, l.split()[1:3])) for l in sys.argv[2].splitlines()}
wall = (float(sys.argv[4]) - float(sys.argv[3])) * 1e9
brokers = set(sys.argv[5].split())
if any("gone" in l for l in sys.argv[2].splitlines()):
    sys.exit("the run ended before the 5 s window did: give more jobs")
for pid in s1:
    run = (s1[pid][0] - s0[pid][0]) / wall
    wait = (s1[pid][1] - s0[pid][1]) / wall
    kind = "broker " if pid in brokers else "backend"
    print(f"{kind} {pid}: on a CPU {run:6.1%}  waiting for a CPU {wait:6.1%}  asleep {1 - run - wait:6.1%}")
PY
q -d errand -c "SELECT sum(calls) FILTER (WHERE query NOT LIKE 'SELECT \$2 FROM ONLY%') AS round_trips, sum(calls) FILTER (WHERE query = 'COMMIT') AS commits, round(sum(total_exec_time)::numeric) AS exec_ms FROM pg_stat_statements" \
    -c "SELECT calls, round(total_exec_time::numeric) AS ms, round((total_exec_time / calls)::numeric * 1000, 1) AS us_per_call, rows, left(regexp_replace(query, '\s+', ' ', 'g'), 60) AS statement FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 10" \
    -c "SELECT wal_records, wal_fpi, pg_size_pretty(wal_bytes) AS wal, wal_write, wal_sync, round(wal_write_time) AS write_ms, round(wal_sync_time) AS sync_ms FROM pg_stat_wal"
