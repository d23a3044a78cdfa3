#!/usr/bin/python3
"""The web console in a real browser: headless Chromium (Debian `chromium`)
driven over the DevTools protocol (Debian `python3-websocket`) against a real
cairnd fed the Debezium fixture flink/debezium-postgres-data-schema-exclude.txt.

Checks that the entity page of product 111 shows its three versions
(insert, update, delete) with the before -> after difference of each, that a
new version committed while the page is open appears live, that the
snapshot browser and the overview show the store's content, and that a
cairnd with tokens refuses the console until a token is given. Saves
screenshots (entity page, overview) under --artifacts. Closes with an
'N passed, N failed' line."""

import base64
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

import websocket

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Cairnd, parse_args, run_sections  # noqa: E402
from http_api import call, cli, http_port  # noqa: E402

FIXTURE = "flink/debezium-postgres-data-schema-exclude.txt"


class Browser:
    """One headless Chromium page, driven over the DevTools protocol."""

    def __init__(self, profile):
        self.proc = subprocess.Popen(
            ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--no-first-run", "--remote-debugging-port=0", "--remote-allow-origins=*",
             f"--user-data-dir={profile}", "--window-size=1280,1000", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = os.path.join(profile, "DevToolsActivePort")
        for _ in range(300):
            if os.path.exists(port_file) and open(port_file).read().strip():
                break
            assert self.proc.poll() is None, "chromium exited at start"
            time.sleep(0.1)
        port = int(open(port_file).read().split()[0])
        pages = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list"))
        page = next(p for p in pages if p["type"] == "page")
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=30)
        self.next_id = 0
        self.send("Page.enable")
        self.send("Runtime.enable")

    def send(self, method, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                assert "error" not in msg, (method, msg)
                return msg["result"]

    def js(self, expression):
        r = self.send("Runtime.evaluate", expression=expression, returnByValue=True,
                      awaitPromise=True)
        assert "exceptionDetails" not in r, (expression, r)
        return r["result"].get("value")

    def open(self, url):
        self.send("Page.navigate", url=url)

    def wait(self, expression, what, timeout=20):
        """Polls until `expression` is truthy; returns its value."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                v = self.js(expression)
            except AssertionError:
                v = None  # the page is still loading
            if v:
                return v
            time.sleep(0.1)
        body = self.js("document.body ? document.body.innerText : ''")
        raise AssertionError(f"timed out waiting for {what}; the page says:\n{body[:2000]}")

    def screenshot(self, path):
        png = self.send("Page.captureScreenshot", format="png")["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(png))
        print(f"  screenshot: {path}")

    def close(self):
        self.ws.close()
        self.proc.terminate()
        self.proc.wait(timeout=30)


def fixture_lines(args):
    return open(os.path.join(args.fixtures, FIXTURE)).read().splitlines(keepends=True)


ROWS = "Array.from(document.querySelectorAll('#timeline tr.version'))"


def timeline(b):
    """The timeline's rows: (seq, op, source, diff rows as (class, path, text))."""
    return b.js(ROWS + """.map(r => [Number(r.cells[0].innerText), r.cells[1].innerText,
        r.cells[3].innerText,
        Array.from(r.cells[4].querySelectorAll('tr')).map(d =>
            [d.className, d.cells[0].innerText, d.innerText])])""")


def entity_page(args, tmp):
    """The entity page shows every version with its difference, and a new
    version live; the snapshot browser and the overview show the store."""
    s = Cairnd(args.cairnd, os.path.join(tmp, "d"), ["--http-listen", "127.0.0.1:0"])
    port = http_port(s)
    cli(args, s, "source", "add", "dbz", "--format", "debezium", "--key", "products=id")
    lines = fixture_lines(args)
    st, r = call(port, "POST", "/v1/ingest?source=dbz", "".join(lines))
    assert st == 200 and r["applied"] == len(lines), r
    st, h = call(port, "GET", "/v1/entities/products/111/history")
    assert st == 200 and [v["op"] for v in h["versions"]] == ["upsert", "upsert", "delete"], h

    b = Browser(os.path.join(tmp, "profile"))
    try:
        base = f"http://127.0.0.1:{port}/console/"
        b.open(base + "#/entity/products/111")
        b.wait(ROWS + ".length === 3", "3 versions of product 111")
        rows = timeline(b)
        assert [(r[0], r[1], r[2]) for r in rows] == \
            [(v["seq"], v["op"], "dbz") for v in h["versions"]], rows
        # The insert adds every field; the update changes weight (and only
        # it); the delete removes every field.
        v1, v2, v3 = h["versions"]
        assert {d[1] for d in rows[0][3]} == set(v1["after"]) and \
            all(d[0] == "added" for d in rows[0][3]), rows[0]
        changed = {k for k in v2["after"] if v2["after"][k] != v2["before"][k]}
        assert {d[1] for d in rows[1][3]} == changed and \
            all(d[0] == "changed" for d in rows[1][3]), (rows[1], changed)
        assert {d[1] for d in rows[2][3]} == set(v3["before"]) and \
            all(d[0] == "removed" for d in rows[2][3]), rows[2]
        assert "5.17" in rows[1][3][0][2] and "5.18" in rows[1][3][0][2], rows[1]

        # Product 110 has two versions; a third commits while its page is open.
        b.open(base + "#/entity/products/110")
        b.wait(ROWS + ".length === 2", "2 versions of product 110")
        b.wait("document.getElementById('status').innerText.includes('caught up')",
               "the live subscription")
        update = json.loads(lines[13])  # u 110
        update["before"], update["after"] = update["after"], dict(update["after"], weight=0.75)
        update["source"]["lsn"] += 1000
        update["ts_ms"] += 1000
        update["source"]["ts_ms"] += 1000
        st, r = call(port, "POST", "/v1/ingest?source=dbz", json.dumps(update) + "\n")
        assert st == 200 and r["applied"] == 1, r
        b.wait(ROWS + ".length === 3", "the live version of product 110")
        live = timeline(b)[2]
        assert live[0] == r["last_seq"] and live[1] == "upsert", live
        assert live[3] == [["changed", "weight", live[3][0][2]]] and "0.75" in live[3][0][2], live
        assert '"weight":0.75' in b.js("document.body.innerText")  # "Now:" follows
        b.screenshot(os.path.join(args.artifacts, "console-entity.png"))

        # The snapshot browser: products 101-110 with their documents.
        b.open(base + "#/snapshot?collection=products")
        b.wait("document.querySelectorAll('#snapshot tbody tr').length === 10", "10 products")
        keys = b.js("Array.from(document.querySelectorAll('#snapshot tbody tr'))"
                    ".map(r => r.cells[1].innerText)")
        assert keys == [str(k) for k in range(101, 111)], keys
        assert "As of seq" in b.js("document.body.innerText")

        # The overview: the source with its counters.
        b.open(base)
        b.wait("!!document.getElementById('last-seq')", "the overview")
        text = b.js("document.body.innerText")
        assert f"Last seq {r['last_seq']}" in text, text
        src = b.js("Array.from(document.querySelectorAll('table')[0].rows[1].cells)"
                   ".map(c => c.innerText)")
        assert src[:3] == ["dbz", "debezium", str(len(lines) + 1)], src
        b.screenshot(os.path.join(args.artifacts, "console-overview.png"))
    finally:
        b.close()
    s.stop()


def with_tokens(args, tmp):
    """With --tokens, the console shows the refusal until a token is given;
    then the page and its live subscription (?access_token=) work."""
    tokens = os.path.join(tmp, "tokens.json")
    with open(tokens, "w") as f:
        json.dump({"tokens": [{"token": "t-admin", "write": ["*"], "read": ["*"],
                               "admin": True}]}, f)
    s = Cairnd(args.cairnd, os.path.join(tmp, "d"),
               ["--tokens", tokens, "--http-listen", "127.0.0.1:0"])
    port = http_port(s)
    cli(args, s, "source", "add", "dbz", "--format", "debezium", "--key", "products=id")
    lines = fixture_lines(args)
    assert call(port, "POST", "/v1/ingest?source=dbz", "".join(lines), "t-admin")[0] == 200
    b = Browser(os.path.join(tmp, "profile"))
    try:
        b.open(f"http://127.0.0.1:{port}/console/#/entity/products/111")
        msg = b.wait("document.querySelector('.error') && "
                     "document.querySelector('.error').innerText", "the refusal")
        assert "401" in msg and "UNAUTHENTICATED" in msg, msg
        b.js("document.getElementById('token').value = 't-admin';"
             "document.getElementById('token-form').requestSubmit(); true")
        b.wait(ROWS + ".length === 3", "3 versions with the token")
        b.wait("document.getElementById('status').innerText.includes('caught up')",
               "the live subscription with ?access_token=")
    finally:
        b.close()
    s.stop()


def main():
    args = parse_args(("--artifacts", {"default": tempfile.gettempdir()}))
    os.makedirs(args.artifacts, exist_ok=True)
    run_sections([entity_page, with_tokens], args)


if __name__ == "__main__":
    main()
