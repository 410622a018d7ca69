#!/usr/bin/env bash
# errand on PostgreSQL with 1, 2 and 3 brokers beside the SQLite default, in interleaved rounds:
# each round runs `errand-bench e2e --mode batch` once per configuration (SQLite, then PostgreSQL
# with 1, 2, 3 brokers on a throwaway server started for the run, fsync on, synchronous_commit on),
# with the load average and the disk's phase (errand-bench fsync) before each round. Prints one
# line per run, then the medians and the PostgreSQL N-broker / 1-broker ratios round by round.
#
#   bench/pg_scale.sh BUILD_DIR [ROUNDS] [JOBS] [-- more errand-bench e2e flags]
#
# BUILD_DIR holds bench/errand-bench, broker/errand-broker and worker/errand-worker
# (`meson setup DIR --buildtype=release -Dtests=false`). Exits 1 if any run fails.
set -euo pipefail
build=${1:?build dir}
rounds=${2:-3}
jobs=${3:-100000}
shift $(($# < 3 ? $# : 3))
[ "${1:-}" = "--" ] && shift
extra=("$@")
bench="$build/bench/errand-bench"
out=$(mktemp)
trap 'rm -f "$out"' EXIT
configs=("sqlite" "pg1" "pg2" "pg3")

flags_for() {
    case "$1" in
        sqlite) ;;
        pg*) echo "--pg --brokers ${1#pg}" ;;
    esac
}

echo "e2e --mode batch -n $jobs ${extra[*]}; $(nproc) cores; $(date -u +%FT%TZ)"
for i in $(seq "$rounds"); do
    load=$(cut -d' ' -f1-3 /proc/loadavg)
    disk=$("$bench" fsync -n 1000 --json | python3 -c 'import json,sys; j=json.load(sys.stdin); print(round(j["sqlite_commits_per_s"]), round(j["fdatasync_overwrite_per_s"]))')
    echo "round $i: load $load; disk: $disk (SQLite one-row FULL commits/s, fdatasync/s)"
    for c in "${configs[@]}"; do
        # shellcheck disable=SC2046
        raw=$("$bench" e2e --mode batch -n "$jobs" --json $(flags_for "$c") "${extra[@]}") || {
            echo "round $i $c: errand-bench failed" >&2
            exit 1
        }
        # The library's warnings (spdlog) share stdout with the JSON object: pass them on.
        grep -v '^{' <<<"$raw" | sed "s/^/  round $i $c: /" >&2 || true
        j=$(grep '^{' <<<"$raw" | tail -1)
        echo "$i $c $j" >>"$out"
        python3 - "$c" "$j" <<'PY'
import json, sys
j = json.loads(sys.argv[2])
print(f"  {sys.argv[1]:6s} {j['jobs_per_s']:9.0f} jobs/s  broker CPU {j['broker_cpu_us_per_job']:5.1f} us/job"
      f"  postgres {j.get('postgres_cpu_us_per_job', 0):5.1f}  bench {j['bench_cpu_us_per_job']:5.1f}"
      f"  jobs run per broker {j['config'].get('jobs_run_per_broker', '-')}")
PY
    done
done
echo "load at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$out" <<'PY'
import json, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    i, c, j = line.split(" ", 2)
    runs.setdefault(c, {})[int(i)] = json.loads(j)
med = statistics.median
print(f"{'config':8s} {'median jobs/s':>14s} {'runs':>28s} {'broker us/job':>14s} {'postgres us/job':>16s} {'bench us/job':>13s}")
for c, by_round in runs.items():
    r = [by_round[i]["jobs_per_s"] for i in sorted(by_round)]
    print(f"{c:8s} {med(r):14.0f} {' / '.join(f'{x:.0f}' for x in r):>28s} "
          f"{med(j['broker_cpu_us_per_job'] for j in by_round.values()):14.1f} "
          f"{med(j.get('postgres_cpu_us_per_job', 0) for j in by_round.values()):16.1f} "
          f"{med(j['bench_cpu_us_per_job'] for j in by_round.values()):13.1f}")
for c in ("pg2", "pg3"):
    if c in runs and "pg1" in runs:
        ratios = [runs[c][i]["jobs_per_s"] / runs["pg1"][i]["jobs_per_s"] for i in sorted(runs[c])]
        print(f"{c}/pg1 per round {[round(x, 3) for x in ratios]}  median {med(ratios):.3f}")
if "pg1" in runs and "sqlite" in runs:
    ratios = [runs["pg1"][i]["jobs_per_s"] / runs["sqlite"][i]["jobs_per_s"] for i in sorted(runs["pg1"])]
    print(f"pg1/sqlite per round {[round(x, 3) for x in ratios]}  median {med(ratios):.3f}")
PY
