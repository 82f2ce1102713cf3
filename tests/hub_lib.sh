# Shared by the black-box tests (tests/test_serve.sh, tests/test_tail.sh,
# tests/test_hub_nats.sh, tests/test_browser.sh, tests/sse_server_test.sh);
# sourced, never run.
#
# Each test starts hubs on free loopback ports (--port 0, the port read
# from the "listening on" line), talks to them with curl, and stops them.
# Everything it starts is killed on exit; every wait has a deadline.
# Sets: bin (the binary under test: $1, else $default_bin, else
# build/evstream), tmp (a scratch directory).
#
# Skips: a test whose tool is missing calls `skip REASON`. Outside CI
# that counts and prints the skip; in CI (CI=true) it is a failure, so
# that CI cannot pass with tests that never ran. The summary line that
# `finish` prints counts passes, failures and skips; each skip also
# prints a line "SKIP WHAT" (.ci/run prints those again at the end).
#
# Liveness: a stream's headers prove a curl subscriber is live (the hub
# subscribes before it answers), but nothing in `evstream tail`'s output
# shows that it has connected, and evstream_hub_clients counts a stream
# from the moment its place under the cap is reserved, before it is
# subscribed. Such a subscriber is proved live with `await_live`, which
# publishes probe events until one arrives, never with a sleep or a
# metric.

bin=${1:-${default_bin:-build/evstream}}
tmp=$(mktemp -d)
passed=0
failed=0
skipped=0
started=()   # pids of hubs and helpers this script started

hub_cleanup() {
    exec 2>/dev/null # no "Killed" notices for the helpers ended here
    # Only what this script started, by pid.
    for p in "${started[@]}"; do kill -KILL "$p" 2>/dev/null; done
    for j in $(jobs -p); do kill -KILL "$j" 2>/dev/null; done
    wait 2>/dev/null
    rm -rf "$tmp"
}
trap hub_cleanup EXIT
trap 'exit 1' INT TERM HUP

ok()    { passed=$((passed + 1)); echo "ok   $1"; }
fail()  { failed=$((failed + 1)); echo "FAIL $1"; }
check() { if eval "$2"; then ok "$1"; else fail "$1"; fi; }
in_ci() { [ "${CI:-}" = true ] || [ "${CI:-}" = 1 ]; }
# skip WHAT: WHAT did not run (say why): printed and counted; in CI a
# failure instead.
skip() {
    if in_ci; then
        fail "$1 (CI=true: a missing or failed tool is a failure, not a skip)"
        return
    fi
    skipped=$((skipped + 1))
    echo "SKIP $1"
}
finish() {
    echo "$(basename "$0" .sh): $passed passed, $failed failed, $skipped skipped"
    [ "$failed" -eq 0 ]
    exit
}
# Poll `cond` (a shell command) every 50 ms for up to `seconds`
# (wall-clock, so a loaded machine gets the time it is promised):
# wait_until SECONDS COND.
wait_until() {
    local end=$(( $(date +%s%N) + ${1%.*} * 1000000000 ))
    while :; do
        eval "$2" && return 0
        [ "$(date +%s%N)" -lt "$end" ] || break
        sleep 0.05
    done
    eval "$2"
}

# Without curl nothing here can run: a failure, in CI and out.
command -v curl >/dev/null || { echo "$(basename "$0"): curl not found"; exit 1; }
[ -x "$bin" ] || { echo "$(basename "$0"): no $bin (make)"; exit 1; }

# start_hub NAME [serve options]: start a hub; sets NAME (its base URL)
# and NAME_pid. Its stdout and stderr go to $tmp/NAME.out and .err.
# Standard input comes from $hub_stdin (default /dev/null).
start_hub() {
    local name=$1 port="" pid
    shift
    : >"$tmp/$name.out"
    "$bin" serve --port 0 "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" <"${hub_stdin:-/dev/null}" &
    pid=$!
    started+=("$pid")
    # 20 s: a hub under ASan on a loaded two-core machine (and one with
    # --nats, which syncs with the server first) can take seconds.
    local end=$(( $(date +%s) + 20 ))
    while [ "$(date +%s)" -le "$end" ]; do
        port=$(sed -n 's|^listening on http://127\.0\.0\.1:\([0-9][0-9]*\)$|\1|p' "$tmp/$name.out")
        [ -n "$port" ] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    if [ -z "$port" ]; then
        fail "hub $name starts and prints 'listening on http://127.0.0.1:PORT'"
        sed 's/^/  hub: /' "$tmp/$name.err"
        return 1
    fi
    eval "$name=http://127.0.0.1:$port; ${name}_pid=$pid"
}

# stop_hub NAME SIGNAL: send the signal and check the hub exits 0 within
# 2 s with nothing on stderr (sanitizer reports included).
stop_hub() {
    local name=$1 sig=$2 pid rc t0 t1
    pid=$(eval echo "\$${name}_pid")
    t0=$(date +%s%N)
    kill "-$sig" "$pid" 2>/dev/null
    for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    if kill -0 "$pid" 2>/dev/null; then
        fail "hub $name exits within 2 s of SIG$sig"
        kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    else
        wait "$pid"
        rc=$?
        t1=$(date +%s%N)
        check "hub $name exits 0 on SIG$sig in $(( (t1 - t0) / 1000000 )) ms (exit $rc)" \
            "[ $rc -eq 0 ]"
    fi
    check "hub $name: stderr empty" "[ ! -s '$tmp/$name.err' ]"
    [ -s "$tmp/$name.err" ] && sed 's/^/  hub: /' "$tmp/$name.err" | head -40
}

