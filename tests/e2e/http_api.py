#!/usr/bin/python3
"""cairnd's HTTP API against a real cairnd (--http-listen on a free
loopback port): health, ingest of NDJSON canonical events, an entity and
its history, stats, the error body and status mapping (400 with the record
index, 404, 405, 413), and an auth matrix with 0 unauthorized successes.
Closes with an 'N passed, N failed' line."""

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Cairnd, run_sections  # noqa: E402


def http_port(server):
    path = server.data_dir + ".port.http"
    for _ in range(250):
        if os.path.exists(path):
            return int(open(path).read())
        time.sleep(0.02)
    raise AssertionError("no HTTP port file")


def call(port, method, path, body=None, token=None, headers=None):
    """(status, parsed JSON body or text)."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                 data=body.encode() if isinstance(body, str) else body)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            status, raw, ctype = r.status, r.read(), r.headers.get("Content-Type", "")
    except urllib.error.HTTPError as e:
        status, raw, ctype = e.code, e.read(), e.headers.get("Content-Type", "")
    text = raw.decode()
    return status, (json.loads(text) if ctype.startswith("application/json") else text)


def cli(args, server, *argv):
    import subprocess
    subprocess.run([args.cli, "--server", f"127.0.0.1:{server.port}", *argv], check=True,
                   capture_output=True, env={**os.environ, "CAIRN_TOKEN": "t-admin"})


def ndjson(*events):
    return "".join(json.dumps(e) + "\n" for e in events)


def upsert(key, ts, payload, source="app", collection="account"):
    return {"source": source, "collection": collection, "key": key, "op": "upsert",
            "position": {"timestamp": ts}, "payload": payload}


def endpoints(args, tmp):
    """Every endpoint's success and error paths, with auth off."""
    s = Cairnd(args.cairnd, os.path.join(tmp, "d"), ["--http-listen", "127.0.0.1:0",
                                                      "--max-message-bytes", "100000"])
    port = http_port(s)
    cli(args, s, "source", "add", "app", "--format", "canonical")
    cli(args, s, "source", "add", "contrib", "--format", "bitbroker")
    assert call(port, "GET", "/healthz") == (200, "ok\n")
    assert call(port, "GET", "/readyz") == (200, "ready\n")
    st, r = call(port, "POST", "/v1/ingest?source=app", ndjson(
        upsert(1001, 10, {"plan": "basic", "balance": 1}),
        upsert(1001, 20, {"plan": "gold", "balance": 2}),
        upsert("GB", 30, {"name": "United Kingdom"}, collection="countries")))
    assert st == 200 and r["applied"] == 3 and r["first_seq"] == 1 and r["last_seq"] == 3, r
    st, r = call(port, "POST", "/v1/ingest?source=app&durable=true",
                 ndjson(upsert(1001, 20, {"plan": "gold", "balance": 2})))
    assert st == 200 and r["duplicates"] == 1 and r["applied"] == 0, r
    st, e = call(port, "GET", "/v1/entities/account/1001")
    assert st == 200 and e["document"] == {"plan": "gold", "balance": 2} and e["key"] == 1001, e
    assert e["position"]["timestamp"] == 20 and e["seq"] == 2 and e["source"] == "app", e
    # A string key: its JSON text percent-encoded, or the bare word.
    for path in ["/v1/entities/countries/%22GB%22", "/v1/entities/countries/GB"]:
        st, e = call(port, "GET", path)
        assert st == 200 and e["key"] == "GB" and e["document"]["name"] == "United Kingdom", e
    st, h = call(port, "GET", "/v1/entities/account/1001/history")
    assert st == 200 and [v["seq"] for v in h["versions"]] == [1, 2], h
    assert h["versions"][1]["before"] == {"plan": "basic", "balance": 1} and \
        h["versions"][1]["after"] == {"plan": "gold", "balance": 2}, h
    st, stats = call(port, "GET", "/v1/stats")
    assert st == 200 and stats["last_seq"] == 3 and stats["sources"]["app"]["accepted"] == 3 and \
        stats["sources"]["app"]["duplicates"] == 1, stats

    # Errors: one body shape, one mapping.
    st, err = call(port, "GET", "/v1/entities/account/9999")
    assert st == 404 and err["code"] == "NOT_FOUND" and err["errors"] == [], err
    st, err = call(port, "POST", "/v1/ingest?source=app",
                   ndjson(upsert(1, 1, {"a": 1})) + '{"collection": "account"}\n')
    assert st == 400 and err["code"] == "INVALID_ARGUMENT", err
    assert err["errors"] and err["errors"][0]["index"] == 1, err
    st, err = call(port, "GET", "/v1/entities/account/1001/history/x")
    assert st == 404 and "no such endpoint" in err["message"], err
    st, err = call(port, "POST", "/v1/entities/account/1001")
    assert st == 405 and "GET" in err["message"], err
    st, err = call(port, "POST", "/v1/ingest?source=app&fsync=yes", "")
    assert st == 400 and "fsync" in err["message"], err
    st, err = call(port, "POST", "/v1/ingest", "")
    assert st == 400 and "source is required" in err["message"], err
    st, err = call(port, "POST", "/v1/ingest?source=nope", "")
    assert st == 404 and err["code"] == "NOT_FOUND", err
    st, err = call(port, "POST", "/v1/ingest?source=contrib", "[]")
    assert st == 409 and "sessions" in err["message"], err
    st, err = call(port, "POST", "/v1/ingest?source=app", "x" * 200000)
    assert st == 413 and err["code"] == "RESOURCE_EXHAUSTED", (st, err)
    st, err = call(port, "GET", "/v1/entities/account/%zz")
    assert st == 400 and "percent" in err["message"], err
    # Nothing of the refused requests was stored.
    assert call(port, "GET", "/v1/stats")[1]["last_seq"] == 3
    s.stop()


