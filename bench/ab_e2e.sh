#!/usr/bin/env bash
# A/B of two builds on the batch end-to-end shape: rounds interleaved (A B A B ...), each with a
# fresh broker and database, and the broker's own CPU time (utime + stime from /proc) per job.
#
#   bench/ab_e2e.sh BUILD_A BUILD_B [ROUNDS] [JOBS]
#
# BUILD_x is a meson build dir with bench/errand-bench, broker/errand-broker and
# worker/errand-worker (release: `meson setup DIR --buildtype=release`). Prints one line per run,
# then the medians and the B/A ratios per round. Load average and the disk's one-row commit rate
# (errand-bench fsync) are printed first: the machines are shared and noisy.
set -euo pipefail
a=${1:?build dir A}
b=${2:?build dir B}
rounds=${3:-3}
jobs=${4:-100000}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
hz=$(getconf CLK_TCK)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

run() {  # run BUILD TAG -> "jobs_per_s broker_cpu_s_per_100k"
    local build=$1 tag=$2 port db pid before after rate
    port=$(free_port)
    db="$tmp/$tag.db"
    rm -f "$db"*
    "$build/broker/errand-broker" --listen "tcp://127.0.0.1:$port" --db "$db" \
        --log-level warn >"$tmp/$tag.log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do
        if "$build/bench/errand-bench" ping -n 1 --broker "tcp://127.0.0.1:$port" >/dev/null 2>&1; then break; fi
        sleep 0.05
    done
    before=$(cpu_ticks "$pid")
    rate=$("$build/bench/errand-bench" e2e --mode batch -n "$jobs" \
        --broker "tcp://127.0.0.1:$port" | awk '$1 == "jobs_per_s" {gsub(",", "", $2); print $2; exit}')
    after=$(cpu_ticks "$pid")
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    echo "$rate $(python3 -c "print(round(($after - $before) / $hz * 100000 / $jobs, 3))")"
}

echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
"$a/bench/errand-bench" fsync 2>/dev/null | head -5 || true
ra=() rb=() ca=() cb=()
for i in $(seq "$rounds"); do
    read -r r c < <(run "$a" "a$i"); ra+=("$r"); ca+=("$c"); echo "round $i A: $r jobs/s, broker CPU $c s/100k"
    read -r r c < <(run "$b" "b$i"); rb+=("$r"); cb+=("$c"); echo "round $i B: $r jobs/s, broker CPU $c s/100k"
done
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "${ra[*]}" "${rb[*]}" "${ca[*]}" "${cb[*]}" <<'EOF'
import statistics, sys
ra, rb, ca, cb = ([float(x) for x in arg.split()] for arg in sys.argv[1:5])
med = statistics.median
print(f"median jobs/s: A {med(ra):.0f}  B {med(rb):.0f}  B/A per round {[round(b / a, 3) for a, b in zip(ra, rb)]}  median {med([b / a for a, b in zip(ra, rb)]):.3f}")
print(f"median broker CPU s/100k: A {med(ca):.3f}  B {med(cb):.3f}  B/A per round {[round(b / a, 3) for a, b in zip(ca, cb)]}  median {med([b / a for a, b in zip(ca, cb)]):.3f}")
EOF
