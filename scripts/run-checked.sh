#!/bin/sh
# Run a test binary under a sanitizer and fail if any sanitizer report
# appears in its output, even when the tests themselves passed (Criterion
# counts a test as passed before LeakSanitizer reports at process exit).
# Usage: scripts/run-checked.sh BINARY [ARGS...]
log=$(mktemp)
here=$(cd "$(dirname "$0")/.." && pwd)
LSAN_OPTIONS="suppressions=$here/tests/lsan.supp:fast_unwind_on_malloc=0${LSAN_OPTIONS:+:$LSAN_OPTIONS}" \
CRITERION_NO_EARLY_EXIT=1 "$@" >"$log" 2>&1
rc=$?
cat "$log"
if grep -qE 'ERROR: (LeakSanitizer|AddressSanitizer)|runtime error:|WARNING: ThreadSanitizer' "$log"; then
    echo "sanitizer report found: failing" >&2
    rc=1
fi
rm -f "$log"
exit $rc
