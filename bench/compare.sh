#!/usr/bin/env bash
# bench/compare.sh: errand beside beanstalkd and Redis on this machine, in one run. Installs
# beanstalkd and redis-server from Debian if missing, runs beanstalkd on a free 127.0.0.1 port in
# memory, binlog (-f 50) and fsync-every-write (-f 0) modes and Redis (as a reliable queue:
# LPUSH / BRPOPLPUSH / LREM) with no persistence, appendfsync everysec and appendfsync always,
# drives them and errand with the same load shape (1 producer, 2 consumers, tiny jobs,
# synchronous one-at-a-time clients) through errand-bench, and prints errand's figures beside
# theirs as ratios. Each figure is the median of --repeat rounds; each round runs every
# configuration once, so noise from a shared machine hits all sides. The fsync-bound shapes
# (errand FULL one at a time, beanstalkd -f 0, Redis always) run back to back within a round,
# between two probes of the disk, and are also compared round by round: this machine's disk
# changes speed by ~20x from one minute to the next, and a median of each side mixes phases.
#
#   bench/compare.sh              # ~6-8 minutes on 2 cores (more while the disk is slow)
#   bench/compare.sh --quick      # ~1-2 minutes, one run each, fewer jobs
#   bench/compare.sh --shapes     # instead: the client shapes of docs/PERFORMANCE.md "Every kind
#                                 # of client" (1, 8 and 32 synchronous producers, 4 consumers
#                                 # with concurrency 1, no prefetch and then the library's
#                                 # adaptive prefetch; submit only), ~8-12 min
set -euo pipefail

usage() {
    cat <<'USAGE'
usage: bench/compare.sh [--quick] [--shapes] [--repeat R] [--jobs N] [--sync-jobs N]
                        [--durable-jobs N] [--latency-n N] [--build-dir DIR] [--json-out FILE]
  --shapes          the many-producer shapes instead (FULL uses --durable-jobs, NORMAL --sync-jobs)
  --jobs N          jobs for the fast shapes: beanstalkd memory/binlog, Redis no persistence /
                    everysec, errand batch (100000)
  --sync-jobs N     jobs for errand sync under synchronous=normal (100000)
  --durable-jobs N  jobs for the fsync-bound shapes: beanstalkd -f 0, Redis appendfsync always,
                    errand sync FULL (10000)
  --latency-n N     round trips per latency run (2000)
  --repeat R        runs per figure; the median is shown (3)
  --build-dir DIR   meson build dir holding errand-bench (default: build-bench; built if needed)
  --json-out FILE   also write every errand-bench JSON object there, one per line
USAGE
}

REPO=$(cd "$(dirname "$0")/.." && pwd)
BUILD="$REPO/build-bench"
REPEAT=3 N=100000 N_SYNC=100000 N_DURABLE=10000 N_LAT=2000 N_PACED=6000 JSON_OUT="" SHAPES=0
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) REPEAT=1 N=50000 N_SYNC=20000 N_DURABLE=3000 N_LAT=1000 ;;
        --shapes) SHAPES=1 ;;
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

# --- redis-server from Debian --------------------------------------------------------------------
if ! command -v redis-server >/dev/null; then
    say "installing redis-server (apt-get install -y redis-server)"
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO=sudo; else
        say "redis-server is missing and I cannot install it (not root, no sudo)"; exit 1
    fi
    $SUDO apt-get install -y redis-server >/dev/null || {
        $SUDO apt-get update >/dev/null && $SUDO apt-get install -y redis-server >/dev/null; }
