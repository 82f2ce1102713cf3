#!/usr/bin/env bash
# Black-box test of examples/sse_server: start it on a free loopback port,
# read its event stream with curl, and check the HTTP answer, the frames,
# resuming with Last-Event-ID, several topics, bad requests, that idle
# clients cost no thread and no CPU, and a clean exit on SIGTERM.
# Usage: tests/sse_server_test.sh build/examples/sse_server
# Needs curl. Bounded in time: every curl has --max-time, the server
# stops by itself after --seconds, and the trap kills what is left.
set -u
default_bin=build/examples/sse_server
. "$(dirname "$0")/hub_lib.sh"

# Frames of a saved stream, one line each: id <TAB> event <TAB> data
# (only frames with data; comment and retry-only frames are skipped).
frames() {
    awk 'BEGIN { RS = ""; FS = "\n"; OFS = "\t" }
         { id = ""; ev = "message"; data = ""; has = 0
           for (i = 1; i <= NF; i++) {
               if ($i ~ /^id: /)    id = substr($i, 5)
               if ($i ~ /^event: /) ev = substr($i, 8)
               if ($i ~ /^data: /)  { data = data (has ? "\n" : "") substr($i, 7); has = 1 }
           }
           if (has) print id, ev, data }' "$1"
}
# The frames of a stream that was cut off: its last frame may be
# unfinished (no blank line after it), so it is dropped then.
whole() {
    if [ "$(tail -c 2 "$1" | od -An -c | tr -d ' ')" = '\n\n' ]; then frames "$1"
    else frames "$1" | sed '$d'; fi
}
# read_until FILE URL COND [curl args]: read the stream at URL into FILE
# (headers into FILE.h) until COND holds (at most 20 s), then end it.
# Reading for a fixed time instead failed on a loaded machine, where
# the ticker's events came too slowly to fill the window.
read_until() {
    local file=$1 url=$2 cond=$3
    shift 3
    subscribe "$file" "$url" 25 "$@"
    wait_until 20 "$cond"
    kill -TERM "$sub_pid" 2>/dev/null
    wait_subs
}
# Prints nothing when the ids (one a line) are strictly increasing.
not_increasing() { awk 'NR > 1 && $1 + 0 <= prev { print; exit } { prev = $1 + 0 }' "$1"; }
# A JSON number, as RFC 8259 defines it.
num='-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?'
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$server/stat"; }
threads() { awk '/^Threads:/ { print $2 }' "/proc/$server/status"; }

# The server stops by itself after 60 s (the script needs about 10; 60
# leaves room for ASan on a loaded machine), the trap kills it sooner.
"$bin" --port 0 --seconds 60 >"$tmp/server.out" 2>"$tmp/server.err" &
server=$!
started+=("$server")
port=""
end=$(( $(date +%s) + 20 ))
while [ "$(date +%s)" -le "$end" ]; do
    port=$(sed -n 's|^listening on http://127\.0\.0\.1:\([0-9][0-9]*\)$|\1|p' "$tmp/server.out")
    [ -n "$port" ] && break
    kill -0 "$server" 2>/dev/null || break
    sleep 0.05
done
[ -n "$port" ] || { fail "server prints its port"; cat "$tmp/server.err"; finish; }
ok "server listens on 127.0.0.1:$port"
base="http://127.0.0.1:$port"

# 1. One topic until 3 frames are in: the answer's headers, then frames
# with strictly increasing ids and JSON data for ABC only.
read_until "$tmp/b1" "$base/events?topic=ticker.ABC" "[ \$(frames '$tmp/b1' | wc -l) -ge 4 ]"
tr -d '\r' <"$tmp/b1.h" >"$tmp/h1.txt"
check "HTTP 200" "head -1 '$tmp/h1.txt' | grep -q '^HTTP/1\.[01] 200'"
check "Content-Type: text/event-stream" "grep -qix 'content-type: text/event-stream' '$tmp/h1.txt'"
check "Cache-Control: no-cache" "grep -qix 'cache-control: no-cache' '$tmp/h1.txt'"
whole "$tmp/b1" >"$tmp/f1"
cut -f1 "$tmp/f1" >"$tmp/ids1"
n1=$(wc -l <"$tmp/f1")
check "at least 3 frames ($n1)" "[ $n1 -ge 3 ]"
check "every frame has an id" "! grep -qv '^[0-9][0-9]*\$' '$tmp/ids1'"
check "ids strictly increasing" "[ -z \"\$(not_increasing '$tmp/ids1')\" ]"
cut -f3 "$tmp/f1" >"$tmp/data1"
check "data is JSON {\"sym\":\"ABC\",\"price\":<number>}" \
    "[ -s '$tmp/data1' ] && ! grep -Evq '^\\{\"sym\":\"ABC\",\"price\":$num\\}\$' '$tmp/data1'"

