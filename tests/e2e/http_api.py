#!/usr/bin/python3
"""cairnd's HTTP API against a real cairnd (--http-listen on a free
loopback port): health, ingest of NDJSON canonical events, an entity and
its history, stats, the error body and status mapping (400 with the record
index, 404, 405, 413), and an auth matrix with 0 unauthorized successes.
Closes with an 'N passed, N failed' line."""

import http.client
import json
import os
import sys
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Cairnd, parse_args, run_sections  # noqa: E402


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

    # /metrics parses as Prometheus text and agrees with the stats.
    from prometheus_client.parser import text_string_to_metric_families
    st, text = call(port, "GET", "/metrics")
    text = text if isinstance(text, str) else json.dumps(text)
    assert st == 200, (st, text)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    events = {(x.labels["source"], x.labels["outcome"]): x.value
              for x in families["cairn_source_events"].samples}
    assert events[("app", "accepted")] == 3 and events[("app", "duplicate")] == 1, events
    assert families["cairn_last_seq"].samples[0].value == 3
    assert families["process_resident_memory_bytes"].samples[0].value > 1 << 20
    for name in ["cairn_memtable_bytes", "cairn_block_cache_usage_bytes", "cairn_sst_bytes",
                 "cairn_pending_compaction_bytes", "cairn_commits", "cairn_http_sse_streams",
                 "cairn_block_cache_hits", "cairn_block_cache_misses", "cairn_subscriptions",
                 "cairn_subscription_max_lag_seqs"]:
        assert name in families, (name, sorted(families))
    # Histograms: the two ingest batches; one commit with fsync (durable=true).
    for name, labels, want in [("cairn_ingest_latency_seconds", {}, 2),
                               ("cairn_commit_latency_seconds", {"sync": "true"}, 1),
                               ("cairn_commit_latency_seconds", {"sync": "false"}, 1)]:
        samples = [x for x in families[name].samples
                   if all(x.labels.get(k) == v for k, v in labels.items())]
        buckets = [x.value for x in samples if x.name.endswith("_bucket")]
        count = [x.value for x in samples if x.name.endswith("_count")]
        assert count == [want] and buckets[-1] == want, (name, labels, samples)
        assert buckets == sorted(buckets) and len(buckets) == 16, (name, buckets)
        assert [x.labels["le"] for x in samples if x.name.endswith("_bucket")][-1] == "+Inf"
    assert 0 <= families["cairn_block_cache_hit_ratio"].samples[0].value <= 1

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
    # Without ?source=, canonical events that each name their source.
    st, err = call(port, "POST", "/v1/ingest", ndjson(upsert(1, 1, {"a": 1}),
                                                      {**upsert(2, 1, {"a": 2}), "source": None}))
    assert st == 400 and err["errors"][0]["index"] == 1, err
    assert err["errors"][0]["field"] == "source", err
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
    st, r = call(port, "POST", "/v1/ingest", ndjson(upsert(2002, 40, {"plan": "basic"}),
                                                    upsert(2003, 41, {"x": 1}, source="feed")))
    assert st == 200 and r["applied"] == 2 and r["last_seq"] == 5, r

    # Other sites' pages (a browser's requests) are refused; the console's
    # own and programs' pass.
    own = f"http://127.0.0.1:{port}"
    for headers in [{"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"},
                    {"Origin": "http://evil.example"}, {"Origin": f"{own}0"},
                    {"Host": f"evil.example:{port}"}]:
        st, err = call(port, "POST", "/v1/ingest", ndjson(upsert(3, 50, {"x": 3})),
                       headers=headers)
        assert st == 403 and err["code"] == "PERMISSION_DENIED", (headers, st, err)
        assert call(port, "GET", "/v1/connector/x/session/s/close/true",
                    headers=headers)[0] == 403, headers
    for headers in [{"Sec-Fetch-Site": "same-origin", "Origin": own}, {"Sec-Fetch-Site": "none"},
                    {"Host": f"localhost:{port}"}]:
        assert call(port, "GET", "/v1/stats", headers=headers)[0] == 200, headers
    assert call(port, "GET", "/v1/stats")[1]["last_seq"] == 5  # nothing refused was stored

    # Query values decode '+' as a space (URLSearchParams, HTML forms).
    assert call(port, "POST", "/v1/ingest?source=app", ndjson(
        upsert("New York", 60, {"state": "NY"}, collection="cities")))[0] == 200
    sub = Sse(port, "/v1/subscribe?collection=cities&key=%22New+York%22&from=beginning")
    e = sub.next()
    assert e[0] == "change" and e[2]["key"] == "New York", e
    sub.close()
    s.stop()


