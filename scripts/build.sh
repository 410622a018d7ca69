#!/usr/bin/env bash
# Configures (once) and builds errand in ./build with two jobs.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -f build/build.ninja ]; then
  meson setup build
fi
ninja -C build -j2
