#!/usr/bin/env bash
# A real browser against the hub: headless Chromium loads the page at /,
# its EventSource receives events published with POST /publish, and
# tests/browser_check.py reads what the page shows (rows, types, count,
# rate) over the DevTools protocol. Also checks the page from curl.
# Skips, saying so, only when Chromium (Debian package `chromium`) or
# python3 is not installed; in CI (CI=true) that is a failure.
# Usage: tests/test_browser.sh build/evstream
set -u
. "$(dirname "$0")/hub_lib.sh"
here=$(cd "$(dirname "$0")" && pwd)

chromium=""
for c in chromium chromium-browser google-chrome; do
    command -v "$c" >/dev/null && { chromium=$(command -v "$c"); break; }
done
if [ -z "$chromium" ]; then
    skip "the page in headless Chromium: Chromium is not installed (apt-get install chromium)"
    finish
fi
if ! command -v python3 >/dev/null; then
    skip "the page in headless Chromium: python3 is not installed (it drives Chromium)"
    finish
fi
echo "test_browser: $("$chromium" --version 2>/dev/null | head -1)"

start_hub W --heartbeat-ms 1000 || finish
mkdir -p "$tmp/profile"
if timeout 120 python3 "$here/browser_check.py" "$chromium" "$W" "$tmp/profile" >"$tmp/check"; then
    ok "headless Chromium: the page receives and shows published events"
else
    fail "headless Chromium: the page receives and shows published events"
    tail -5 "$tmp/profile/chromium.log" 2>/dev/null | sed 's/^/  chromium: /'
fi
sed 's/^/  /' "$tmp/check"
check "the browser's stream was served (/metrics)" \
    "[ \"\$(metric '$W' evstream_hub_clients_served_total)\" -ge 1 ]"
stop_hub W TERM
finish