fi
REDIS_VERSION="Redis $(redis-server --version | sed -E 's/.* v=([^ ]+).*/\1/')"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/errand-compare-XXXXXX")
BS_PIDS=()
RS_PIDS=()
cleanup() {
    local pid
    for pid in "${BS_PIDS[@]}" "${RS_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

free_port() {
    local port i
    for i in $(seq 50); do
        port=$((20000 + RANDOM % 40000))
        port_in_use "$port" || break
    done
    echo "$port"
}

# start_beanstalkd memory|binlog|fsync: starts one on a free port; sets BS_ADDR[mode].
declare -A BS_ADDR
start_beanstalkd() {
    local args=() port i dir="$WORK/binlog-$1"
    case "$1" in
        memory) ;;
        binlog) mkdir -p "$dir"; args=(-b "$dir" -f 50) ;;
        fsync) mkdir -p "$dir"; args=(-b "$dir" -f 0) ;;
    esac
    port=$(free_port)
    beanstalkd -l 127.0.0.1 -p "$port" "${args[@]}" 2>>"$WORK/beanstalkd-$1.log" &
    BS_PIDS+=($!)
    for i in $(seq 100); do
        port_in_use "$port" && break
        kill -0 "$!" 2>/dev/null || { say "beanstalkd did not start:"; cat "$WORK/beanstalkd-$1.log" >&2; exit 1; }
        sleep 0.05
    done
    BS_ADDR[$1]="127.0.0.1:$port"
}

# start_redis none|everysec|always: starts a private redis-server on a free port, its files in
# a dir of its own under $WORK, no RDB snapshots; sets RS_ADDR[mode].
declare -A RS_ADDR
start_redis() {
    local args=() port i dir="$WORK/redis-$1"
    case "$1" in
        none) args=(--appendonly no) ;;
        everysec) args=(--appendonly yes --appendfsync everysec) ;;
        always) args=(--appendonly yes --appendfsync always) ;;
    esac
    mkdir -p "$dir"
    port=$(free_port)
    redis-server --port "$port" --bind 127.0.0.1 --save '' "${args[@]}" --dir "$dir" \
        --daemonize no >>"$WORK/redis-$1.log" 2>&1 &
    RS_PIDS+=($!)
    for i in $(seq 100); do
        port_in_use "$port" && break
        kill -0 "$!" 2>/dev/null || { say "redis-server did not start:"; cat "$WORK/redis-$1.log" >&2; exit 1; }
        sleep 0.05
    done
    RS_ADDR[$1]="127.0.0.1:$port"
}

# bench LABEL ARGS...: one errand-bench --json run, kept as LABEL of this round.
declare -A JSON
bench() {
    local label=$1; shift
    say "round $ROUND/$REPEAT $label: errand-bench $*"
    JSON[$label.$ROUND]=$("$BENCH" "$@" --json)
    if [ -n "$JSON_OUT" ]; then printf '%s\n' "${JSON[$label.$ROUND]}" >>"$JSON_OUT"; fi
}
# at LABEL ROUND KEY: a top-level number of LABEL's result in one round.
at() { sed -E "s/.*\"$3\":(-?[0-9.eE+]+).*/\\1/" <<<"${JSON[$1.$2]}"; }
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
# get LABEL KEY: the median over the rounds of a top-level number of LABEL's results.
get() {
    local r
    for r in $(seq "$REPEAT"); do at "$1" "$r" "$2"; done | median
}

START=$SECONDS
[ -n "$JSON_OUT" ] && : >"$JSON_OUT"
for mode in memory binlog fsync; do start_beanstalkd "$mode"; done
for mode in none everysec always; do start_redis "$mode"; done