# 2. Resume: with Last-Event-ID L the stream replays from the first ABC
# event after L, exactly the ids the first reader got after L (ids are
# per stream, shared by all symbols, so ABC's are not consecutive).
if [ "$n1" -ge 3 ]; then
    last=$(sed -n 2p "$tmp/ids1")
    tail -n +3 "$tmp/ids1" >"$tmp/want2"
    read_until "$tmp/b2" "$base/events?topic=ticker.ABC" \
        "[ \$(frames '$tmp/b2' | wc -l) -gt $(wc -l <"$tmp/want2") ]" -H "Last-Event-ID: $last"
    whole "$tmp/b2" | cut -f1 >"$tmp/ids2"
    head -n "$(wc -l <"$tmp/want2")" "$tmp/ids2" >"$tmp/got2"
    check "resume after $last starts at $(head -1 "$tmp/want2")" \
        "[ \"\$(head -1 '$tmp/ids2')\" = \"\$(head -1 '$tmp/want2')\" ]"
    check "resume replays every later id once, in order" "cmp -s '$tmp/want2' '$tmp/got2'"
    check "resumed ids strictly increasing" "[ -z \"\$(not_increasing '$tmp/ids2')\" ]"
    check "no gap frame (all in history)" "! frames '$tmp/b2' | cut -f2 | grep -qx gap"
else
    fail "resume (needs 3 frames from the first reader)"
fi

# 3. Several topics: their union, once each, in id order.
read_until "$tmp/b3" "$base/events?topic=ticker.ABC&topic=ticker.XYZ" \
    "frames '$tmp/b3' | sed '\$d' | grep -q '\"sym\":\"ABC\"' && frames '$tmp/b3' | sed '\$d' | grep -q '\"sym\":\"XYZ\"'"
whole "$tmp/b3" >"$tmp/f3"
check "two topics: ABC and XYZ, no QRS" \
    "grep -q '\"sym\":\"ABC\"' '$tmp/f3' && grep -q '\"sym\":\"XYZ\"' '$tmp/f3' && ! grep -q QRS '$tmp/f3'"
cut -f1 "$tmp/f3" >"$tmp/ids3"
check "two topics: ids strictly increasing" "[ -s '$tmp/ids3' ] && [ -z \"\$(not_increasing '$tmp/ids3')\" ]"

# 4. Bad requests.
code() { curl -s --max-time 2 -o /dev/null -w '%{http_code}' "$@"; }
check "bad pattern -> 400" "[ \"\$(code '$base/events?topic=a..b')\" = 400 ]"
check "bad Last-Event-ID -> 400" "[ \"\$(code -H 'Last-Event-ID: -1' '$base/events')\" = 400 ]"
check "other path -> 404" "[ \"\$(code '$base/nothing')\" = 404 ]"

# 5. Idle clients (a topic nobody publishes): no thread each and no busy
# loop (a content reader that spun would burn a whole core). The count
# with one client is the baseline: the library's heartbeat thread runs
# only while some client is connected, so each count is taken once the
# clients' headers are in (the server subscribes them before it answers),
# not after a sleep.
if [ -r "/proc/$server/stat" ]; then
    t0=$(date +%s%N)
    c0=$(cpu_ticks)
    subscribe "$tmp/idle0" "$base/events?topic=quiet.topic" 4
    threads_one=$(threads)
    for i in $(seq 9); do
        subscribe "$tmp/idle$i" "$base/events?topic=quiet.topic" 3
    done
    threads_ten=$(threads)
    sleep 0.5
    used=$(( $(cpu_ticks) - c0 ))
    ms=$(( ($(date +%s%N) - t0) / 1000000 ))
    hz=$(getconf CLK_TCK)
    wait_subs
    check "1 -> 10 clients, no more threads ($threads_one -> $threads_ten)" \
        "[ '$threads_ten' -le '$threads_one' ]"
    # Half a core at most over the time measured.
    check "idle clients: no busy loop ($used ticks of CPU in $ms ms)" \
        "[ $((used * 1000)) -lt $((hz * ms / 2)) ]"
else
    skip "idle clients cost no thread and no CPU: no /proc/$server here"
fi

# 6. SIGTERM with a client connected: it gets the shutdown frame and the
# server exits 0 within 2 s.
subscribe "$tmp/b6" "$base/events?topic=ticker.%3E" 10
reader=$sub_pid
if kill -0 "$server" 2>/dev/null; then
    kill -TERM "$server"
    for _ in $(seq 20); do kill -0 "$server" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$server" 2>/dev/null; then
        fail "server exits within 2 s of SIGTERM"
    else
        wait "$server"
        rc=$?
        check "server exits 0 on SIGTERM (exit $rc)" "[ $rc -eq 0 ]"
    fi
else
    fail "server still running before SIGTERM (it stopped early)"
fi
wait "$reader" 2>/dev/null
check "client gets event: disconnect / server shutdown" \
    "frames '$tmp/b6' | tail -1 | grep -qx \"\$(printf '\\tdisconnect\\tserver shutdown')\""
check "server reports the clients it served" \
    "grep -Eq '^served ([5-9]|[1-9][0-9]+) clients' '$tmp/server.out'"
check "server stderr empty" "[ ! -s '$tmp/server.err' ]"
[ -s "$tmp/server.err" ] && sed 's/^/  server: /' "$tmp/server.err"
finish
