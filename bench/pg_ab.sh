#!/usr/bin/env bash
# Two errand-broker builds against each other on PostgreSQL, in interleaved rounds (A, B, A, B …):
# each run is `errand-bench e2e --pg` (a throwaway server, fsync on, synchronous_commit on) with
# --broker-bin set to A's or B's broker, the same errand-bench and flags for both, and the load
# average before each round. Prints a line per run, then the medians and B/A round by round.
#
#   bench/pg_ab.sh BENCH BROKER_A BROKER_B [ROUNDS] [-- errand-bench e2e flags]
#
# e.g. bench/pg_ab.sh build/bench/errand-bench old/broker/errand-broker build/broker/errand-broker 5 \
#        -- --mode batch -n 30000 --brokers 1 --workers 4
# Exits 1 if any run fails.
set -euo pipefail
bench=${1:?errand-bench}
a=${2:?broker A}
b=${3:?broker B}
rounds=${4:-5}
shift $(($# < 4 ? $# : 4))
[ "${1:-}" = "--" ] && shift
extra=("$@")
out=$(mktemp)
trap 'rm -f "$out"' EXIT
echo "e2e --pg ${extra[*]}; A=$a B=$b; $(nproc) cores; $(date -u +%FT%TZ)"
for i in $(seq "$rounds"); do
    echo "round $i: load $(cut -d' ' -f1-3 /proc/loadavg)"
    for side in A B; do
        bin=$a
        [ "$side" = B ] && bin=$b
        raw=$("$bench" e2e --pg --json --broker-bin "$bin" "${extra[@]}") || {
            echo "round $i $side: errand-bench failed" >&2
            exit 1
        }
        j=$(grep '^{' <<<"$raw" | tail -1)
        echo "$i $side $j" >>"$out"
        python3 - "$side" "$j" <<'PY'
import json, sys
j = json.loads(sys.argv[2])
print(f"  {sys.argv[1]} {j['jobs_per_s']:9.0f} jobs/s  broker CPU {j['broker_cpu_us_per_job']:5.1f} us/job"
      f"  postgres {j.get('postgres_cpu_us_per_job', 0):5.1f} us/job")
PY
    done
done
echo "load at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$out" <<'PY'
import json, statistics, sys
runs = {"A": {}, "B": {}}
for line in open(sys.argv[1]):
    i, side, j = line.split(" ", 2)
    runs[side][int(i)] = json.loads(j)
med = statistics.median
for side in ("A", "B"):
    r = [runs[side][i]["jobs_per_s"] for i in sorted(runs[side])]
    pg = med(j.get("postgres_cpu_us_per_job", 0) for j in runs[side].values())
    print(f"{side}: median {med(r):.0f} jobs/s ({' / '.join(f'{x:.0f}' for x in r)}), postgres {pg:.1f} us/job")
ratios = [runs["B"][i]["jobs_per_s"] / runs["A"][i]["jobs_per_s"] for i in sorted(runs["A"])]
print(f"B/A per round {[round(x, 3) for x in ratios]}  median {med(ratios):.3f}")
PY
