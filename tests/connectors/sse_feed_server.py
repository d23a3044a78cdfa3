"""A Server-Sent Events server for the connector tests: each path serves a
list of events, numbered from 1 (`id: N`), after the client's Last-Event-ID.
It drops connections at random points (sometimes in the middle of an event)
with probability `drop` per event, sends `retry:` first, and once a feed is
exhausted keeps the connection open with heartbeat comments (a live feed).
`requests` records each request's path and Last-Event-ID."""

import http.server
import random
import socketserver
import threading
import time


class FeedServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, feeds, drop=0.0, seed=1, retry_ms=50, port=0, status=200, delay=0.0):
        self.feeds = feeds          # path -> [event text block, ...] (without id:)
        self.drop = drop
        self.rng = random.Random(seed)
        self.retry_ms = retry_ms
        self.status = status        # what every request is answered with
        self.delay = delay          # seconds between events
        self.requests = []
        self.lock = threading.Lock()
        self.stopping = False
        super().__init__(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def port(self):
        return self.server_address[1]

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def roll(self):
        with self.lock:
            return self.rng.random()

    def stop(self):
        self.stopping = True
        self.shutdown()
        self.server_close()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        srv = self.server
        last = self.headers.get("Last-Event-ID")
        with srv.lock:
            srv.requests.append((self.path, last))
        events = srv.feeds.get(self.path)
        if events is None or srv.status != 200:
            self.send_response(404 if events is None else srv.status)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        start = int(last) if last and last.isdigit() else 0
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()  # no length: the stream ends when the connection does
        try:
            self.wfile.write(f"retry: {srv.retry_ms}\n\n".encode())
            for n in range(start + 1, len(events) + 1):
                block = f"id: {n}\n{events[n - 1]}"
                if srv.roll() < srv.drop:
                    if srv.roll() < 0.5:  # cut inside the event
                        self.wfile.write(block[:len(block) // 2].encode())
                        self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(block.encode())
                if srv.delay:
                    self.wfile.flush()
                    time.sleep(srv.delay)
                elif n % 50 == 0:
                    self.wfile.flush()
            self.wfile.flush()
            while not srv.stopping:
                time.sleep(0.2)
                self.wfile.write(b": heartbeat\n\n")
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.close_connection = True


def blocks(text):
    """The event blocks of an SSE text (comment-only blocks dropped), each
    ending with its blank line."""
    out = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        lines = [line for line in block.split("\n") if line and not line.startswith(":")]
        if lines:
            out.append("\n".join(lines) + "\n\n")
    return out
