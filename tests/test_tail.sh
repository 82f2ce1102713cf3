#!/usr/bin/env bash
# Black-box tests of `evstream tail`: against the hub (JSON lines, --max,
# --last-event-id, a closed output), and against a scripted server that
# is not ours (tests/fake_sse_server.py: CRLF and lone-CR line ends,
# comments, "data:" without a space, retry:), for reconnecting with
# Last-Event-ID after the server's retry: delay, and for answers that
# are not streams (text/html: exit 1; 204: exit 0; 503: retried).
# Usage: tests/test_tail.sh build/evstream
set -u
. "$(dirname "$0")/hub_lib.sh"
here=$(cd "$(dirname "$0")" && pwd)

# tail_bg OUT ARGS...: run tail in the background; its pid in $tail_pid.
tail_bg() {
    local out=$1
    shift
    "$bin" tail "$@" >"$out" 2>"$out.err" &
    tail_pid=$!
    started+=("$tail_pid")
}
# wait_exit PID SECONDS: its exit status, or 124 if it is still running.
wait_exit() {
    for _ in $(seq $(($2 * 20))); do kill -0 "$1" 2>/dev/null || break; sleep 0.05; done
    if kill -0 "$1" 2>/dev/null; then
        kill -KILL "$1" 2>/dev/null
        wait "$1" 2>/dev/null
        return 124
    fi
    wait "$1"
}

# ------------------------------------------------------------------ #
# The command line
"$bin" tail --help >"$tmp/help"
check "tail --help: exit 0" "[ $? -eq 0 ] && grep -q '^usage: evstream tail' '$tmp/help'"
for bad in "" "--max 0 http://x/" "--max http://x/" "--bogus http://x/" "http://x/ http://y/" \
           "--header nocolon http://x/"; do
    # shellcheck disable=SC2086
    "$bin" tail $bad >/dev/null 2>"$tmp/bad.err"
    rc=$?
    check "tail $bad: exit 2 with a message" "[ $rc -eq 2 ] && grep -q 'evstream tail: ' '$tmp/bad.err'"
done

# ------------------------------------------------------------------ #
# Against the hub.
start_hub H --history 64 --heartbeat-ms 200 || finish
# --max counts every event, so probes cannot prove this tail live
# without spoiling the count. Instead it resumes after an event published
# just before (on another topic): the hub replays from its history what
# a not-yet-live subscription would miss, so none of the four is lost
# however late tail subscribes. (The resume itself is tested below.)
j0=$(publish "$H" before.t1 x | id_of)
tail_bg "$tmp/t1" --max 4 --last-event-id "$j0" "$H/events?topic=t.%3E"
j1=$(publish "$H" t.a plain | id_of)
j2=$(publish "$H" 't.b&type=custom' $'a\nb' | id_of)
j3=$(publish "$H" t.c '{"k":"v"}' -H 'Content-Type: application/json' | id_of)
j4=$(publish "$H" t.d '' | id_of)
wait_exit "$tail_pid" 5
rc=$?
cat >"$tmp/t1.want" <<EOF
{"id":"$j1","event":"message","data":"plain"}
{"id":"$j2","event":"custom","data":"a\\nb"}
{"id":"$j3","event":"message","data":"{\\"k\\":\\"v\\"}"}
{"id":"$j4","event":"message","data":""}
EOF
check "tail --max 4: four JSON lines, then exit 0 (exit $rc)" "[ $rc -eq 0 ] && cmp -s '$tmp/t1' '$tmp/t1.want'"
cmp -s "$tmp/t1" "$tmp/t1.want" || diff "$tmp/t1.want" "$tmp/t1" | head
if command -v python3 >/dev/null; then
    check "tail's lines parse as JSON with id, event, data" \
        "python3 -c 'import json,sys; [json.loads(l)[\"data\"] for l in open(sys.argv[1])]' '$tmp/t1'"
else
    skip "tail's lines parse as JSON: python3 is not installed"
fi

tail_bg "$tmp/t2" --max 2 --last-event-id "$j2" "$H/events?topic=t.%3E"
wait_exit "$tail_pid" 5
rc=$?
check "tail --last-event-id: resumes after it (exit $rc)" \
    "[ $rc -eq 0 ] && [ \"\$(cut -d, -f1 '$tmp/t2' | paste -sd' ' -)\" = '{\"id\":\"$j3\" {\"id\":\"$j4\"' ]"

# Output closed: tail ends at its next line instead of running on. The
# first line head takes is a probe (await_live): tail is live then; the
# events after it find the pipe closed.
# (tail writes into a process substitution, not a pipeline, so that $!
# is tail's pid, not head's: it is tail that must end.)
"$bin" tail "$H/events?topic=pipe.x" 2>/dev/null > >(head -n 1 >"$tmp/t3") &
pipe_pid=$!
started+=("$pipe_pid")
if await_live "$tmp/t3" "$H" pipe.x; then
    for i in 1 2 3; do publish "$H" pipe.x "p$i" >/dev/null; sleep 0.1; done
