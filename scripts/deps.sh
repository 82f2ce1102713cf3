#!/bin/sh
# Install the Debian packages evstream needs, if pkg-config cannot find
# them. Safe to run again: it does nothing when everything is present.
# Usage: scripts/deps.sh [build|test|bench|sanitizers|fuzz|coverage|all]
# (the sanitizer runtimes come with gcc itself)
set -eu
what=${1:-build}

# pkg-config module -> Debian package
need_pkgs=""
check() { pkg-config --exists "$1" 2>/dev/null || need_pkgs="$need_pkgs $2"; }

command -v pkg-config >/dev/null 2>&1 || need_pkgs="$need_pkgs pkg-config"
command -v cc >/dev/null 2>&1 || need_pkgs="$need_pkgs gcc"
command -v make >/dev/null 2>&1 || need_pkgs="$need_pkgs make"
check ck libck-dev
check msgpack libmsgpack-dev
check jansson libjansson-dev
# The evstream program (make builds it): libmicrohttpd for serve,
# libcurl for tail.
check libmicrohttpd libmicrohttpd-dev
check libcurl libcurl4-openssl-dev
# Its black-box tests (make test): python3 plays a stalled client and a
# foreign SSE server.
case "$what" in
  test|all|sanitizers) command -v python3 >/dev/null 2>&1 || need_pkgs="$need_pkgs python3" ;;
esac
case "$what" in
  test|all|sanitizers) check criterion libcriterion-dev ;;
esac
# examples/sse_server serves HTTP with libmicrohttpd; make test-sse reads
# it with curl (make examples and make asan build it).
case "$what" in
  test|all|sanitizers) check libmicrohttpd libmicrohttpd-dev
                       command -v curl >/dev/null 2>&1 || need_pkgs="$need_pkgs curl" ;;
esac
# The NATS bridge: libnats (optional for the library, which builds
# without it) and nats-server, which tests/test_nats_bridge.c,
# tests/test_hub_nats.sh and examples/nats_bridge start on a loopback
# port (skipped, saying so, when absent; in CI, CI=true, a failure).
case "$what" in
  test|all|sanitizers) check libnats libnats-dev
                       command -v nats-server >/dev/null 2>&1 || need_pkgs="$need_pkgs nats-server" ;;
esac
# make fuzz: clang and its libFuzzer runtime; make coverage: gcovr.
case "$what" in
  fuzz|all) command -v clang >/dev/null 2>&1 || need_pkgs="$need_pkgs clang"
            ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-*.a >/dev/null 2>&1 ||
                need_pkgs="$need_pkgs libclang-rt-dev" ;;
esac
case "$what" in
  coverage|all) check criterion libcriterion-dev
                command -v gcovr >/dev/null 2>&1 || need_pkgs="$need_pkgs gcovr" ;;
esac
case "$what" in
  bench|all) check libzmq libzmq3-dev
             [ -f /usr/include/nng/nng.h ] || need_pkgs="$need_pkgs libnng-dev" ;;
esac

[ -z "$need_pkgs" ] && exit 0
echo "evstream: installing missing packages:$need_pkgs" >&2
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq $need_pkgs >/dev/null
