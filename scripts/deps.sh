#!/usr/bin/env bash
# Installs the Debian 12 packages errand needs, if any is missing:
#   deps.sh demo   what building the programs needs (scripts/demo.sh)
#   deps.sh        that, and everything the test suite needs (scripts/test.sh, CI)
set -euo pipefail
mode=${1:-test}
case "$mode" in demo|test) ;; *) echo "usage: deps.sh [demo|test]" >&2; exit 2 ;; esac
# The build: compilers, meson (+ cmake, which finds msgpack-cxx), and every dependency() of the
# root meson.build that is required with -Dtests=false.
packages=(build-essential meson ninja-build pkg-config cmake python3 libzmq3-dev cppzmq-dev
          libmsgpack-cxx-dev libsqlite3-dev libcli11-dev libspdlog-dev nlohmann-json3-dev
          libcpp-httplib-dev libsystemd-dev libpq-dev libtomlplusplus-dev
          libhowardhinnant-date-dev)
# The tests: doctest; sqlite3, e2fsprogs (chattr), systemd (systemd-analyze verify), the
# PostgreSQL server, clang-format (the format check).
if [ "$mode" = test ]; then
  packages+=(doctest-dev sqlite3 e2fsprogs clang-format systemd postgresql)
fi
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
sudo_cmd=""
[ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
fi
[ "$mode" = test ] || exit 0
# The observability tests: promtool checks /metrics; the dashboard test drives Debian's Chromium
# with playwright-core (pinned in tests/browser/package-lock.json; needs node >= 18). Without
# their recommends: prometheus would bring exporters, chromium a desktop's worth of fonts.
extras=()
for p in prometheus chromium; do
  dpkg -s "$p" >/dev/null 2>&1 || extras+=("$p")
done
command -v npm >/dev/null || extras+=(nodejs npm)
if [ ${#extras[@]} -gt 0 ]; then
  echo "installing: ${extras[*]}"
  [ ${#missing[@]} -gt 0 ] || $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends \
    "${extras[@]}" >/dev/null
fi
if [ ! -d "$(dirname "$0")/../tests/browser/node_modules/playwright-core" ]; then
  (cd "$(dirname "$0")/../tests/browser" && npm ci --no-audit --no-fund --loglevel=error)
fi