def admin_endpoints(args, tmp):
    """Sources, checkpoints, connectors, sinks, subscriptions and the
    console's files."""
    s = Cairnd(args.cairnd, os.path.join(tmp, "d"), ["--http-listen", "127.0.0.1:0"])
    port = http_port(s)
    cli(args, s, "source", "add", "app", "--format", "canonical")
    cli(args, s, "source", "add", "gg", "--format", "goldengate", "--key", "orders=id",
        "--map", "SHOP.ORDERS=orders")
    assert call(port, "POST", "/v1/ingest?source=app", ndjson(
        *[upsert(k, k, {"v": k}) for k in (1, 2, 3)]))[0] == 200
    st, r = call(port, "GET", "/v1/sources")
    assert st == 200 and [x["name"] for x in r["sources"]] == ["app", "gg"], r
    app = r["sources"][0]
    assert app["format"] == "canonical" and app["stats"]["accepted"] == 3, app
    assert app["stats"]["position"]["timestamp"] == 3, app
    st, gg = call(port, "GET", "/v1/sources/gg")
    assert st == 200 and gg["key_fields"] == {"orders": ["id"]}, gg
    assert gg["collection_map"] == {"SHOP.ORDERS": "orders"} and gg["stats"]["accepted"] == 0, gg
    assert call(port, "GET", "/v1/sources/nope")[0] == 404

    # Checkpoints: create, read, move, list, subscribe from, delete.
    st, cp = call(port, "PUT", "/v1/checkpoints/c1", '{"seq": 2, "collections": ["account"]}')
    assert st == 200 and cp == {"name": "c1", "seq": 2, "collections": ["account"]}, cp
    assert call(port, "GET", "/v1/checkpoints/c1") == (200, cp)
    sub = Sse(port, "/v1/subscribe?checkpoint=c1")
    got = sub.until("caught_up")
    assert [e[1] for e in got if e[0] == "change"] == [3], got
    st, subs = call(port, "GET", "/v1/subscriptions")
    assert st == 200 and subs["last_seq"] == 3, subs
    assert [(x["delivered_seq"], x["lag_seqs"]) for x in subs["subscriptions"]] == [(3, 0)], subs
    assert subs["subscriptions"][0]["id"].startswith("sse-"), subs
    sub.close()
    assert call(port, "PUT", "/v1/checkpoints/c1", '{"seq": 3}')[0] == 200
    st, all_ = call(port, "GET", "/v1/checkpoints")
    assert st == 200 and all_["checkpoints"] == [{"name": "c1", "seq": 3,
                                                  "collections": ["account"]}], all_
    for body, field in [('{"seq": 99}', "seq"), ('{"seq": -1}', "seq"), ("[]", "body"),
                        ('{"seq": 1, "collections": [1]}', "collections[0]")]:
        st, err = call(port, "PUT", "/v1/checkpoints/c2", body)
        assert st == 400 and field in err["message"], (body, err)
    assert call(port, "PUT", "/v1/checkpoints/bad%01name", '{"seq": 1}')[0] == 400
    assert call(port, "POST", "/v1/checkpoints/c1", "{}")[0] == 405
    assert call(port, "DELETE", "/v1/checkpoints/c1") == (200, {})
    assert call(port, "GET", "/v1/checkpoints/c1")[0] == 404
    assert call(port, "DELETE", "/v1/checkpoints/c1")[0] == 404
    st, err = call(port, "GET", "/v1/subscribe?checkpoint=c1")
    assert st == 404, err

    assert call(port, "GET", "/v1/connectors") == (200, {"connectors": []})
    assert call(port, "GET", "/v1/sinks") == (200, {"sinks": []})

    # The console: / redirects; the files are built into cairnd.
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/")
    r = conn.getresponse()
    assert r.status == 302 and r.getheader("Location") == "/console/", r.status
    conn.close()
    st, page = call(port, "GET", "/console/")
    assert st == 200 and '<script src="/console/app.js">' in page, page[:200]
    st, js = call(port, "GET", "/console/app.js")
    assert st == 200 and "EventSource" in js
    assert call(port, "GET", "/console/nope.js")[0] == 404
    s.stop()


