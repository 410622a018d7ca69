#!/usr/bin/env bash
# The test command: installs what is missing, builds, runs the whole suite (unit and
# integration), and ends with the line "N passed, N failed" (doctest cases). Exit 1 on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
bash scripts/build.sh
status=0
meson test -C build --print-errorlogs --num-processes 2 "$@" || status=$?
python3 scripts/summarise.py build/meson-logs/testlog.json || status=1
exit $status