# HTTP status of a request (curl arguments).
code() { curl -s --max-time 5 -o /dev/null -w '%{http_code}' "$@"; }

# publish BASE TOPIC DATA [curl args]: prints the JSON answer (15 s at
# most: generous for a loaded machine, and only spent when it hangs).
publish() {
    local base=$1 topic=$2 data=$3
    shift 3
    local rc=0
    curl -s --max-time 15 -X POST --data-binary "$data" "$@" "$base/publish?topic=$topic" || rc=$?
    busy
    return $rc
}

# The script's last activity (a publish or a new subscription), in ms:
# open windows stay open until `grace` after it (see window).
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
busy() { now_ms >"$tmp/.last_busy"; }

# The id in a publish answer {"id":"N"}.
id_of() { sed -n 's/^{"id":"\([0-9][0-9]*\)"}$/\1/p'; }

# subscribe FILE URL [seconds] [curl args]: read an event stream into
# FILE (headers into FILE.h) in the background for `seconds` (default 3)
# from the moment its headers are in; returns then. The headers prove
# the subscription live: the hub subscribes (evs_sse_connect) before it
# creates the answer. The window starts there, not when curl starts,
# because on a loaded machine (ASan, two shared cores) curl can take
# most of a short window to connect and get its headers, and the events
# a test publishes into the window then fall after its end. For the same
# reason EVS_TEST_WINDOW_SCALE (default 1; make test sets 2, make asan
# 3) multiplies every window. curl's own --max-time (the window plus
# 30 s) still bounds it. Returns 1 if curl ended without headers. Its pid
# is in $sub_pid; it ends with curl's exit status, or 143 when the
# window closed it.
# window PID SECONDS: end curl PID after SECONDS, or sooner end
# this watcher when curl ends by itself (polling, so that it never
# signals a pid that has been reused). A window never closes less than
# a grace (1 s, times EVS_TEST_WINDOW_SCALE) after the script's last
# publish or subscribe (`busy`): a loaded machine that makes the
# publishes into a window slow stretches the window with them, instead
# of cutting off the last events. curl's --max-time still bounds it.
window() {
    # In ms: mawk's printf %d stops at 2^31 - 1.
    local end=$(( $(now_ms) + $(awk -v s="$2" 'BEGIN { printf "%d", s * 1000 }') ))
    local grace=$(awk -v k="${EVS_TEST_WINDOW_SCALE:-1}" 'BEGIN { printf "%d", k * 1000 }')
    local last t
    while kill -0 "$1" 2>/dev/null; do
        t=$(now_ms)
        last=$(cat "$tmp/.last_busy" 2>/dev/null || echo 0)
        if [ "$t" -ge "$end" ] && [ "$t" -ge $((last + grace)) ]; then
            kill -TERM "$1" 2>/dev/null
            return
        fi
        sleep 0.1
    done
}
subscribe() {
    local file=$1 url=$2 secs=${3:-3}
    shift 3 2>/dev/null || shift $#
    secs=$(awk -v s="$secs" -v k="${EVS_TEST_WINDOW_SCALE:-1}" 'BEGIN { print s * k }')
    : >"$file.h"
    busy
    # -N: curl flushes each write, so what it read is in FILE even when
    # the window ends it with SIGTERM.
    curl -sN --max-time "$((${secs%.*} + 30))" -D "$file.h" -o "$file" "$@" "$url" &
    sub_pid=$!
    subs+=("$sub_pid")
    # Until the headers are in or curl ends.
    while kill -0 "$sub_pid" 2>/dev/null; do
        if grep -q $'^\r$' "$file.h" 2>/dev/null; then
            window "$sub_pid" "$secs" &
            return 0
        fi
        sleep 0.02
    done
    grep -q $'^\r$' "$file.h" 2>/dev/null
}

# await_live FILE BASE TOPIC: prove that a subscriber writing what it
# receives to FILE (an SSE stream or tail's JSON lines) is live on hub
# BASE for TOPIC: publish probe events there (type "probe", data
# "probe-N") until one shows up in FILE, a probe every 200 ms, at most
# 100 (20 s). A probe published before the subscription was live is
# lost; one after it arrives, so afterwards FILE holds one probe or
# more, ahead of everything published next: callers drop them (their
# type is "probe"). Fails the test and returns 1 if none came.
probes=0
await_live() {
    local file=$1 base=$2 topic=$3 i
    for i in $(seq 100); do
        probes=$((probes + 1))
        publish "$base" "$topic&type=probe" "probe-$probes" >/dev/null
        for _ in 1 2 3 4; do
            grep -q 'probe-[0-9]' "$file" 2>/dev/null && return 0
            sleep 0.05
        done
    done
    fail "a subscriber on $topic gets a probe event within 20 s ($file)"
    return 1
}

# Wait for every subscriber started so far (never a bare `wait`: that
# would wait for the hubs too).
subs=()
wait_subs() {
    for p in "${subs[@]}"; do wait "$p" 2>/dev/null; done
    subs=()
}

# A metric's value from /metrics: metric BASE 'name{labels}'.
metric() {
    curl -s --max-time 5 "$1/metrics" | awk -v m="$2" '$1 == m { print $2 }'
}
