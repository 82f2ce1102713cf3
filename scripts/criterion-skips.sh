#!/bin/sh
# Print the Criterion tests that skipped, from the suite's TAP report
# (Criterion's own summary line leaves skipped tests out of its counts),
# as "criterion: N skipped" and a "SKIP " line each (.ci/run prints
# those again at the end). In CI (CI=true) a skip is a failure: a test
# that did not run proves nothing.
# Usage: scripts/criterion-skips.sh TAP_FILE (no file: nothing to say,
# as under TSan, whose runner writes no TAP).
set -u
tap=$1
[ -f "$tap" ] || exit 0
skips=$(sed -n 's/^ok - \(.*\)  # SKIP \(.*\)$/\1: \2/p' "$tap")
n=$(printf '%s' "$skips" | grep -c .)
echo "criterion: $n skipped"
[ "$n" -eq 0 ] && exit 0
printf '%s\n' "$skips" | sed 's/^/SKIP /'
case "${CI:-}" in
  true|1) echo "criterion: CI=true, so skipped tests are a failure" >&2; exit 1 ;;
esac
exit 0
