#!/usr/bin/env python3
"""Drive headless Chromium against the hub's page, for tests/test_browser.sh.

usage: browser_check.py CHROMIUM HUB_URL PROFILE_DIR

Chromium is controlled over the DevTools protocol on a pipe
(--remote-debugging-pipe: fd 3 in, fd 4 out, messages NUL-separated), so
nothing but the standard library is needed. --dump-dom cannot do this
job: it prints the page at its load event, before any event arrives,
and --virtual-time-budget never ends while an EventSource is open.

The page is loaded with ?topic=browser.> ; then events are published
with POST /publish and the script reads what the page shows: its
connection state, the rows of the event table (id, type, data), the
count and the rate. Prints "ok ..." / "FAIL ..." lines; exit 0 when all
passed.
"""
import fcntl
import json
import os
import subprocess
import sys
import time
import urllib.request

CHROMIUM, HUB, PROFILE = sys.argv[1], sys.argv[2].rstrip("/"), sys.argv[3]
failures = 0


def report(ok, what):
    global failures
    print(("ok   " if ok else "FAIL ") + what, flush=True)
    if not ok:
        failures += 1


def publish(topic, data, typ=None):
    url = HUB + "/publish?topic=" + topic + ("&type=" + typ if typ else "")
    req = urllib.request.Request(url, data=data.encode(), method="POST")
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read())["id"]


def high(fd):
    new = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return new


class Browser:
    def __init__(self):
        # Chromium's ends, moved above 3 and 4 so that putting them there
        # in the child cannot overwrite one with the other.
        to_chrome_r, self.to_chrome = os.pipe()
        self.from_chrome, from_chrome_w = os.pipe()
        to_chrome_r = high(to_chrome_r)
        from_chrome_w = high(from_chrome_w)

        def fds():
            os.dup2(to_chrome_r, 3)
            os.dup2(from_chrome_w, 4)

        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
             "--disable-dev-shm-usage", "--no-first-run", "--remote-debugging-pipe",
             "--user-data-dir=" + PROFILE, "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(PROFILE, "chromium.log"), "w"),
            close_fds=False, preexec_fn=fds)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self.buf = b""
        self.next_id = 0
        self.session = None

    def call(self, method, params=None, timeout=20):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if self.session:
            msg["sessionId"] = self.session
        os.write(self.to_chrome, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            while b"\0" not in self.buf:
                chunk = os.read(self.from_chrome, 65536)
                if not chunk:
                    raise RuntimeError("chromium closed the pipe")
                self.buf += chunk
            raw, self.buf = self.buf.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError("%s: %s" % (method, reply["error"]))
                return reply.get("result", {})
        raise RuntimeError(method + ": no answer")

    def open(self, url):
        target = self.call("Target.createTarget", {"url": url})["targetId"]
        self.session = self.call("Target.attachToTarget",
                                 {"targetId": target, "flatten": True})["sessionId"]

    def page(self):
        expr = """JSON.stringify({
            status: document.getElementById('status').textContent,
            count: +document.getElementById('count').textContent,
            rate: +document.getElementById('rate').textContent,
            rows: Array.from(document.querySelectorAll('#log tr')).map(
                r => Array.from(r.cells).map(c => c.textContent))})"""
        r = self.call("Runtime.evaluate", {"expression": expr, "returnByValue": True})
        value = r.get("result", {}).get("value")
        if value is None:  # not loaded yet: the elements are not there
            return {"status": "loading", "count": 0, "rate": 0, "rows": []}
        return json.loads(value)

    def close(self):
        try:
            self.session = None
            self.call("Browser.close", timeout=5)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def wait_for(browser, cond, seconds):
    deadline = time.monotonic() + seconds
    state = browser.page()
    while not cond(state) and time.monotonic() < deadline:
        time.sleep(0.1)
        state = browser.page()
    return state


def main():
    # A custom type the hub has seen before the page loads: the page
    # learns it from /types and listens for it.
    publish("browser.warmup", "warm", "order")
    b = Browser()
    try:
        b.open(HUB + "/?topic=browser.%3E")
        state = wait_for(b, lambda s: s["status"] == "open", 20)
        report(state["status"] == "open", "the page's EventSource opens (%s)" % state["status"])
        # Probes of type "order" until one shows: then the page both is
        # subscribed and has learnt the type from its first /types poll
        # (a fixed sleep raced that poll on a loaded machine). Their
        # topic matches the page's, their data no check looks for.
        shown = False
        for i in range(1, 51):
            publish("browser.probe", "probe-%d" % i, "order")
            state = wait_for(b, lambda s: any(r[2].startswith("probe-") for r in s["rows"]), 0.4)
            if any(r[2].startswith("probe-") for r in state["rows"]):
                shown = True
                break
        report(shown, "the page is live and listens for the type 'order' (a probe shows)")

        ids = [publish("browser.test", "marker-%d <b>not markup</b>" % i) for i in range(1, 4)]
        ids.append(publish("browser.orders", '{"order":42}', "order"))
        publish("elsewhere.topic", "must not show")
        want = {("marker-%d <b>not markup</b>" % i) for i in range(1, 4)} | {'{"order":42}'}
        state = wait_for(b, lambda s: want <= {r[2] for r in s["rows"]}, 10)
        rows = state["rows"]
        seen = {r[2] for r in rows}
        report(want <= seen, "the page shows the published events (%d rows)" % len(rows))
        report("must not show" not in seen, "... only those matching its topic")
        by_data = {r[2]: r for r in rows}
        report(all(by_data.get("marker-%d <b>not markup</b>" % i, [None, None])[:2] ==
                   [ids[i - 1], "message"] for i in range(1, 4)),
               "... with their ids and type message")
        report(by_data.get('{"order":42}', [None, None])[:2] == [ids[3], "order"],
               "... and a custom type learnt from /types")
        report(state["count"] >= 4, "the page counts them (%d)" % state["count"])

        # The rate: 10 events a second for 2.5 s; the page shows events/s.
        best = 0
        for i in range(25):
            publish("browser.rate", "r%d" % i)
            time.sleep(0.1)
            if i % 5 == 4:
                best = max(best, b.page()["rate"])
        report(5 <= best <= 20, "the page shows the event rate (%d events/s)" % best)
    finally:
        b.close()
    return 1 if failures else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as e:  # a broken browser is a failed test, said plainly
        print("FAIL the browser check: %s" % e, flush=True)
        sys.exit(1)
