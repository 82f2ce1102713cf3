#!/usr/bin/env bash
# Black-box tests of `evstream serve --nats`: hubs sharing topics through
# a real nats-server on a free loopback port, each hub standing in for a
# machine. Core mode: an event published to one hub reaches the clients
# of both, once each (no loops), both ways, with the type kept; a hub on
# another prefix sees none of it; /health and /metrics report the
# bridge. Durable mode (nats-server -js): publishes go through JetStream
# and come back with its sequence as id, the same on every hub, so a
# client resumes on hub B with an id it read from hub A, and a restarted
# hub replays what JetStream retained (nothing missed). Bad option
# combinations exit 2. Without nats-server (or a build without libnats)
# the rest is skipped, saying so; in CI (CI=true) that is a failure.
# EVS_TEST_NATS_SERVER names the nats-server to run (default: the one
# on PATH or in /usr/sbin).
# Usage: tests/test_hub_nats.sh build/evstream
set -u
. "$(dirname "$0")/hub_lib.sh"

# Frames with data in a saved stream, one line each: id <TAB> event <TAB> data.
frames() {
    [ -f "$1" ] || return 0 # curl makes the file with the first bytes
    awk 'BEGIN { RS = ""; FS = "\n"; OFS = "\t" }
         { id = ""; ev = "message"; data = ""; has = 0
           for (i = 1; i <= NF; i++) {
               if ($i ~ /^id: /)    id = substr($i, 5)
               if ($i ~ /^event: /) ev = substr($i, 8)
               if ($i ~ /^data: /)  { data = data (has ? "|" : "") substr($i, 7); has = 1 }
           }
           if (has) print id, ev, data }' "$1"
}
datas() { frames "$1" | cut -f3 | paste -sd' ' -; }
# The id of the frame whose data is $2 in stream file $1.
id_for() { frames "$1" | awk -F'\t' -v d="$2" '$3 == d { print $1; exit }'; }
not_increasing() { awk 'NR > 1 && $1 + 0 <= prev { print; exit } { prev = $1 + 0 }'; }
# Wait (at most 15 s: JetStream under ASan on a loaded machine) until
# stream file $1 holds at least $2 frames with data.
wait_frames() { wait_until 15 "[ \"\$(frames '$1' | wc -l)\" -ge $2 ]"; }
# Wait (at most 20 s) until hub $1's bridge says it is connected and
# ready (/health), so that what its peers export reaches it.
wait_ready() {
    wait_until 20 "curl -s --max-time 5 '$1/health' | grep -q '\"connected\":true,\"ready\":true'" ||
        fail "hub $1: the bridge is connected and ready within 20 s"
}
# End a background subscriber (subscribe's $sub_pid).
end_sub() { kill "$1" 2>/dev/null; wait "$1" 2>/dev/null; }
# A metric's value from a hub's /metrics; "" when absent.
m() { metric "$1" "$2"; }

# ------------------------------------------------------------------ #
# Where nats-server is, and whether this build has the bridge.
nats_bin=${EVS_TEST_NATS_SERVER-$(PATH="$PATH:/usr/sbin:/usr/local/sbin" command -v nats-server)}
[ -n "$nats_bin" ] && [ ! -x "$nats_bin" ] && nats_bin=""
# (A combination refused before anything starts, either way.)
"$bin" serve --port 0 --nats nats://127.0.0.1:1 --nats-durable EVS --nats-export a \
    >/dev/null 2>"$tmp/ns.err"
rc=$?
if grep -q 'not compiled in' "$tmp/ns.err"; then
    check "without libnats: --nats exits 2 saying 'not compiled in'" "[ $rc -eq 2 ]"
    skip "the hub's NATS bridge: this build has no libnats (install libnats-dev, rebuild)"
    finish
fi

