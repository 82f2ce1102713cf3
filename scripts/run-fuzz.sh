#!/bin/sh
# Run each libFuzzer harness for a while, one after another (the machine
# may have two cores), and fail if any finds a crash, a leak, a timeout
# or an over-large allocation.
# Usage: scripts/run-fuzz.sh BUILD_DIR SECONDS NAME...
#   BUILD_DIR/fuzz_NAME     the harness (make fuzz builds it)
#   tests/fuzz/corpus/NAME  the committed seeds (read, never written)
#   BUILD_DIR/corpus/NAME   what the fuzzer adds (kept between runs)
#   BUILD_DIR/crashes/NAME  crashing inputs: add each to the seeds and
#                           write a regression test (SPEC.md, "Testing")
#   tests/fuzz/NAME.dict    a dictionary, when there is one
# Inputs are at most 4096 bytes, so no single allocation may exceed
# 128 MiB (-malloc_limit_mb): memory must stay bounded by the input.
set -u
[ $# -ge 2 ] || { echo "usage: $0 BUILD_DIR SECONDS NAME..." >&2; exit 2; }
dir=$1
secs=$2
shift 2
fail=0
for name in "$@"; do
    bin=$dir/fuzz_$name
    work=$dir/corpus/$name
    crashes=$dir/crashes/$name
    log=$dir/fuzz_$name.log
    mkdir -p "$work" "$crashes"
    dict=
    [ -f "tests/fuzz/$name.dict" ] && dict="-dict=tests/fuzz/$name.dict"
    # shellcheck disable=SC2086
    ASAN_OPTIONS="detect_leaks=1:allocator_may_return_null=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}" \
    UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}" \
        "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=128 \
        -max_len=4096 -print_final_stats=1 -artifact_prefix="$crashes/" $dict \
        "$work" "tests/fuzz/corpus/$name" >"$log" 2>&1
    rc=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
    echo "fuzz $name: ${runs:-?} runs in ${secs} s, ${cov:-cov: ?}, exit $rc (log: $log)"
    if [ "$rc" -ne 0 ]; then
        grep -E 'ERROR|check failed|runtime error|SUMMARY|Test unit written' "$log" | head -20
        fail=1
    fi
done
exit $fail
