#!/bin/sh
# Run every built example and check its output: each line of
# examples/NAME.expect must appear (as a fixed string) in what NAME
# printed, and NAME must exit 0.
set -u
dir=${1:-build/examples}
fail=0
for bin in "$dir"/*; do
    [ -x "$bin" ] || continue
    name=$(basename "$bin")
    bad=0
    out=$(timeout 60 "$bin" 2>&1)
    rc=$?
    if [ $rc -ne 0 ]; then
        echo "example $name: exit $rc"; echo "$out" | tail -20; fail=1; continue
    fi
    exp="examples/$name.expect"
    if [ -f "$exp" ]; then
        while IFS= read -r line; do
            [ -n "$line" ] || continue
            if ! printf '%s\n' "$out" | grep -qF -- "$line"; then
                echo "example $name: missing line: $line"; bad=1
            fi
        done < "$exp"
    else
        echo "example $name: no $exp"; bad=1
    fi
    if [ $bad -eq 0 ]; then
        echo "example $name: ok"
    else
        fail=1
    fi
done
exit $fail