class Sse:
    """A Server-Sent Events stream: events as (event, id, data) in order."""

    def __init__(self, port, path, token=None, last_event_id=None):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        headers = {}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        self.conn.request("GET", path, headers=headers)
        self.resp = self.conn.getresponse()
        self.status = self.resp.status
        self.comments = 0

    def next(self):
        event, eid, data = "message", None, []
        while True:
            line = self.resp.readline()
            assert line, "the stream ended"
            line = line.decode().rstrip("\n")
            if line == "":
                if data:
                    return event, eid, json.loads("\n".join(data))
                continue
            if line.startswith(":"):
                self.comments += 1
                continue
            field, _, value = line.partition(": ")
            if field == "event":
                event = value
            elif field == "id":
                eid = int(value)
            elif field == "data":
                data.append(value)

    def until(self, kind):
        got = []
        while True:
            e = self.next()
            got.append(e)
            if e[0] == kind:
                return got

    def close(self):
        self.conn.close()


def subscriptions(args, tmp):
    """GET /v1/subscribe as Server-Sent Events: changes with id = seq, live;
    a snapshot then its end then changes; heartbeats; and a client that
    reconnects with Last-Event-ID across a cairnd restart gets exactly what
    followed, no gap and no duplicate."""
    s = Cairnd(args.cairnd, os.path.join(tmp, "d"), ["--http-listen", "127.0.0.1:0"])
    port = http_port(s)
    cli(args, s, "source", "add", "app", "--format", "canonical")
    post = lambda *evs: call(port, "POST", "/v1/ingest?source=app", ndjson(*evs))  # noqa: E731
    assert post(*[upsert(k, k, {"v": k}) for k in (1, 2, 3)])[0] == 200
    sub = Sse(port, "/v1/subscribe?collection=account&from=beginning")
    assert sub.status == 200 and sub.resp.getheader("Content-Type") == "text/event-stream"
    got = sub.until("caught_up")
    changes = [e for e in got if e[0] == "change"]
    assert [e[1] for e in changes] == [1, 2, 3] and changes[0][2]["after"] == {"v": 1}, got
    assert changes[0][2]["op"] == "upsert" and changes[0][2]["key"] == 1, got
    assert post(upsert(4, 4, {"v": 4}))[0] == 200
    e = sub.next()
    assert e[0] == "change" and e[1] == 4 and e[2]["collection"] == "account", e
    sub.close()

    snap = Sse(port, "/v1/subscribe?collection=account&from=snapshot")
    got = snap.until("snapshot_end")
    assert [e[2]["key"] for e in got if e[0] == "snapshot"] == [1, 2, 3, 4], got
    assert got[-1][1] == 4 and got[-1][2]["seq"] == 4, got
    snap.close()

    beat = Sse(port, "/v1/subscribe?collection=none&heartbeat_ms=200")
    beat.resp.readline()  # the first heartbeat comment (nothing matches the filter)
    beat.close()

    # Resume: the client saw up to id 4; cairnd restarts; 2 more commits.
    s.stop()
    s.start()
    port = http_port(s)
    assert post(upsert(5, 5, {"v": 5}), upsert(6, 6, {"v": 6}))[0] == 200
    again = Sse(port, "/v1/subscribe?collection=account&from=beginning", last_event_id=4)
    got = again.until("caught_up")
    assert [e[1] for e in got if e[0] == "change"] == [5, 6], got
    again.close()
    st, err = call(port, "GET", "/v1/subscribe?from=later")
    assert st == 400 and "from=later" in err["message"], err
    st, err = call(port, "GET", "/v1/subscribe", headers={"Last-Event-ID": "x"})
    assert st == 400 and "Last-Event-ID" in err["message"], err
    st, err = call(port, "GET", "/v1/subscribe?from=99")
    assert st == 410 and err["code"] == "OUT_OF_RANGE", err
    s.stop()


