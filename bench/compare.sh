#!/usr/bin/env bash
# bench/compare.sh: errand beside beanstalkd on this machine, in one run. Installs beanstalkd from
# Debian if missing, runs it on a free 127.0.0.1 port in memory, binlog (-f 50) and
# fsync-every-write (-f 0) modes, drives it and errand with the same load shape (1 producer,
# 2 consumers, tiny jobs, synchronous one-at-a-time clients) through errand-bench, and prints
# errand's figures beside beanstalkd's as ratios. Each figure is the median of --repeat rounds;
# each round runs every configuration once, so noise from a shared machine hits both sides.
#
#   bench/compare.sh              # ~4-5 minutes on 2 cores
#   bench/compare.sh --quick      # ~1 minute, one run each, fewer jobs
set -euo pipefail

usage() {
    cat <<'USAGE'
usage: bench/compare.sh [--quick] [--repeat R] [--jobs N] [--sync-jobs N] [--durable-jobs N]
                        [--latency-n N] [--build-dir DIR] [--json-out FILE]
  --jobs N          jobs for the fast shapes: beanstalkd memory/binlog, errand batch (100000)
  --sync-jobs N     jobs for errand sync under synchronous=normal (100000)
  --durable-jobs N  jobs for the fsync-bound shapes: beanstalkd -f 0, errand sync FULL (10000)
  --latency-n N     round trips per latency run (2000)
  --repeat R        runs per figure; the median is shown (3)
  --build-dir DIR   meson build dir holding errand-bench (default: build-bench; built if needed)
  --json-out FILE   also write every errand-bench JSON object there, one per line
USAGE
}

REPO=$(cd "$(dirname "$0")/.." && pwd)
BUILD="$REPO/build-bench"
REPEAT=3 N=100000 N_SYNC=100000 N_DURABLE=10000 N_LAT=2000 JSON_OUT=""
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) REPEAT=1 N=50000 N_SYNC=20000 N_DURABLE=3000 N_LAT=1000 ;;
        --repeat) REPEAT=$2; shift ;;
        --jobs) N=$2; shift ;;
        --sync-jobs) N_SYNC=$2; shift ;;
        --durable-jobs) N_DURABLE=$2; shift ;;
        --latency-n) N_LAT=$2; shift ;;
        --build-dir) BUILD=$(realpath -m "$2"); shift ;;
        --json-out) JSON_OUT=$2; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "compare.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

say() { printf '%s\n' "compare.sh: $*" >&2; }

# --- build errand-bench and the binaries it starts -------------------------------------------
if [ ! -f "$BUILD/build.ninja" ]; then
    say "configuring $BUILD (release)"
    meson setup "$BUILD" "$REPO" --buildtype=release >/dev/null
fi
ninja -C "$BUILD" bench/errand-bench broker/errand-broker worker/errand-worker >/dev/null
BENCH="$BUILD/bench/errand-bench"

# --- beanstalkd from Debian --------------------------------------------------------------------
if ! command -v beanstalkd >/dev/null; then
    say "installing beanstalkd (apt-get install -y beanstalkd)"
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO=sudo; else
        say "beanstalkd is missing and I cannot install it (not root, no sudo)"; exit 1
    fi
    $SUDO apt-get install -y beanstalkd >/dev/null || {
        $SUDO apt-get update >/dev/null && $SUDO apt-get install -y beanstalkd >/dev/null; }
fi
BEANSTALKD_VERSION=$(beanstalkd -v 2>&1 | head -1)

WORK=$(mktemp -d "${TMPDIR:-/tmp}/errand-compare-XXXXXX")
BS_PIDS=()
cleanup() {
    local pid
    for pid in "${BS_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# start_beanstalkd memory|binlog|fsync: starts one on a free port; sets BS_ADDR[mode].
declare -A BS_ADDR
start_beanstalkd() {
    local args=() port i dir="$WORK/binlog-$1"
    case "$1" in
        memory) ;;
        binlog) mkdir -p "$dir"; args=(-b "$dir" -f 50) ;;
        fsync) mkdir -p "$dir"; args=(-b "$dir" -f 0) ;;
    esac
    for i in $(seq 50); do
        port=$((20000 + RANDOM % 40000))
        port_in_use "$port" || break
    done
    beanstalkd -l 127.0.0.1 -p "$port" "${args[@]}" 2>>"$WORK/beanstalkd-$1.log" &
    BS_PIDS+=($!)
    for i in $(seq 100); do
        port_in_use "$port" && break
        kill -0 "$!" 2>/dev/null || { say "beanstalkd did not start:"; cat "$WORK/beanstalkd-$1.log" >&2; exit 1; }
        sleep 0.05
    done
    BS_ADDR[$1]="127.0.0.1:$port"
}