# --- --shapes: many one-at-a-time producers -----------------------------------------------------
# Each shape runs errand, beanstalkd and Redis back to back within a round (the same minute of
# disk), FULL against beanstalkd -f 0 / Redis appendfsync always, NORMAL against beanstalkd's
# default binlog (-f 50) / Redis everysec. Consumers: errand library workers with concurrency 1
# and no prefetch (one job at a time, the result's credit riding on it), beanstalkd/Redis
# connections doing one reserve/delete (BRPOPLPUSH/LREM) at a time.
if [ "$SHAPES" = 1 ]; then
    CONSUMERS=(--workers 4 --concurrency 1 --prefetch 0)
    shape() {  # LABEL DURABILITY MODE PRODUCERS
        local n=$N_SYNC bs=binlog rs=everysec slow=(--max-seconds 300)
        if [ "$2" = full ]; then n=$N_DURABLE bs=fsync rs=always; fi
        if [ "$3" = e2e ]; then
            bench "e_$1" e2e --mode sync -n "$n" --producers "$4" "${CONSUMERS[@]}" --synchronous "$2" "${slow[@]}"
            # the same with the library worker's default: adaptive prefetch (up to 8 held)
            bench "a_$1" e2e --mode sync -n "$n" --producers "$4" --workers 4 --concurrency 1 --prefetch auto --synchronous "$2" "${slow[@]}"
        else
            bench "e_$1" submit --mode sync -n "$n" --producers "$4" --synchronous "$2" "${slow[@]}"
        fi
        bench "b_$1" beanstalkd --mode "$3" --addr "${BS_ADDR[$bs]}" -n "$n" --producers "$4" --workers 4 "${slow[@]}"
        bench "r_$1" redis --mode "$3" --addr "${RS_ADDR[$rs]}" -n "$n" --producers "$4" --workers 4 "${slow[@]}"
    }
    SHAPE_LIST=(full:e2e:1 full:e2e:8 full:e2e:32 full:submit:32 normal:e2e:1 normal:e2e:8 normal:e2e:32 normal:submit:32)
    for ROUND in $(seq "$REPEAT"); do
        bench fsync fsync -n 1000
        for s in "${SHAPE_LIST[@]}"; do
            IFS=: read -r d m p <<<"$s"
            shape "$d-$m-$p" "$d" "$m" "$p"
        done
        # latency at a paced 2,000 jobs/s from 8 producers, 100-byte payloads (e2e, 4 consumers)
        for d in full normal; do
            bs=binlog rs=everysec
            if [ "$d" = full ]; then bs=fsync rs=always; fi
            bench "e_paced-$d" e2e --mode sync -n "$N_PACED" --producers 8 --workers 4 --concurrency 1 --prefetch auto --synchronous "$d" --paced 2000 --payload-size 100 --max-seconds 60
            bench "b_paced-$d" beanstalkd --mode e2e --addr "${BS_ADDR[$bs]}" -n "$N_PACED" --producers 8 --workers 4 --paced 2000 --payload-size 100 --max-seconds 60
            bench "r_paced-$d" redis --mode e2e --addr "${RS_ADDR[$rs]}" -n "$N_PACED" --producers 8 --workers 4 --paced 2000 --payload-size 100 --max-seconds 60
        done
        bench fsync_after fsync -n 300
    done
    ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }'; }
    num() { awk -v a="$1" 'BEGIN { printf "%.0f", a }'; }
    # per-round ratio medians: errand / other, each round's pair from the same minute
    round_ratio() {  # LABEL OTHER [ERRAND]
        local r e=${3:-e}
        for r in $(seq "$REPEAT"); do
            awk -v a="$(at "${e}_$1" "$r" jobs_per_s)" -v b="$(at "$2_$1" "$r" jobs_per_s)" 'BEGIN { print a / b }'
        done | median | xargs printf '%.2fx'
    }
    echo
    echo "errand vs $BEANSTALKD_VERSION and $REDIS_VERSION on $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "median of $REPEAT interleaved round(s); consumers: 4, one job at a time; $(( SECONDS - START )) s in all"
    echo "FULL: vs beanstalkd -f 0 and Redis appendfsync always ($N_DURABLE jobs); NORMAL: vs beanstalkd -f 50 and Redis everysec ($N_SYNC jobs)"
    echo
    printf '%-26s %9s %9s %7s %9s %7s %11s %11s\n' "shape (jobs/s)" "errand" "bs" "e/bs" "redis" "e/redis" "broker us/j" "bytes/job"
    for s in "${SHAPE_LIST[@]}"; do
        IFS=: read -r d m p <<<"$s"
        l="$d-$m-$p"
        cpu=- bytes=-
        if [ "$m" = e2e ]; then
            cpu=$(num "$(get "e_$l" broker_cpu_us_per_job)"); bytes=$(num "$(get "e_$l" broker_written_bytes_per_job)")
        fi
        printf '%-26s %9s %9s %7s %9s %7s %11s %11s\n' "${d^^} $m, $p producer(s)" \
            "$(num "$(get "e_$l" jobs_per_s)")" "$(num "$(get "b_$l" jobs_per_s)")" "$(round_ratio "$l" b)" \
            "$(num "$(get "r_$l" jobs_per_s)")" "$(round_ratio "$l" r)" "$cpu" "$bytes"
    done
    echo
    echo "the same end-to-end shapes with the library worker's default consumers (--prefetch auto:"
    echo "adaptive prefetch, up to 8 jobs held while jobs run short); peers as above:"
    printf '%-26s %9s %7s %7s %11s %11s\n' "shape (jobs/s)" "errand" "e/bs" "e/redis" "broker us/j" "bytes/job"
    for s in "${SHAPE_LIST[@]}"; do
        IFS=: read -r d m p <<<"$s"
        [ "$m" = e2e ] || continue
        l="$d-$m-$p"
        printf '%-26s %9s %7s %7s %11s %11s\n' "${d^^} $m, $p producer(s)" \
            "$(num "$(get "a_$l" jobs_per_s)")" "$(round_ratio "$l" b a)" "$(round_ratio "$l" r a)" \
            "$(num "$(get "a_$l" broker_cpu_us_per_job)")" "$(num "$(get "a_$l" broker_written_bytes_per_job)")"
    done
    echo
    echo "paced: 8 producers at 2,000 jobs/s in all, 100-byte payloads, 4 consumers (errand: --prefetch auto),"
    echo "submit -> acknowledgement from each job's due moment ($N_PACED jobs; medians of the rounds):"
    printf '%-12s %18s %18s %18s %11s %11s\n' "" "errand p50/p99 us" "beanstalkd" "redis" "broker us/j" "bytes/job"
    for d in full normal; do
        printf '%-12s %18s %18s %18s %11s %11s\n' "${d^^}" \
            "$(num "$(get "e_paced-$d" p50_us)") / $(num "$(get "e_paced-$d" p99_us)")" \
            "$(num "$(get "b_paced-$d" p50_us)") / $(num "$(get "b_paced-$d" p99_us)")" \
            "$(num "$(get "r_paced-$d" p50_us)") / $(num "$(get "r_paced-$d" p99_us)")" \
            "$(num "$(get "e_paced-$d" broker_cpu_us_per_job)")" "$(num "$(get "e_paced-$d" broker_written_bytes_per_job)")"
    done
    echo
    echo "ratios: median of the per-round ratios (each round's errand and peer runs back to back)"
    printf 'disk: SQLite WAL FULL one-row commits %s/s before, %s/s after the rounds (medians)\n' \
        "$(num "$(get fsync sqlite_commits_per_s)")" "$(num "$(get fsync_after sqlite_commits_per_s)")"
    exit 0