def snapshots(args, tmp):
    """GET /v1/snapshot: NDJSON in key order, as of a seq, over many chunks,
    the consistent seq in a header, on a keep-alive connection."""
    s = Cairnd(args.cairnd, os.path.join(tmp, "d"), ["--http-listen", "127.0.0.1:0"])
    port = http_port(s)
    cli(args, s, "source", "add", "app", "--format", "canonical")
    n = 5000
    body = ndjson(*[upsert(k, k, {"v": k, "pad": "x" * 100}) for k in range(1, n + 1)])
    assert call(port, "POST", "/v1/ingest?source=app", body)[0] == 200
    assert call(port, "POST", "/v1/ingest?source=app", ndjson(upsert(1, n + 1, {"v": -1})))[0] == 200
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/v1/snapshot?collection=account")
    r = conn.getresponse()
    assert r.status == 200 and r.getheader("Content-Type") == "application/x-ndjson"
    assert r.getheader("X-Cairn-Snapshot-Seq") == str(n + 1)
    lines = [json.loads(line) for line in r.read().decode().splitlines()]
    assert [e["key"] for e in lines] == list(range(1, n + 1)), "not every entity in key order"
    assert lines[0]["document"] == {"v": -1}, lines[0]
    # The same connection, as of seq 1: entity 1 as it was then.
    conn.request("GET", "/v1/snapshot?collection=account&as_of_seq=1")
    r = conn.getresponse()
    lines = [json.loads(line) for line in r.read().decode().splitlines()]
    assert r.getheader("X-Cairn-Snapshot-Seq") == "1" and len(lines) == 1 and \
        lines[0]["document"]["v"] == 1, lines
    conn.close()
    st, err = call(port, "GET", "/v1/snapshot?as_of=3")
    assert st == 400 and "as_of=3" in err["message"], err
    st, err = call(port, "GET", "/v1/snapshot?as_of_seq=999999")
    assert st == 410 and err["code"] == "OUT_OF_RANGE", (st, err)
    s.stop()


