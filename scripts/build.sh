#!/usr/bin/env bash
# Configures (once) and builds errand in ./build with two jobs:
#   build.sh demo   only the three programs (no test suite: -Dtests=false on a new build dir)
#   build.sh        everything, the test suite included (turns -Dtests back on if demo.sh set
#                   the build dir up without it)
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-all}
case "$mode" in demo|all) ;; *) echo "usage: build.sh [demo|all]" >&2; exit 2 ;; esac
if [ ! -f build/build.ninja ]; then
  if [ "$mode" = demo ]; then meson setup build -Dtests=false; else meson setup build; fi
fi
if [ "$mode" = demo ]; then
  ninja -C build -j2 broker/errand-broker worker/errand-worker client/errand
  exit 0
fi
if meson introspect build --buildoptions | python3 -c \
    'import json,sys; sys.exit(0 if any(o["name"]=="tests" and not o["value"] for o in json.load(sys.stdin)) else 1)'; then
  meson configure build -Dtests=true
fi
ninja -C build -j2