# bench LABEL ARGS...: one errand-bench --json run, kept as LABEL of this round.
declare -A JSON
bench() {
    local label=$1; shift
    say "round $ROUND/$REPEAT $label: errand-bench $*"
    JSON[$label.$ROUND]=$("$BENCH" "$@" --json)
    if [ -n "$JSON_OUT" ]; then printf '%s\n' "${JSON[$label.$ROUND]}" >>"$JSON_OUT"; fi
}
# get LABEL KEY: the median over the rounds of a top-level number of LABEL's results.
get() {
    local r
    for r in $(seq "$REPEAT"); do
        sed -E "s/.*\"$2\":(-?[0-9.eE+]+).*/\\1/" <<<"${JSON[$1.$r]}"
    done | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

START=$SECONDS
[ -n "$JSON_OUT" ] && : >"$JSON_OUT"
for mode in memory binlog fsync; do start_beanstalkd "$mode"; done

# Rounds interleave every configuration, so a burst of load from others on this machine (its
# disk is shared) hits errand and beanstalkd alike instead of one of them.
for ROUND in $(seq "$REPEAT"); do
    bench bs_memory beanstalkd --addr "${BS_ADDR[memory]}" -n "$N" --producers 1 --workers 2
    bench bs_binlog beanstalkd --addr "${BS_ADDR[binlog]}" -n "$N" --producers 1 --workers 2
    bench bs_fsync beanstalkd --addr "${BS_ADDR[fsync]}" -n "$N_DURABLE" --producers 1 --workers 2
    bench bs_memory_lat beanstalkd --addr "${BS_ADDR[memory]}" --mode latency -n "$N_LAT"
    bench bs_binlog_lat beanstalkd --addr "${BS_ADDR[binlog]}" --mode latency -n "$N_LAT"
    bench bs_fsync_lat beanstalkd --addr "${BS_ADDR[fsync]}" --mode latency -n "$N_LAT"
    bench fsync fsync -n 1000
    bench e_sync_full e2e --mode sync -n "$N_DURABLE" --producers 1 --workers 2 --synchronous full
    bench e_sync_normal e2e --mode sync -n "$N_SYNC" --producers 1 --workers 2 --synchronous normal
    bench e_batch_full e2e --mode batch -n "$N" --producers 1 --workers 2 --synchronous full
    bench e_lat_full latency -n "$N_LAT" --synchronous full
    bench e_lat_normal latency -n "$N_LAT" --synchronous normal
done

# --- the table ---------------------------------------------------------------------------------
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }'; }
num() { awk -v a="$1" 'BEGIN { printf "%.0f", a }'; }
row() {  # what errand_label beanstalkd_label key unit target
    local e b
    e=$(get "$2" "$4"); b=$(get "$3" "$4")
    printf '%-44s %12s %12s %9s   %s\n' "$1" "$(num "$e") $5" "$(num "$b") $5" "$(ratio "$e" "$b")" "$6"
}
inv_row() {  # like row, for latencies: the ratio is beanstalkd / errand (above 1: errand faster)
    local e b
    e=$(get "$2" "$4"); b=$(get "$3" "$4")
    printf '%-44s %12s %12s %9s   %s\n' "$1" "$(num "$e") us" "$(num "$b") us" "$(ratio "$b" "$e")" "$5"
}

echo
echo "errand vs $BEANSTALKD_VERSION on $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'))"
echo "median of $REPEAT interleaved round(s); 1 producer, 2 consumers/library workers; $(( SECONDS - START )) s in all"
echo
printf '%-44s %12s %12s %9s   %s\n' "end to end (jobs/s)" "errand" "beanstalkd" "ratio" "target"
row "sync FULL   vs beanstalkd -f 0 ($N_DURABLE jobs)" e_sync_full bs_fsync jobs_per_s "" ">= 1.5x"
row "sync NORMAL vs beanstalkd -f 50 ($N_SYNC/$N)" e_sync_normal bs_binlog jobs_per_s "" ">= 1.0x"
row "batch FULL  vs beanstalkd -f 50 ($N jobs)" e_batch_full bs_binlog jobs_per_s "" ">= 3.5x"
row "batch FULL  vs beanstalkd in memory" e_batch_full bs_memory jobs_per_s "" ""
echo
printf '%-44s %12s %12s %9s   %s\n' "round trip (errand: submit->run->result)" "errand" "beanstalkd" "bs/errand" "target"
inv_row "p50  FULL   vs beanstalkd -f 0" e_lat_full bs_fsync_lat p50_us "errand <= 1000 us"
inv_row "p99  FULL   vs beanstalkd -f 0" e_lat_full bs_fsync_lat p99_us ""
inv_row "p50  NORMAL vs beanstalkd -f 50" e_lat_normal bs_binlog_lat p50_us "errand <= 300 us"
inv_row "p99  NORMAL vs beanstalkd -f 50" e_lat_normal bs_binlog_lat p99_us ""
inv_row "p50  NORMAL vs beanstalkd in memory" e_lat_normal bs_memory_lat p50_us ""
echo
printf 'disk: SQLite WAL FULL one-row commits %s/s, fdatasync %s/s (overwrite)\n' \
    "$(num "$(get fsync sqlite_commits_per_s)")" "$(num "$(get fsync fdatasync_overwrite_per_s)")"