def idle_streams(args, tmp):
    """200 idle SSE clients cost cairnd little memory (one chunk each at
    most, no thread each)."""
    s = Cairnd(args.cairnd, os.path.join(tmp, "d"), ["--http-listen", "127.0.0.1:0"])
    port = http_port(s)

    def rss():
        for line in open(f"/proc/{s.proc.pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])

    def threads():
        for line in open(f"/proc/{s.proc.pid}/status"):
            if line.startswith("Threads:"):
                return int(line.split()[1])

    before, threads_before = rss(), threads()
    streams = [Sse(port, "/v1/subscribe?from=now&heartbeat_ms=60000") for _ in range(200)]
    assert all(x.status == 200 for x in streams)
    time.sleep(0.5)
    grew, more_threads = rss() - before, threads() - threads_before
    for x in streams:
        x.close()
    print(f"  200 idle SSE streams: RSS +{grew} kB, +{more_threads} threads")
    assert grew < 20 * 1024 and more_threads <= 2, (grew, more_threads)
    s.stop()


def bitbroker_curl(args, tmp):
    """BitBroker's contribution calls with curl, as its documentation writes
    them (x-bbk-auth-token; GET open, POST upsert, POST delete, GET close),
    in the three modes, on the seed records; every validation error in one
    400; an invalid, old or mismatched session id is 403 and the open
    session goes on."""
    import subprocess
    tokens = os.path.join(tmp, "tokens.json")
    with open(tokens, "w") as f:
        json.dump({"tokens": [{"token": "t-admin", "write": ["*"], "read": ["*"], "admin": True},
                              {"token": "bbk", "write": ["geo", "geo2"], "read": []}]}, f)
    s = Cairnd(args.cairnd, os.path.join(tmp, "d"),
               ["--tokens", tokens, "--http-listen", "127.0.0.1:0"])
    port = http_port(s)
    cli(args, s, "source", "add", "geo", "--format", "bitbroker", "--default-collection", "countries")
    cli(args, s, "source", "add", "geo2", "--format", "bitbroker")
    base = f"http://127.0.0.1:{port}/v1/connector/geo/session"
    upsert_file = os.path.join(args.fixtures, "seeds", "bitbroker-upsert.json")
    delete_file = os.path.join(args.fixtures, "seeds", "bitbroker-delete.json")

    def curl(url, *extra):
        p = subprocess.run(["curl", "-s", "-w", "\n%{http_code}", url,
                            "--header", "x-bbk-auth-token: bbk", *extra],
                           capture_output=True, text=True, timeout=30)
        body, _, code = p.stdout.rpartition("\n")
        return int(code), body

    def post(url, data):
        return curl(url, "--request", "POST", "--header", "Content-Type: application/json",
                    "--data", data)

    def countries():
        return sorted(e["key"] for e in cli_lines(args, s, "snapshot", "--collection", "countries"))

    # stream: each call visible as made; after upsert then delete only IN.
    code, sid = curl(f"{base}/open/stream")
    assert code == 200 and len(sid) >= 16, (code, sid)
    code, report = post(f"{base}/{sid}/upsert", f"@{upsert_file}")
    assert code == 200 and json.loads(report) == {"GB": "GB", "IN": "IN", "BR": "BR"}, report
    assert countries() == ["BR", "GB", "IN"]
    code, report = post(f"{base}/{sid}/delete", f"@{delete_file}")
    assert code == 200 and json.loads(report) == {"GB": "GB", "BR": "BR"}, report
    assert curl(f"{base}/{sid}/close/true")[0] == 200
    assert countries() == ["IN"]
    # The old id is refused, and touches nothing.
    assert curl(f"{base}/{sid}/close/true")[0] == 403
    assert post(f"{base}/{sid}/upsert", f"@{upsert_file}")[0] == 403
    assert countries() == ["IN"]

    # accrue: nothing visible until close/true; close/false drops it.
    code, sid = curl(f"{base}/open/accrue")
    assert post(f"{base}/{sid}/upsert", f"@{upsert_file}")[0] == 200
    assert countries() == ["IN"]
    # An invalid id, and one of another connector: 403, the session goes on.
    _, other = curl(f"http://127.0.0.1:{port}/v1/connector/geo2/session/open/stream")
    assert post(f"{base}/{other}/upsert", f"@{upsert_file}")[0] == 403
    assert post(f"{base}/0123456789abcdef0123456789abcdef/delete", '["IN"]')[0] == 403
    assert curl(f"{base}/not-a-session/close/true")[0] == 403
    assert curl(f"{base}/{sid}/close/true")[0] == 200
    assert countries() == ["BR", "GB", "IN"]

    # replace: the session's records become the whole collection for geo.
    code, sid = curl(f"{base}/open/replace")
    in_only = json.dumps([r for r in json.load(open(upsert_file)) if r["id"] == "IN"])
    assert post(f"{base}/{sid}/upsert", in_only)[0] == 200
    assert countries() == ["BR", "GB", "IN"]
    assert curl(f"{base}/{sid}/close/true")[0] == 200
    assert countries() == ["IN"]

    # Every validation error at once, and nothing staged.
    code, sid = curl(f"{base}/open/stream")
    code, body = post(f"{base}/{sid}/upsert",
                      '[{"id":"FR","name":"France","entity":{}},{"name":"x","entity":{}},'
                      '{"id":"DE","name":"Germany","entity":[]}]')
    err = json.loads(body)
    assert code == 400 and [e["index"] for e in err["errors"]] == [1, 2], err
    assert countries() == ["IN"]
    # A token without the grant, and none.
    assert subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                           f"{base}/open/stream"], capture_output=True,
                          text=True).stdout == "401"
    print("  bitbroker: stream, accrue and replace sessions through curl as documented")
    s.stop()


