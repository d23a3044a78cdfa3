"""An HTTP webhook for the sink tests: records every POSTed JSON array;
answers 503 while `down` is set, and 400 to a request holding a message
whose key is in `reject` (so a batch with it is refused, and the message
alone too)."""

import http.server
import json
import socketserver
import threading
import time


class Webhook(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self):
        self.lock = threading.Lock()
        self.requests = []   # each a list of messages, as received (2xx or not)
        self.accepted = []   # messages of the requests answered 2xx, in order
        self.down = False
        self.reject = set()  # keys (JSON values) refused for good
        self.delay = 0.0     # seconds before each answer
        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}/hook"

    def handle_error(self, request, client_address):
        pass  # a client gone mid-answer (cairnd killed by the test)

    def stop(self):
        self.shutdown()
        self.server_close()


def key_of(message):
    if "key" in message:
        return message["key"]
    source = message.get("source")
    return source.get("key") if isinstance(source, dict) else None


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        srv = self.server
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        messages = json.loads(body)
        if isinstance(messages, dict):  # omnia-datapoints: one object per request
            messages = [messages]
        if srv.delay:
            time.sleep(srv.delay)
        with srv.lock:
            srv.requests.append(messages)
            if srv.down:
                code = 503
            elif any(key_of(m) in srv.reject for m in messages):
                code = 400
            else:
                code = 200
                srv.accepted.extend(messages)
        answer = b'{"error":"refused"}' if code == 400 else b"{}"
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)
