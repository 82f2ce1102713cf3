#!/usr/bin/env python3
"""A scripted SSE server for tests/test_tail.sh: not our hub, and written
the way other servers write streams (CRLF or CR line ends, comments,
"data:" without a space, ids that persist), to show that `evstream tail`
reads any server.

usage: fake_sse_server.py SCENARIO LOGFILE
  Prints "listening on PORT" (flushed) once it listens on 127.0.0.1.
  Each request is logged to LOGFILE as one line:
      <monotonic seconds> <path> <Last-Event-ID or ->
  SCENARIO:
    stream      1st connection: CRLF frames with retry: 300, then it
                closes; 2nd: lone-CR frames, then stays open
    html        answers 200 text/html
    nocontent   answers 204
    busy        1st connection: 503; then as "stream" 2nd
Responses are HTTP/1.0 without a length: the body ends when the
connection closes.
"""
import http.server
import sys
import time

SCENARIO = sys.argv[1]
LOG = sys.argv[2]
count = 0

FIRST = (b"retry: 300\r\n"
         b": a comment line\r\n"
         b"id: 7\r\n"
         b"data:no space after the colon\r\n"
         b"\r\n"
         b"event: custom\r\n"
         b"data: two\r\n"
         b"data:  lines\r\n"
         b"\r\n"
         b":another comment\r\n"
         b"\r\n")
SECOND = (b"id: 8\r"
          b"data: after the reconnect\r"
          b"\r"
          b"id\r"
          b"data: the id is now empty\r"
          b"\r")


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def log_message(self, *args):
        pass

    def stream(self, body, stay):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        if stay:
            time.sleep(30)

    def do_GET(self):
        global count
        count += 1
        with open(LOG, "a") as f:
            f.write("%.3f %s %s\n" % (time.monotonic(), self.path,
                                      self.headers.get("Last-Event-ID", "-")))
        if SCENARIO == "html":
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<p>not a stream</p>\n")
        elif SCENARIO == "nocontent":
            self.send_response(204)
            self.end_headers()
        elif SCENARIO == "busy" and count == 1:
            self.send_response(503)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(b"busy\n")
        elif count == 1:
            self.stream(FIRST, stay=False)
        else:
            self.stream(SECOND, stay=True)


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True


srv = Server(("127.0.0.1", 0), Handler)
print("listening on %d" % srv.server_address[1], flush=True)
srv.serve_forever()