fi

# The fsync-bound runs, one per call: 0-2 end to end, 3-5 round trips. On the slow disk
# (~200 fsyncs/s) Redis always does ~100 jobs/s, so their bound is longer than the default 120 s.
fsync_bound() {
    local slow=(--max-seconds 300)
    case "$1" in
        0) bench e_sync_full e2e --mode sync -n "$N_DURABLE" --producers 1 --workers 2 --synchronous full "${slow[@]}" ;;
        1) bench bs_fsync beanstalkd --addr "${BS_ADDR[fsync]}" -n "$N_DURABLE" --producers 1 --workers 2 "${slow[@]}" ;;
        2) bench rs_always redis --addr "${RS_ADDR[always]}" -n "$N_DURABLE" --producers 1 --workers 2 "${slow[@]}" ;;
        3) bench e_lat_full latency -n "$N_LAT" --synchronous full "${slow[@]}" ;;
        4) bench bs_fsync_lat beanstalkd --addr "${BS_ADDR[fsync]}" --mode latency -n "$N_LAT" "${slow[@]}" ;;
        5) bench rs_always_lat redis --addr "${RS_ADDR[always]}" --mode latency -n "$N_LAT" "${slow[@]}" ;;
    esac
}

# Rounds interleave every configuration, so a burst of load from others on this machine (its
# disk is shared) hits errand, beanstalkd and Redis alike instead of one of them. The fsync-bound
# runs go back to back between two disk probes, in an order that rotates from round to round.
for ROUND in $(seq "$REPEAT"); do
    bench fsync fsync -n 1000
    for k in 0 1 2; do fsync_bound $(( (k + ROUND - 1) % 3 )); done
    for k in 0 1 2; do fsync_bound $(( 3 + (k + ROUND - 1) % 3 )); done
    bench fsync_after fsync -n 300
    bench bs_memory beanstalkd --addr "${BS_ADDR[memory]}" -n "$N" --producers 1 --workers 2
    bench bs_binlog beanstalkd --addr "${BS_ADDR[binlog]}" -n "$N" --producers 1 --workers 2
    bench rs_none redis --addr "${RS_ADDR[none]}" -n "$N" --producers 1 --workers 2
    bench rs_everysec redis --addr "${RS_ADDR[everysec]}" -n "$N" --producers 1 --workers 2
    bench bs_memory_lat beanstalkd --addr "${BS_ADDR[memory]}" --mode latency -n "$N_LAT"
    bench bs_binlog_lat beanstalkd --addr "${BS_ADDR[binlog]}" --mode latency -n "$N_LAT"
    bench rs_everysec_lat redis --addr "${RS_ADDR[everysec]}" --mode latency -n "$N_LAT"
    bench e_sync_normal e2e --mode sync -n "$N_SYNC" --producers 1 --workers 2 --synchronous normal
    bench e_batch_full e2e --mode batch -n "$N" --producers 1 --workers 2 --synchronous full
    bench e_lat_normal latency -n "$N_LAT" --synchronous normal
