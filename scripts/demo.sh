#!/usr/bin/env bash
# The quick start: installs what is missing, builds, starts a broker on the default endpoint with
# the default SQLite file (./errand.db) and a local worker, then runs a demo job and waits for it.
# Both daemons keep running (logs in ./demo/); `scripts/demo.sh stop` stops them.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p demo
stop() {
  for f in demo/worker.pid demo/broker.pid; do
    [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true
    rm -f "$f"
  done
}
if [ "${1:-}" = stop ]; then stop; echo "errand demo stopped"; exit 0; fi

bash scripts/deps.sh demo  # only what the programs need: not the tests' Chromium, Prometheus, node
bash scripts/build.sh demo >/dev/null
stop
export PATH="$PWD/build/broker:$PWD/build/worker:$PWD/build/client:$PATH"

errand-broker --db ./errand.db --http 127.0.0.1:7780 --events tcp://127.0.0.1:7745 \
  >demo/broker.log 2>&1 &
echo $! >demo/broker.pid
errand-worker --queue default --queue upper='tr a-z A-Z' --concurrency 4 --allow-commands \
  --name demo-worker >demo/worker.log 2>&1 &
echo $! >demo/worker.pid

for _ in $(seq 50); do errand --request-timeout 200ms ping >/dev/null 2>&1 && break; done
echo "broker: $(errand ping)"
echo "\$ errand submit --wait -- echo 'hello from errand'"
errand submit --wait -- echo 'hello from errand'
echo "\$ echo 'make me loud' | errand submit -q upper --payload-file - --wait"
echo 'make me loud' | errand submit -q upper --payload-file - --wait
echo "\$ errand list"
errand list
cat <<TXT

errand is running: broker on tcp://127.0.0.1:7744 (database ./errand.db), one worker.
Dashboard: http://127.0.0.1:7780/ (Prometheus metrics at /metrics). Also try: errand stats,
errand workers, errand events --follow.
The tools are in build/: export PATH="$PWD/build/client:\$PATH" and try "errand --help".
Logs: demo/broker.log, demo/worker.log. Stop both with: scripts/demo.sh stop
TXT
