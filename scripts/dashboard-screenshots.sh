#!/bin/sh
# Refreshes the dashboard's screenshots in docs/ (dashboard.png, dashboard-jobs.png,
# dashboard-job.png, dashboard-narrow.png): runs the browser test, which takes them of a real
# broker and worker in headless Chromium, and copies them over. Needs a build (BUILD, default
# ./build), Debian's chromium and `npm ci` in tests/browser.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD:-$root/build}
shots=$(mktemp -d)
trap 'rm -rf "$shots"' EXIT
ERRAND_BROKER_BIN=$build/broker/errand-broker \
ERRAND_WORKER_BIN=$build/worker/errand-worker \
ERRAND_CLI_BIN=$build/client/errand \
ERRAND_ARTIFACTS_DIR=$shots \
  node "$root/tests/browser/dashboard.test.mjs"
for f in dashboard.png dashboard-jobs.png dashboard-job.png dashboard-narrow.png; do
  cp "$shots/$f" "$root/docs/$f"
  echo "docs/$f"
done