done

# --- the table ---------------------------------------------------------------------------------
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }'; }
num() { awk -v a="$1" 'BEGIN { printf "%.0f", a }'; }
W=52  # width of the first column
row() {  # what errand_label other_label key unit target
    local e b
    e=$(get "$2" "$4"); b=$(get "$3" "$4")
    printf "%-${W}s %12s %12s %12s   %s\n" "$1" "$(num "$e") $5" "$(num "$b") $5" "$(ratio "$e" "$b")" "$6"
}
inv_row() {  # like row, for latencies: the ratio is other / errand (above 1: errand faster)
    local e b
    e=$(get "$2" "$4"); b=$(get "$3" "$4")
    printf "%-${W}s %12s %12s %12s   %s\n" "$1" "$(num "$e") us" "$(num "$b") us" "$(ratio "$b" "$e")" "$5"
}
head_row() { printf "%-${W}s %12s %12s %12s   %s\n" "$@"; }

echo
echo "errand vs $BEANSTALKD_VERSION and $REDIS_VERSION on $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'))"
echo "median of $REPEAT interleaved round(s); 1 producer, 2 consumers/library workers; $(( SECONDS - START )) s in all"
echo
head_row "end to end (jobs/s)" "errand" "beanstalkd" "ratio" "target"
row "sync FULL   vs beanstalkd -f 0 ($N_DURABLE jobs)" e_sync_full bs_fsync jobs_per_s "" ">= 1.5x"
row "sync NORMAL vs beanstalkd -f 50 ($N_SYNC/$N)" e_sync_normal bs_binlog jobs_per_s "" ">= 1.0x"
row "batch FULL  vs beanstalkd -f 50 ($N jobs)" e_batch_full bs_binlog jobs_per_s "" ">= 3.5x"
row "batch FULL  vs beanstalkd in memory" e_batch_full bs_memory jobs_per_s "" ""
echo
head_row "round trip (errand: submit->run->result)" "errand" "beanstalkd" "bs/errand" "target"
inv_row "p50  FULL   vs beanstalkd -f 0" e_lat_full bs_fsync_lat p50_us "errand <= 1000 us"
inv_row "p99  FULL   vs beanstalkd -f 0" e_lat_full bs_fsync_lat p99_us ""
inv_row "p50  NORMAL vs beanstalkd -f 50" e_lat_normal bs_binlog_lat p50_us "errand <= 300 us"
inv_row "p99  NORMAL vs beanstalkd -f 50" e_lat_normal bs_binlog_lat p99_us ""
inv_row "p50  NORMAL vs beanstalkd in memory" e_lat_normal bs_memory_lat p50_us ""
echo
head_row "end to end (jobs/s), Redis LPUSH/BRPOPLPUSH/LREM" "errand" "redis" "ratio" "target"
row "sync FULL   vs redis appendfsync always ($N_DURABLE jobs)" e_sync_full rs_always jobs_per_s "" ">= 1.5x"
row "sync NORMAL vs redis everysec ($N_SYNC/$N)" e_sync_normal rs_everysec jobs_per_s "" ""
row "batch FULL  vs redis no persistence ($N jobs)" e_batch_full rs_none jobs_per_s "" ""
echo
head_row "round trip (redis: LPUSH->BRPOPLPUSH->LREM)" "errand" "redis" "redis/errand" "target"
inv_row "p50  FULL   vs redis appendfsync always" e_lat_full rs_always_lat p50_us "errand <= 1000 us"
inv_row "p99  FULL   vs redis appendfsync always" e_lat_full rs_always_lat p99_us ""
inv_row "p50  NORMAL vs redis everysec" e_lat_normal rs_everysec_lat p50_us "errand <= 300 us"
inv_row "p99  NORMAL vs redis everysec" e_lat_normal rs_everysec_lat p99_us ""
echo
printf 'disk: SQLite WAL FULL one-row commits %s/s, fdatasync %s/s (overwrite)\n' \
    "$(num "$(get fsync sqlite_commits_per_s)")" "$(num "$(get fsync fdatasync_overwrite_per_s)")"