fi
wait_exit "$pipe_pid" 5
rc=$?
check "tail | head -n 1: ends when its output closes (exit $rc)" \
    "[ $rc -eq 0 ] && [ \$(wc -l <'$tmp/t3') -eq 1 ] && grep -q '\"event\":\"probe\",\"data\":\"probe-[0-9]*\"' '$tmp/t3'"
stop_hub H TERM

# ------------------------------------------------------------------ #
# Against a server that is not ours.
if ! command -v python3 >/dev/null; then
    skip "tail against the scripted server: python3 is not installed"
    finish
fi

# start_fake SCENARIO: sets fake (its base URL) and fake_log.
start_fake() {
    fake_log="$tmp/fake.$1.log"
    : >"$fake_log"
    python3 "$here/fake_sse_server.py" "$1" "$fake_log" >"$tmp/fake.$1.out" 2>&1 &
    started+=("$!")
    fake_pid=$!
    # 60 s: python3 behind a pyenv shim took 3 s to start at load 10
    # here, and a 20 s wait was seen to run out.
    local port="" end=$(( $(date +%s) + 60 ))
    while [ "$(date +%s)" -le "$end" ]; do
        port=$(sed -n 's/^listening on \([0-9]*\)$/\1/p' "$tmp/fake.$1.out")
        [ -n "$port" ] && break
        kill -0 "$fake_pid" 2>/dev/null || break
        sleep 0.05
    done
    [ -n "$port" ] || { fail "the scripted server ($1) starts and prints its port"
                        sed 's/^/  fake: /' "$tmp/fake.$1.out" | tail -5; }
    fake="http://127.0.0.1:$port"
}

start_fake stream
tail_bg "$tmp/f1" --max 4 "$fake/events"
wait_exit "$tail_pid" 5
rc=$?
cat >"$tmp/f1.want" <<'EOF'
{"id":"7","event":"message","data":"no space after the colon"}
{"id":"7","event":"custom","data":"two\n lines"}
{"id":"8","event":"message","data":"after the reconnect"}
{"id":"","event":"message","data":"the id is now empty"}
EOF
check "CRLF, CR, comments, data: without a space, ids that persist (exit $rc)" \
    "[ $rc -eq 0 ] && cmp -s '$tmp/f1' '$tmp/f1.want'"
cmp -s "$tmp/f1" "$tmp/f1.want" || diff "$tmp/f1.want" "$tmp/f1" | head
check "reconnects once, sending Last-Event-ID: 7" \
    "[ \$(wc -l <'$fake_log') -eq 2 ] && [ \"\$(sed -n '1p' '$fake_log' | cut -d' ' -f3)\" = - ] &&
     [ \"\$(sed -n '2p' '$fake_log' | cut -d' ' -f3)\" = 7 ]"
gap=$(awk 'NR == 1 { t = $1 } NR == 2 { printf "%d", ($1 - t) * 1000 }' "$fake_log")
check "waits the server's retry: 300 ms before reconnecting (${gap} ms; the default is 3000)" \
    "[ '${gap:-0}' -ge 280 ] && [ '${gap:-0}' -lt 2500 ]"
kill "$fake_pid" 2>/dev/null

start_fake stream
tail_bg "$tmp/f2" --max 1 --last-event-id 42 -H 'X-Test: yes' "$fake/x"
wait_exit "$tail_pid" 5
check "--last-event-id: sent on the first connection" "[ \"\$(head -1 '$fake_log' | cut -d' ' -f3)\" = 42 ]"
kill "$fake_pid" 2>/dev/null

start_fake html
tail_bg "$tmp/f3" "$fake/"
wait_exit "$tail_pid" 5
rc=$?
check "an answer that is not an event stream: exit 1 with a message" \
    "[ $rc -eq 1 ] && grep -q 'not an event stream' '$tmp/f3.err' && [ ! -s '$tmp/f3' ]"
kill "$fake_pid" 2>/dev/null

start_fake nocontent
tail_bg "$tmp/f4" "$fake/"
wait_exit "$tail_pid" 5
rc=$?
check "204 No Content: the server says stop; exit 0" "[ $rc -eq 0 ] && [ ! -s '$tmp/f4' ]"
kill "$fake_pid" 2>/dev/null

start_fake busy
tail_bg "$tmp/f5" --max 1 --retry-ms 200 "$fake/"
wait_exit "$tail_pid" 5
rc=$?
check "503: retried after --retry-ms (exit $rc)" \
    "[ $rc -eq 0 ] && grep -q '\"data\":\"after the reconnect\"' '$tmp/f5' && [ \$(wc -l <'$fake_log') -eq 2 ]"
kill "$fake_pid" 2>/dev/null

finish
