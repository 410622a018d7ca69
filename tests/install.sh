#!/usr/bin/env bash
# The library as a user gets it: `meson install` into a temporary DESTDIR, then examples/ built
# against the installed files only, once with pkg-config (shared, and static with --static) and
# once with CMake's find_package(errand) (errand::errand, and errand::errand-static), each run against a real errand-broker on an ipc
# endpoint in a temp dir. Environment (tests/meson.build): ERRAND_BUILD_ROOT, ERRAND_PREFIX,
# ERRAND_LIBDIR, ERRAND_INCLUDEDIR (as installed), ERRAND_EXAMPLES_DIR, ERRAND_BROKER_BIN, MESON,
# CXX, ERRAND_SANITIZE (meson's b_sanitize).
set -euo pipefail
# meson test points LD_LIBRARY_PATH at the build tree's liberrand; the examples must find the
# installed one.
unset LD_LIBRARY_PATH

tmp=$(mktemp -d)
broker_pid=""
worker_pid=""
cleanup() {
  [ -n "$worker_pid" ] && kill "$worker_pid" 2>/dev/null || true
  [ -n "$broker_pid" ] && kill "$broker_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

dest=$tmp/root
"$MESON" install -C "$ERRAND_BUILD_ROOT" --no-rebuild --quiet --destdir "$dest" >/dev/null
root=$dest$ERRAND_PREFIX
libdir=$dest$ERRAND_LIBDIR
incdir=$dest$ERRAND_INCLUDEDIR

for f in "$libdir/liberrand.so" "$libdir/liberrand.a" "$libdir/pkgconfig/errand.pc" \
         "$libdir/cmake/errand/errandConfig.cmake" "$libdir/cmake/errand/errandConfigVersion.cmake" \
         "$incdir/errand/client.hpp" "$incdir/errand/async_client.hpp" "$incdir/errand/worker.hpp" \
         "$incdir/errand/log.hpp" "$incdir/errand/messages.hpp" "$incdir/errand/protocol.hpp" \
         "$incdir/errand/curve.hpp" "$incdir/errand/version.hpp" \
         "$root/share/bash-completion/completions/errand" \
         "$root/share/bash-completion/completions/errand-broker" \
         "$root/share/bash-completion/completions/errand-worker" \
         "$root/share/zsh/site-functions/_errand"; do
  [ -e "$f" ] || fail "meson install did not install $f"
done
# Only the public headers: none of the internal ones (codec, transport) that need MessagePack/ZeroMQ.
for f in codec.hpp transport.hpp json.hpp; do
  [ ! -e "$incdir/errand/$f" ] || fail "internal header errand/$f was installed"
done

# The installed liberrand holds everything of errand it needs: no undefined errand:: symbols.
if nm -D --undefined-only "$libdir/liberrand.so" | c++filt | grep ' errand::' >/dev/null; then
  nm -D --undefined-only "$libdir/liberrand.so" | c++filt | grep ' errand::' >&2
  fail "liberrand.so needs errand symbols from elsewhere"
fi

flags=(-std=c++20 -Wall -Wextra -Wpedantic -Werror)
if [ -n "${ERRAND_SANITIZE:-}" ] && [ "$ERRAND_SANITIZE" != none ]; then
  flags+=("-fsanitize=$ERRAND_SANITIZE")
fi

# --- pkg-config -----------------------------------------------------------------------------
export PKG_CONFIG_PATH=$libdir/pkgconfig
export PKG_CONFIG_SYSROOT_DIR=$dest
libs=$(echo $(pkg-config --libs errand))  # without pkg-config's trailing space
[ "$libs" = "-L$libdir -lerrand" ] || fail "pkg-config --libs errand is '$libs' (want only -lerrand)"
pkg-config --print-requires-private errand | grep -x 'libzmq' >/dev/null || fail "errand.pc lacks libzmq"
pkg-config --print-requires-private errand | grep -x 'fmt' >/dev/null || fail "errand.pc lacks fmt"

# Each public header compiles alone and includes neither ZeroMQ nor MessagePack (nor fmt/spdlog).
for h in "$incdir"/errand/*.hpp; do
  name=errand/$(basename "$h")
  deps=$(echo "#include <$name>" | "$CXX" "${flags[@]}" $(pkg-config --cflags errand) -x c++ -M - ) ||
    fail "<$name> does not compile on its own"
  if grep -Eq 'zmq\.h|msgpack|/fmt/|spdlog|nlohmann' <<<"$deps"; then
    fail "<$name> includes $(echo "$deps" | tr ' ' '\n' | grep -E 'zmq\.h|msgpack|/fmt/|spdlog|nlohmann' | head -3)"
  fi
done

mkdir -p "$tmp/pc"
for ex in submit worker; do
  "$CXX" "${flags[@]}" $(pkg-config --cflags errand) "$ERRAND_EXAMPLES_DIR/$ex.cpp" \
    -o "$tmp/pc/example-$ex" $(pkg-config --libs errand)
done
# Static: liberrand.a plus the libraries its Requires.private names, linked shared. (A fully static
# `pkg-config --static` link fails on Debian 12 in libzmq.pc itself: it names libprotokit.a, which
# no package ships.)
static_libs=$(pkg-config --libs errand $(pkg-config --print-requires-private errand) |
              sed 's/-lerrand\b/-l:liberrand.a/')
"$CXX" "${flags[@]}" $(pkg-config --cflags errand) "$ERRAND_EXAMPLES_DIR/submit.cpp" \
  -o "$tmp/pc/example-submit-static" $static_libs
if ldd "$tmp/pc/example-submit-static" | grep liberrand >/dev/null; then
  fail "the static example links liberrand.so"
fi
unset PKG_CONFIG_PATH PKG_CONFIG_SYSROOT_DIR

# --- CMake ----------------------------------------------------------------------------------
cmake_flags="${flags[*]}"
cmake -S "$ERRAND_EXAMPLES_DIR" -B "$tmp/cmake" -DCMAKE_PREFIX_PATH="$root" \
  -DCMAKE_CXX_COMPILER="$CXX" -DCMAKE_CXX_FLAGS="$cmake_flags" >"$tmp/cmake.log" 2>&1 ||
  { cat "$tmp/cmake.log" >&2; fail "cmake could not configure examples/ with find_package(errand)"; }
cmake --build "$tmp/cmake" >>"$tmp/cmake.log" 2>&1 ||
  { cat "$tmp/cmake.log" >&2; fail "cmake could not build examples/"; }
# The static target: liberrand.a, with ZeroMQ, fmt and Threads from its INTERFACE_LINK_LIBRARIES.
cmake -S "$ERRAND_EXAMPLES_DIR" -B "$tmp/cmake-static" -DCMAKE_PREFIX_PATH="$root" -DERRAND_STATIC=ON \
  -DCMAKE_CXX_COMPILER="$CXX" -DCMAKE_CXX_FLAGS="$cmake_flags" >"$tmp/cmake-static.log" 2>&1 ||
  { cat "$tmp/cmake-static.log" >&2; fail "cmake could not configure examples/ with errand::errand-static"; }
cmake --build "$tmp/cmake-static" >>"$tmp/cmake-static.log" 2>&1 ||
  { cat "$tmp/cmake-static.log" >&2; fail "cmake could not build examples/ with errand::errand-static"; }
for ex in submit worker; do
  if ldd "$tmp/cmake-static/example-$ex" | grep liberrand >/dev/null; then
    fail "the CMake errand::errand-static example-$ex links liberrand.so"
  fi
done

# --- run them against a real broker ---------------------------------------------------------
endpoint="ipc://$tmp/broker.sock"
"$ERRAND_BROKER_BIN" --listen "$endpoint" --db "$tmp/errand.db" 2>"$tmp/broker.log" &
broker_pid=$!

# The clients connect before the broker has bound: ZeroMQ keeps reconnecting, so no wait is
# needed; example-submit gives up after its request timeout (5 s) and 30 s per job.
run_pair() {  # LABEL WORKER SUBMIT: LD_LIBRARY_PATH names the installed lib for pkg-config's
  local label=$1
  LD_LIBRARY_PATH=$libdir "$2" "$endpoint" 2>"$tmp/worker-$label.log" &
  worker_pid=$!
  local out
  out=$(LD_LIBRARY_PATH=$libdir timeout 60 "$3" "$endpoint" 3) ||
    { cat "$tmp/broker.log" "$tmp/worker-$label.log" >&2; fail "$label: example-submit failed"; }
  for i in 0 1 2; do
    grep -q "succeeded: HELLO $i$" <<<"$out" ||
      { echo "$out" >&2; fail "$label: no 'succeeded: HELLO $i' in example-submit's output"; }
  done
  kill -TERM "$worker_pid"
  wait "$worker_pid" || fail "$label: example-worker did not stop cleanly on SIGTERM"
  worker_pid=""
  echo "ok: $label"
}
run_pair pkg-config "$tmp/pc/example-worker" "$tmp/pc/example-submit"
run_pair pkg-config-static "$tmp/pc/example-worker" "$tmp/pc/example-submit-static"
# CMake puts the installed library's directory in the RPATH: no LD_LIBRARY_PATH needed.
libdir=/nonexistent run_pair cmake "$tmp/cmake/example-worker" "$tmp/cmake/example-submit"
libdir=/nonexistent run_pair cmake-static "$tmp/cmake-static/example-worker" \
  "$tmp/cmake-static/example-submit"

kill -TERM "$broker_pid"
wait "$broker_pid" || { cat "$tmp/broker.log" >&2; fail "errand-broker did not stop cleanly"; }
broker_pid=""
echo "install: pkg-config and CMake (each shared and static) builds of examples/ ran against a broker"