def cli_lines(args, server, *argv):
    import subprocess
    p = subprocess.run([args.cli, "--server", f"127.0.0.1:{server.port}", *argv], check=True,
                       capture_output=True, text=True, env={**os.environ, "CAIRN_TOKEN": "t-admin"})
    return [json.loads(line) for line in p.stdout.splitlines() if line.strip()]


TOKENS = {"tokens": [
    {"token": "t-admin", "write": ["*"], "read": ["*"], "admin": True},
    {"token": "t-writer", "write": ["app"], "read": []},
    {"token": "t-reader", "read": ["account"]},
    {"token": "t-other", "write": ["other"], "read": ["other"]},
]}


def make_certs(tmp):
    """A CA, a server certificate for 127.0.0.1 and a client certificate,
    with the openssl command line; their paths by name."""
    import subprocess
    p = {n: os.path.join(tmp, n) for n in ["ca.key", "ca.pem", "srv.key", "srv.csr", "srv.pem",
                                          "cli.key", "cli.csr", "cli.pem", "ext"]}
    with open(p["ext"], "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\n")

    def ssl(*argv):
        subprocess.run(["openssl", *argv], check=True, capture_output=True)
    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", p["ca.key"], "-out", p["ca.pem"],
        "-days", "2", "-subj", "/CN=cairn test CA")
    for who, cn in [("srv", "127.0.0.1"), ("cli", "client")]:
        ssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", p[f"{who}.key"], "-out",
            p[f"{who}.csr"], "-subj", f"/CN={cn}")
        ssl("x509", "-req", "-in", p[f"{who}.csr"], "-CA", p["ca.pem"], "-CAkey", p["ca.key"],
            "-CAcreateserial", "-out", p[f"{who}.pem"], "-days", "2",
            *(["-extfile", p["ext"]] if who == "srv" else []))
    return p