# The fsync-bound shapes round by round: each ratio compares runs made within the same minute,
# between the two disk probes shown (SQLite FULL one-row commits/s before / after them).
echo
echo "fsync-bound shapes per round (disk: SQLite commits/s before / after the round's fsync-bound runs)"
printf '%5s %13s %9s %9s %7s %12s %7s\n' "e2e" "disk" "sync FULL" "bs -f 0" "ratio" "redis always" "ratio"
BS_RATIOS="" RS_RATIOS=""
for r in $(seq "$REPEAT"); do
    e=$(at e_sync_full "$r" jobs_per_s); b=$(at bs_fsync "$r" jobs_per_s); x=$(at rs_always "$r" jobs_per_s)
    printf '%5s %13s %9s %9s %7s %12s %7s\n' "$r" \
        "$(num "$(at fsync "$r" sqlite_commits_per_s)") / $(num "$(at fsync_after "$r" sqlite_commits_per_s)")" \
        "$(num "$e")" "$(num "$b")" "$(ratio "$e" "$b")" "$(num "$x")" "$(ratio "$e" "$x")"
    BS_RATIOS+="$(awk -v a="$e" -v b="$b" 'BEGIN { print a / b }')"$'\n'
    RS_RATIOS+="$(awk -v a="$e" -v b="$x" 'BEGIN { print a / b }')"$'\n'
done
printf '%5s %s\n' "" "median of the per-round ratios: $(printf '%s' "$BS_RATIOS" | median | xargs printf '%.2fx') vs beanstalkd -f 0, $(printf '%s' "$RS_RATIOS" | median | xargs printf '%.2fx') vs redis always"
printf '%5s %13s %9s %9s %7s %12s %7s\n' "p50" "disk" "FULL us" "bs -f 0" "bs/e" "redis always" "redis/e"
for r in $(seq "$REPEAT"); do
    e=$(at e_lat_full "$r" p50_us); b=$(at bs_fsync_lat "$r" p50_us); x=$(at rs_always_lat "$r" p50_us)
    printf '%5s %13s %9s %9s %7s %12s %7s\n' "$r" \
        "$(num "$(at fsync "$r" sqlite_commits_per_s)") / $(num "$(at fsync_after "$r" sqlite_commits_per_s)")" \
        "$(num "$e")" "$(num "$b")" "$(ratio "$b" "$e")" "$(num "$x")" "$(ratio "$x" "$e")"
done