# A loopback port nobody listens on now.
free_port() {
    if command -v python3 >/dev/null; then
        python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
    else
        local p
        while :; do
            p=$((20000 + RANDOM % 40000))
            (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
        done
    fi
}

# start_nats NAME [nats-server options]: a nats-server on a free port
# (another port if one was taken meanwhile); sets NAME to its URL.
start_nats() {
    local name=$1 port pid
    shift
    for _ in 1 2 3 4 5; do
        port=$(free_port)
        : >"$tmp/$name.log"
        "$nats_bin" -a 127.0.0.1 -p "$port" "$@" >"$tmp/$name.log" 2>&1 &
        pid=$!
        started+=("$pid")
        # 20 s: generous for a loaded machine (JetStream sets up its
        # store first); a server that exits (port taken) ends it early.
        wait_until 20 "grep -q 'Server is ready' '$tmp/$name.log' || ! kill -0 $pid 2>/dev/null"
        if grep -q 'Server is ready' "$tmp/$name.log"; then
            eval "$name=nats://127.0.0.1:$port; ${name}_pid=$pid"
            return 0
        fi
        kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    fail "nats-server $name starts"
    sed 's/^/  nats-server: /' "$tmp/$name.log" | tail -5
    return 1
}
stop_nats() {
    local pid
    pid=$(eval echo "\$${1}_pid")
    kill -TERM "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
}

# ------------------------------------------------------------------ #
# The command line: bad combinations exit 2 with a message, at once.
url=nats://127.0.0.1:4222
for bad in "--nats-export a.>" "--nats-import a.>" "--nats-durable EVS" "--nats-prefix p" \
           "--nats" "--nats=" \
           "--nats $url --nats-durable EVS --nats-export a.>" \
           "--nats $url --nats-durable EVS --nats-import a.> --nats-import b.>" \
           "--nats $url --nats-durable EVS --nats-prefix=" \
           "--nats $url --nats-durable bad.name" \
           "--nats $url --nats-import a..b" \
           "--nats $url --nats-export a.>.b" \
           "--nats $url --nats-prefix p.*"; do
    # shellcheck disable=SC2086
    "$bin" serve --port 0 $bad >"$tmp/bad.out" 2>"$tmp/bad.err"
    rc=$?
    check "serve $bad: exit 2 with a message" \
        "[ $rc -eq 2 ] && grep -q 'evstream serve: ' '$tmp/bad.err' && [ ! -s '$tmp/bad.out' ]"
done
"$bin" serve --help >"$tmp/help"
check "serve --help lists the --nats options" \
    "for o in --nats --nats-export --nats-import --nats-durable --nats-prefix; do
         grep -q -- \"\$o \" '$tmp/help' || exit 1; done"

if [ -z "$nats_bin" ]; then
    skip "the hub against nats-server: it is not installed (install the Debian package nats-server)"
    finish
fi

# ------------------------------------------------------------------ #
# Core NATS: hubs A and B share every subject under the prefix "evs";
# hub C uses another prefix, so it shares nothing with them.
start_nats N || finish
start_hub A --nats "$N" || finish
start_hub B --nats "$N" || finish
start_hub C --nats "$N" --nats-prefix other || finish
wait_ready "$A"; wait_ready "$B"; wait_ready "$C"
ok "hubs A, B and C listening, bridged through $N"

check "/health with --nats: JSON, connected and ready" \
    "curl -s '$A/health' | grep -q '^{\"status\":\"ok\",\"nats\":{\"mode\":\"core\",\"connected\":true,\"ready\":true,'"

subscribe "$tmp/a1" "$A/events?topic=chat.%3E" 10
a1=$sub_pid
subscribe "$tmp/b1" "$B/events?topic=chat.%3E" 10
b1=$sub_pid
subscribe "$tmp/c1" "$C/events?topic=chat.%3E" 10
c1=$sub_pid
idA=$(publish "$A" chat.room from-a | id_of)
check "publish to A answers its own id" "[ -n '$idA' ]"
wait_frames "$tmp/b1" 1
check "an event published to hub A reaches a client of hub B" "[ \"\$(datas '$tmp/b1')\" = from-a ]"
publish "$B" "chat.room&type=greet" from-b >/dev/null
wait_frames "$tmp/a1" 2
sleep 0.3 # time for a looping copy to show up, were there one
check "hub A's client: its own event and B's, once each, in order" \
    "[ \"\$(datas '$tmp/a1')\" = 'from-a from-b' ]"
check "hub B's client: A's event and its own, once each, in order" \
    "[ \"\$(datas '$tmp/b1')\" = 'from-a from-b' ]"
check "the event type crosses NATS" \
    "[ \"\$(frames '$tmp/a1' | cut -f2 | paste -sd' ' -)\" = 'message greet' ]"
[ "$(datas "$tmp/a1") | $(datas "$tmp/b1")" = 'from-a from-b | from-a from-b' ] ||
    { frames "$tmp/a1" | sed 's/^/  A got: /'; frames "$tmp/b1" | sed 's/^/  B got: /'; }
check "ids are each hub's own, increasing" \
    "[ \"\$(id_for '$tmp/a1' from-a)\" = '$idA' ] &&
     [ -z \"\$(frames '$tmp/b1' | cut -f1 | not_increasing)\" ]"
check "a hub on another prefix sees none of it" \
    "tr -d '\r' <'$tmp/c1.h' | grep -q '^HTTP/1.1 200' && [ -z \"\$(frames '$tmp/c1')\" ] &&
     [ \"\$(m '$C' evstream_nats_imported_total)\" = 0 ]"
end_sub "$a1"; end_sub "$b1"; end_sub "$c1"
check "no loops: A and B each exported 1 event and imported 1" \
    "[ \"\$(m '$A' evstream_nats_exported_total) \$(m '$A' evstream_nats_imported_total)\" = '1 1' ] &&
     [ \"\$(m '$B' evstream_nats_exported_total) \$(m '$B' evstream_nats_imported_total)\" = '1 1' ]"
check "/metrics: the bridge's state and counters" \
    "[ \"\$(m '$A' evstream_nats_connected)\" = 1 ] && [ \"\$(m '$A' evstream_nats_ready)\" = 1 ] &&
     [ \"\$(m '$A' evstream_nats_export_dropped_total)\" = 0 ] &&
     [ \"\$(m '$A' evstream_nats_import_dropped_total)\" = 0 ] &&
     [ \"\$(m '$A' evstream_nats_reconnects_total)\" = 0 ]"
curl -s "$A/metrics" >"$tmp/metrics"
check "/metrics with a bridge: every family has HELP and TYPE, once" \
    "[ \"\$(grep -c '^# TYPE' '$tmp/metrics')\" = \"\$(grep -c '^# HELP' '$tmp/metrics')\" ] &&
     [ -z \"\$(grep '^# TYPE' '$tmp/metrics' | awk '{print \$3}' | sort | uniq -d)\" ]"
stop_hub A TERM
stop_hub B INT
stop_hub C TERM
stop_nats N

# ------------------------------------------------------------------ #
# Durable mode: JetStream. Ids are JetStream sequences, on every hub.
start_nats J -js -sd "$tmp/js" || finish
start_hub JA --nats "$J" --nats-durable EVS || finish
start_hub JB --nats "$J" --nats-durable EVS || finish
wait_ready "$JA"; wait_ready "$JB"
ok "hubs JA and JB listening, mirroring the JetStream stream EVS"
check "/health: durable, connected and ready" \
    "curl -s '$JB/health' | grep -q '^{\"status\":\"ok\",\"nats\":{\"mode\":\"durable\",\"connected\":true,\"ready\":true,'"

subscribe "$tmp/da" "$JA/events?topic=d.%3E" 20
da=$sub_pid
subscribe "$tmp/db" "$JB/events?topic=d.%3E" 10
db=$sub_pid
: >"$tmp/q"
for i in 1 2 3; do publish "$JA" d.x "e$i" -D "$tmp/q.h" >>"$tmp/q"; done
check "durable publish: 202 {\"id\":null,\"queued\":true}" \
    "tr -d '\r' <'$tmp/q.h' | grep -q '^HTTP/1.1 202' &&
     [ \"\$(sort -u '$tmp/q')\" = '{\"id\":null,\"queued\":true}' ]"
check "durable publish of a bad subject: 400" "[ \"\$(code -X POST -d x '$JA/publish?topic=d.*')\" = 400 ]"
wait_frames "$tmp/da" 3; wait_frames "$tmp/db" 3
check "events published to JA reach clients of JA and JB, in order" \
    "[ \"\$(datas '$tmp/da')\" = 'e1 e2 e3' ] && [ \"\$(datas '$tmp/db')\" = 'e1 e2 e3' ]"
check "... with the same ids on both hubs (the JetStream sequences 1, 2, 3)" \
    "[ \"\$(frames '$tmp/da' | cut -f1 | paste -sd' ' -)\" = '1 2 3' ] &&
     [ \"\$(frames '$tmp/db' | cut -f1 | paste -sd' ' -)\" = '1 2 3' ]"
end_sub "$db"

# Resume on JB with the id of an event read from JA.
e1=$(id_for "$tmp/da" e1)
subscribe "$tmp/r1" "$JB/events?topic=d.%3E" 10 -H "Last-Event-ID: $e1"
r1=$sub_pid
wait_frames "$tmp/r1" 2; sleep 0.2
end_sub "$r1"
check "resume on JB with Last-Event-ID from JA: exactly the events after it" \
    "[ \"\$(frames '$tmp/r1' | cut -f1,3 | paste -sd' ' -)\" = \"\$(frames '$tmp/da' | sed 1d | cut -f1,3 | paste -sd' ' -)\" ]"

# The other way: published to JB, read on JA with the next sequence.
publish "$JB" d.y e4 >/dev/null
wait_frames "$tmp/da" 4
check "an event published to JB reaches JA's client with id 4" \
    "[ \"\$(frames '$tmp/da' | sed -n 4p | cut -f1,3)\" = \"\$(printf '4\\te4')\" ]"

# Restart JB; JA goes on meanwhile. After the restart JB has replayed
# JetStream: resuming from it misses nothing.
stop_hub JB TERM
for i in 5 6; do publish "$JA" d.x "e$i" >/dev/null; done
wait_frames "$tmp/da" 6
start_hub JB --nats "$J" --nats-durable EVS || finish
wait_ready "$JB"
e3=$(id_for "$tmp/da" e3)
subscribe "$tmp/r2" "$JB/events?topic=d.%3E" 10 -H "Last-Event-ID: $e3"
r2=$sub_pid
subscribe "$tmp/r3" "$JB/events?topic=d.%3E&last_event_id=0" 10
r3=$sub_pid
wait_frames "$tmp/r2" 3; wait_frames "$tmp/r3" 6; sleep 0.2
end_sub "$r2"; end_sub "$r3"
check "restarted JB, resumed after e3 (read on JA): e4 e5 e6, same ids" \
    "[ \"\$(frames '$tmp/r2' | cut -f1,3 | paste -sd' ' -)\" = \"\$(frames '$tmp/da' | sed 1,3d | cut -f1,3 | paste -sd' ' -)\" ]"
check "restarted JB, resumed from 0: everything JetStream retained" \
    "[ \"\$(frames '$tmp/r3' | cut -f1,3 | paste -sd' ' -)\" = \"\$(frames '$tmp/da' | cut -f1,3 | paste -sd' ' -)\" ]"
check "restarted JB: imported 6, no id mismatch, nothing dropped" \
    "[ \"\$(m '$JB' evstream_nats_imported_total)\" = 6 ] &&
     [ \"\$(m '$JB' evstream_nats_id_mismatches_total)\" = 0 ] &&
     [ \"\$(m '$JB' evstream_nats_import_dropped_total)\" = 0 ]"
end_sub "$da"
stop_hub JA INT
stop_hub JB TERM
stop_nats J

finish