def tls(args, tmp):
    """--tls-cert/--tls-key serve the HTTP API over HTTPS (plain HTTP is
    refused); --tls-client-ca asks for a client certificate; an HTTP listener
    off loopback without tokens or TLS is refused at start."""
    import ssl
    import subprocess
    c = make_certs(tmp)
    s = Cairnd(args.cairnd, os.path.join(tmp, "d"), ["--http-listen", "127.0.0.1:0",
                                                      "--tls-cert", c["srv.pem"],
                                                      "--tls-key", c["srv.key"]])
    port = http_port(s)
    ctx = ssl.create_default_context(cafile=c["ca.pem"])

    def https(method, path, body=None, context=ctx):
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=context)
        conn.request(method, path, body=body)
        r = conn.getresponse()
        out = r.status, r.read().decode()
        conn.close()
        return out
    assert https("GET", "/healthz") == (200, "ok\n")
    st, body = https("POST", "/v1/ingest", ndjson(upsert(1, 1, {"a": 1})))
    assert st == 200 and json.loads(body)["applied"] == 1, body
    st, body = https("GET", "/v1/entities/account/1")
    assert st == 200 and json.loads(body)["document"] == {"a": 1}, body
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=ctx)
    conn.request("GET", "/v1/subscribe?from=beginning")
    r = conn.getresponse()
    assert r.status == 200 and r.readline() == b"id: 1\n", r.status
    conn.close()
    # Plain HTTP to the TLS port gets no HTTP answer.
    try:
        got = call(port, "GET", "/healthz")
    except (http.client.HTTPException, ConnectionError, OSError) as e:
        got = e
    assert not isinstance(got, tuple), got
    s.stop()

    s = Cairnd(args.cairnd, os.path.join(tmp, "d"), ["--http-listen", "127.0.0.1:0",
                                                      "--tls-cert", c["srv.pem"],
                                                      "--tls-key", c["srv.key"],
                                                      "--tls-client-ca", c["ca.pem"]])
    port = http_port(s)
    try:
        got = https("GET", "/healthz")
    except (ssl.SSLError, ConnectionError, OSError) as e:
        got = e
    assert not isinstance(got, tuple), got  # no client certificate: refused
    mutual = ssl.create_default_context(cafile=c["ca.pem"])
    mutual.load_cert_chain(c["cli.pem"], c["cli.key"])
    assert https("GET", "/v1/entities/account/1", context=mutual)[0] == 200
    s.stop()

    p = subprocess.run([args.cairnd, "--data-dir", os.path.join(tmp, "e"), "--listen",
                        "127.0.0.1:0", "--http-listen", "0.0.0.0:0"], capture_output=True,
                       text=True, timeout=30)
    assert p.returncode != 0 and "refusing to listen on 0.0.0.0:0" in p.stderr + p.stdout, \
        (p.returncode, p.stderr)


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
        ("GET", "/metrics", None, "t-admin", ["t-reader", "t-writer", "t-other"]),
        ("GET", "/v1/snapshot?collection=account", None, "t-reader", ["t-writer", "t-other"]),
        ("POST", "/v1/ingest", ndjson(upsert(9, 3, {"a": 3})), "t-writer", ["t-reader", "t-other"]),
        ("PUT", "/v1/checkpoints/cp", '{"seq": 1, "collections": ["account"]}', "t-reader",
         ["t-writer", "t-other"]),
        ("GET", "/v1/checkpoints/cp", None, "t-reader", ["t-writer"]),
        ("GET", "/v1/checkpoints", None, "t-admin", ["t-reader", "t-writer", "t-other"]),
        ("GET", "/v1/sources", None, "t-admin", ["t-reader", "t-writer", "t-other"]),
        ("GET", "/v1/sources/app", None, "t-admin", ["t-reader", "t-writer", "t-other"]),
        ("GET", "/v1/connectors", None, "t-admin", ["t-reader", "t-writer", "t-other"]),
        ("GET", "/v1/sinks", None, "t-admin", ["t-reader", "t-writer", "t-other"]),
        ("GET", "/v1/subscriptions", None, "t-admin", ["t-reader", "t-writer", "t-other"]),
        ("DELETE", "/v1/checkpoints/cp", None, "t-admin", ["t-reader", "t-writer", "t-other"]),
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
    # The other scope's checkpoint is answered as missing (404), not 403.
    assert call(port, "PUT", "/v1/checkpoints/cp2", '{"seq": 1, "collections": ["account"]}',
                "t-reader")[0] == 200
    st, err = call(port, "GET", "/v1/checkpoints/cp2", token="t-other")
    checked += 1
    unauthorized += st < 300
    assert st == 404 and "may read" in err["message"], err
    # ?access_token= on GET requests (a browser's EventSource cannot send
    # headers); never on others.
    assert call(port, "GET", "/v1/entities/account/7?access_token=t-reader")[0] == 200
    for method, path, want in [("GET", "/v1/entities/account/7?access_token=t-writer", 403),
                               ("GET", "/v1/entities/account/7?access_token=t-nope", 401),
                               ("POST", "/v1/ingest?source=app&access_token=t-writer", 401)]:
        st, err = call(port, method, path, ndjson(upsert(10, 4, {"a": 4})) if method == "POST"
                       else None)
        checked += 1
        unauthorized += st < 300
        assert st == want, (method, path, st, err)
    for token, want in [(None, 401), ("t-writer", 403), ("t-other", 403)]:
        st, err = call(port, "GET", "/v1/subscribe?collection=account", token=token)
        checked += 1
        unauthorized += st < 300
        assert st == want, (token, st, err)
    sub = Sse(port, "/v1/subscribe?collection=account&from=beginning", token="t-reader")
    assert sub.status == 200 and sub.next()[1] == 1
    sub.close()
    assert unauthorized == 0
    # Health needs no token (probes carry none).
    assert call(port, "GET", "/healthz")[0] == 200
    print(f"  auth: {checked} refused calls, {unauthorized} unauthorized successes")
    s.stop()


def main():
    args = parse_args()
    run_sections([endpoints, admin_endpoints, snapshots, subscriptions, idle_streams,
                  bitbroker_curl, tls, auth_matrix],
                 args)


if __name__ == "__main__":
    main()