TOKENS = {"tokens": [
    {"token": "t-admin", "write": ["*"], "read": ["*"], "admin": True},
    {"token": "t-writer", "write": ["app"], "read": []},
    {"token": "t-reader", "read": ["account"]},
    {"token": "t-other", "write": ["other"], "read": ["other"]},
]}


def auth_matrix(args, tmp):
    """Every endpoint x none / malformed / wrong / other-scope / valid:
    0 unauthorized successes, and the valid token succeeds."""
    tokens = os.path.join(tmp, "tokens.json")
    with open(tokens, "w") as f:
        json.dump(TOKENS, f)
    s = Cairnd(args.cairnd, os.path.join(tmp, "d"),
               ["--tokens", tokens, "--http-listen", "127.0.0.1:0"])
    port = http_port(s)
    cli(args, s, "source", "add", "app", "--format", "canonical")
    assert call(port, "POST", "/v1/ingest?source=app", ndjson(upsert(7, 1, {"a": 1})),
                "t-admin")[0] == 200
    cases = [  # method, path, body, the token that may, the tokens that may not
        ("POST", "/v1/ingest?source=app", ndjson(upsert(8, 2, {"a": 2})), "t-writer",
         ["t-reader", "t-other"]),
        ("GET", "/v1/entities/account/7", None, "t-reader", ["t-writer", "t-other"]),
        ("GET", "/v1/entities/account/7/history", None, "t-reader", ["t-writer", "t-other"]),
        ("GET", "/v1/stats", None, "t-admin", ["t-reader", "t-writer", "t-other"]),
    ]
    unauthorized = checked = 0
    for method, path, body, good, others in cases:
        for token, want in [(None, 401), ("t-nope", 401), ("", 401)] + \
                [(t, 403) for t in others]:
            hdr = {"Authorization": "Basic abc"} if token == "" else None
            st, err = call(port, method, path, body, token or None, hdr)
            checked += 1
            if st < 300:
                unauthorized += 1
            assert st == want and err["code"] in ("UNAUTHENTICATED", "PERMISSION_DENIED"), \
                (method, path, token, st, err)
        st, r = call(port, method, path, body, good)
        assert st == 200, (method, path, good, st, r)
    assert unauthorized == 0
    # Health needs no token (probes carry none).
    assert call(port, "GET", "/healthz")[0] == 200
    print(f"  auth: {checked} refused calls, {unauthorized} unauthorized successes")
    s.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cairnd", required=True)
    ap.add_argument("--cli", required=True)
    ap.add_argument("--only")
    args = ap.parse_args()
    run_sections([endpoints, auth_matrix], args)


if __name__ == "__main__":
    main()
