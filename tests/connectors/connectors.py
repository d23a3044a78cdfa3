#!/usr/bin/python3
"""Connectors against a real cairnd and a real SSE server on loopback
(sse_feed_server.py): the Aria load and change feeds read concurrently
through dropped connections; a generated feed of 2,400 events with cairnd
SIGKILLed mid-stream and restarted; a gap after an absence longer than the
feed's retention; bad definitions, a server answering 503, and the stop and
skip error policies. Every end state is compared entity by entity with the
fold of the events in position order. Closes with an 'N passed, N failed'
line."""

import argparse
import json
import os
import random
import signal
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
from cli import Cli  # noqa: E402
from harness import Cairnd, run_sections  # noqa: E402
from sse_feed_server import FeedServer, blocks  # noqa: E402
from webhook_server import Webhook  # noqa: E402

T0 = 1_767_225_600_000  # ms


def wait_for(pred, what, timeout=120):
    deadline = time.time() + timeout
    while True:
        got = pred()
        if got:
            return got
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def status(cli, name):
    return cli.lines("connector", "status", name)


def caught_up(cli, name, srv):
    """Every URL has committed its feed's last event."""
    urls = status(cli, name)
    return all(u["last_event_id"] == str(len(srv.feeds[u["url"].split(str(srv.port), 1)[1]]))
               for u in urls) and urls


def state(cli, collection):
    return {json.dumps(e["key"]): e["document"]
            for e in cli.lines("snapshot", "--collection", collection)}


def fold(events):
    """The end state of (tick, kind, key, body) events, folded in position
    order: load and create set the document, update merges top-level fields,
    delete removes the entity."""
    docs = {}
    for _, kind, key, body in sorted(events):
        if kind in ("load", "create"):
            docs[key] = dict(body)
        elif kind == "update" and key in docs:
            docs[key].update(body)
        elif kind == "delete":
            docs.pop(key, None)
    return {json.dumps(k): v for k, v in docs.items()}


def sse_event(tick, kind, key, body):
    header = {"entity": "account", "key": {"acct_no": key}, "timestamp": T0 + tick, "tick": tick}
    return f"event: {kind}\ndata: {json.dumps(header)}\ndata: {json.dumps(body)}\n\n"


def generated(n_accounts, updates, deletes, seed):
    """A load feed and a change feed of one billing system."""
    rng = random.Random(seed)
    events, tick = [], 0
    for k in range(1, n_accounts + 1):
        tick += 1
        events.append((tick, "load", k, {"acct_no": k, "plan": "basic", "balance": k}))
    live = list(range(1, n_accounts + 1))
    for _ in range(updates):
        tick += 1
        k = rng.choice(live)
        events.append((tick, "update", k, {"balance": rng.randint(0, 10**6),
                                            "plan": rng.choice(["gold", "silver"])}))
    for k in rng.sample(live, deletes):
        tick += 1
        events.append((tick, "delete", k, {}))
    load = [sse_event(*e) for e in events if e[1] == "load"]
    change = [sse_event(*e) for e in events if e[1] != "load"]
    return events, load, change


def add_connector(cli, name, srv, source="billing", extra=()):
    cli.run("connector", "add", name, "--source", source,
            *[a for p in srv.feeds for a in ("--url", srv.url(p))],
            "--max-backoff-ms", "300", *extra, check_rc=0)


def aria_with_drops(args, tmp):
    """The fixture's load and change feeds, read concurrently through
    connections dropped at random (some inside an event): the documented
    end state, and the URLs resumed with Last-Event-ID."""
    text = open(os.path.join(args.fixtures, "seeds", "aria-feed.sse")).read()
    evs = blocks(text)
    srv = FeedServer({"/load": [b for b in evs if "event: load" in b],
                      "/change": [b for b in evs if "event: load" not in b]}, drop=0.25, seed=3)
    s = Cairnd(args.cairnd, os.path.join(tmp, "d"))
    cli = Cli(args.cli, s)
    cli.run("source", "add", "billing", "--format", "sse-feed", check_rc=0)
    add_connector(cli, "aria", srv, extra=["--batch", "2", "--batch-ms", "20"])
    urls = wait_for(lambda: caught_up(cli, "aria", srv), "the aria feeds")
    got = state(cli, "account")
    assert {k: v for k, v in got.items()} == {
        "1001": {"acct_no": 1001, "status": "ACTIVE", "plan": "gold", "balance": 99.0},
        "1002": {"acct_no": 1002, "status": "ACTIVE", "plan": "silver", "balance": 0},
        "1003": {"acct_no": 1003, "status": "ACTIVE", "plan": "platinum", "balance": 10},
    }, got
    resumed = [last for _, last in srv.requests if last]
    assert resumed and sum(u["reconnects"] for u in urls) >= len(resumed), (srv.requests, urls)
    assert all(u["state"] in ("streaming", "gap") or u["url_state"] == "streaming" for u in urls)
    print(f"  aria: {sum(u['events'] for u in urls)} events committed, "
          f"{sum(u['duplicates'] for u in urls)} duplicates, {len(srv.requests)} connections")
    s.stop()
    srv.stop()


def killed_mid_stream(args, tmp):
    """2,400 events over two URLs, connections dropped at random, cairnd
    SIGKILLed twice while it reads: after each restart the connector resumes
    from its committed ids; the end state is the fold, and every event was
    applied exactly once (the source's accepted count)."""
    events, load, change = generated(400, 1900, 100, seed=7)
    srv = FeedServer({"/load": load, "/change": change}, drop=0.01, seed=11, delay=0.002)
    srv.retry_ms = 20
    s = Cairnd(args.cairnd, os.path.join(tmp, "d"))
    cli = Cli(args.cli, s)
    cli.run("source", "add", "billing", "--format", "sse-feed", check_rc=0)
    add_connector(cli, "gen", srv, extra=["--batch", "100", "--batch-ms", "50"])
    kills = 0
    for fraction in (0.2, 0.6):
        # The counters restart with cairnd; the store's count does not.
        def committed():
            return next((line["accepted"] for line in cli.lines("stats")
                         if line.get("source") == "billing"), 0)
        at = wait_for(lambda: committed() >= fraction * len(events) and committed(),
                      f"{fraction:.0%} of the events")
        assert at < len(events), "the feed was read before the kill"
        s.proc.send_signal(signal.SIGKILL)
        s.proc.wait()
        kills += 1
        s.start()
    wait_for(lambda: caught_up(cli, "gen", srv), "the generated feeds", timeout=300)
    assert state(cli, "account") == fold(events), "end state differs from the fold"
    accepted = next(line for line in cli.lines("stats") if line.get("source") == "billing")
    assert accepted["accepted"] == len(events), (accepted, len(events))
    # Exact resumption: each URL's resume point commits with its events, so
    # nothing committed is read again (no duplicate), and every connection
    # but the first of each URL asks for what follows its last id.
    assert accepted["duplicates"] == 0, accepted
    assert sum(1 for _, last in srv.requests if last is None) == 2, srv.requests
    print(f"  generated: {len(events)} events, {kills} SIGKILLs, {len(srv.requests)} connections, "
          f"{accepted['duplicates']} duplicates absorbed")
    s.stop()
    srv.stop()


def gap_after_retention(args, tmp):
    """Away longer than the feed's retention: status gap, counted, and the
    connector goes on reading."""
    _, load, change = generated(20, 20, 0, seed=5)
    srv = FeedServer({"/load": load, "/change": change})
    s = Cairnd(args.cairnd, os.path.join(tmp, "d"))
    cli = Cli(args.cli, s)
    cli.run("source", "add", "billing", "--format", "sse-feed", check_rc=0)
    add_connector(cli, "short", srv, extra=["--retention-seconds", "1"])
    wait_for(lambda: caught_up(cli, "short", srv), "the feeds")
    assert all(u["gaps"] == 0 for u in status(cli, "short"))
    s.stop()
    time.sleep(2.5)
    s.start()
    urls = wait_for(lambda: [u for u in status(cli, "short") if u["gaps"] == 1] and
                    status(cli, "short"), "the gap")
    assert all(u["gaps"] == 1 and u["url_state"] == "gap" for u in urls), urls
    assert all(u["state"] == "gap" and "retention" in u["last_error"] for u in urls), urls
    s.stop()
    srv.stop()


def reordered_urls(args, tmp):
    """A definition whose URLs change order keeps each URL's resume point:
    the URL read before resumes after its last id, nothing is read twice."""
    _, load, change = generated(50, 30, 0, seed=9)
    srv = FeedServer({"/load": load, "/change": change})
    s = Cairnd(args.cairnd, os.path.join(tmp, "d"))
    cli = Cli(args.cli, s)
    cli.run("source", "add", "billing", "--format", "sse-feed", check_rc=0)
    cli.run("connector", "add", "feed", "--source", "billing", "--url", srv.url("/load"),
            check_rc=0)
    wait_for(lambda: all(u["last_event_id"] == "50" for u in status(cli, "feed")), "the load feed")
    before = len(srv.requests)
    cli.run("connector", "add", "feed", "--source", "billing", "--url", srv.url("/change"),
            "--url", srv.url("/load"), check_rc=0)
    wait_for(lambda: caught_up(cli, "feed", srv), "both feeds")
    again = [last for path, last in srv.requests[before:] if path == "/load"]
    assert again and all(last == "50" for last in again), srv.requests
    stats = next(line for line in cli.lines("stats") if line.get("source") == "billing")
    assert stats["accepted"] == 80 and stats["duplicates"] == 0, stats
    s.stop()
    srv.stop()


def definitions_and_errors(args, tmp):
    """Bad definitions are refused naming what is wrong; a 503 is retried;
    a record the format rejects stops the URL (stop) or is skipped (skip);
    rm forgets the connector."""
    s = Cairnd(args.cairnd, os.path.join(tmp, "d"))
    cli = Cli(args.cli, s)
    cli.run("source", "add", "billing", "--format", "sse-feed", check_rc=0)
    cli.run("source", "add", "pg", "--format", "debezium", check_rc=0)
    for argv, words in [
            (["c1", "--source", "nope", "--url", "http://127.0.0.1:1/x"], "NOT_FOUND"),
            (["c1", "--source", "pg", "--url", "http://127.0.0.1:1/x"],
             "has format debezium; an sse connector reads a source of format sse-feed"),
            (["c1", "--source", "billing", "--url", "ftp://127.0.0.1/x"], "urls[0]"),
            (["bad/name", "--source", "billing", "--url", "http://127.0.0.1:1/x"], "name")]:
        rc, _, err = cli.run("connector", "add", *argv)
        assert rc == 1 and all(w in err for w in [words]), (argv, rc, err)
    assert cli.lines("connector", "list") == []

    down = FeedServer({"/x": []}, status=503)
    add_connector(cli, "down", down)
    u = wait_for(lambda: [u for u in status(cli, "down") if "HTTP 503" in u["last_error"]
                          and u["reconnects"] >= 2], "retries of a 503")[0]
    assert u["url_state"] in ("backing-off", "connecting"), u
    cli.run("connector", "rm", "down", check_rc=0)
    rc, _, err = cli.run("connector", "status", "down")
    assert rc == 1 and "NOT_FOUND" in err, err
    down.stop()

    good = [sse_event(1, "load", 1, {"acct_no": 1}), sse_event(3, "load", 3, {"acct_no": 3})]
    broken = "event: load\ndata: {not json\ndata: {}\n\n"
    srv = FeedServer({"/f": [good[0], broken, good[1]]})
    add_connector(cli, "strict", srv)
    u = wait_for(lambda: [u for u in status(cli, "strict") if u["url_state"] == "failed"],
                 "the strict connector to fail")[0]
    assert "record" in u["last_error"] and u["state"] == "failed", u
    cli.run("source", "add", "billing2", "--format", "sse-feed", check_rc=0)
    add_connector(cli, "lenient", srv, source="billing2", extra=["--on-error", "skip"])
    u = wait_for(lambda: caught_up(cli, "lenient", srv), "the lenient connector")[0]
    assert u["skipped"] == 1 and u["applied"] == 2 and u["url_state"] == "streaming", u
    names = [c["connector"] for c in cli.lines("connector", "list")]
    assert names == ["lenient", "strict"], names
    s.stop()
    srv.stop()


def ingest(cli, tmp, lines, name="in.jsonl"):
    """Canonical events through `cairn ingest` (source `app`), one batch."""
    path = os.path.join(tmp, name)
    with open(path, "w") as f:
        for line in lines:
            f.write(json.dumps(line) + "\n")
    cli.run("ingest", "--source", "app", path, check_rc=0)


def upsert(key, i, payload=None):
    return {"collection": "orders", "key": key, "op": "upsert",
            "position": {"timestamp": T0 * 1000 + i}, "payload": payload or {"i": i}}


def sink_caught_up(cli, name):
    last = cli.lines("stats")[0]["last_seq"]
    st = cli.lines("sink", "status", name)[0]
    return st if st["checkpoint_seq"] == last else None


def sink_delivery(args, tmp):
    """Every change delivered at least once, in seq order, through a
    destination that is down for a while (503) and a SIGKILL of cairnd;
    message ids stable across the restart; the checkpoint moves only on a
    2xx."""
    hook = Webhook()
    hook.delay = 0.03  # so that the SIGKILL lands mid-delivery
    s = Cairnd(args.cairnd, os.path.join(tmp, "d"))
    cli = Cli(args.cli, s)
    cli.run("source", "add", "app", "--format", "canonical", check_rc=0)
    ingest(cli, tmp, [upsert(f"k{i % 50}", i) for i in range(300)])
    hook.down = True
    cli.run("sink", "add", "hook", "--url", hook.url, "--from", "beginning", "--batch", "20",
            "--max-backoff-ms", "200", check_rc=0)
    st = wait_for(lambda: [x for x in cli.lines("sink", "status", "hook")
                           if x["retries"] >= 2 and x["state"] == "backing-off"], "retries")[0]
    assert st["checkpoint_seq"] == 0 and "HTTP 503" in st["last_error"], st
    in_stats = [x for x in cli.lines("stats") if "sink" in x]
    assert in_stats[0]["sink"] == "hook" and in_stats[0]["lag_seqs"] == 300, in_stats
    hook.down = False
    wait_for(lambda: len(hook.accepted) >= 100, "the first deliveries")
    assert len(hook.accepted) < 300, "delivered before the kill"
    s.proc.send_signal(signal.SIGKILL)
    s.proc.wait()
    s.start()
    ingest(cli, tmp, [upsert(f"k{i % 50}", i) for i in range(300, 400)], "more.jsonl")
    st = wait_for(lambda: sink_caught_up(cli, "hook"), "the sink to catch up")
    seqs = [m["seq"] for m in hook.accepted]
    assert set(seqs) == set(range(1, 401)), "changes missing"
    first = [q for i, q in enumerate(seqs) if q not in seqs[:i]]
    assert first == sorted(first), "not delivered in seq order"
    assert all(m["id"] == f"hook-{m['seq']}" for m in hook.accepted)
    assert st["lag_seqs"] == 0 and st["dead_letters"] == 0, st
    assert [x for x in cli.lines("stats") if "sink" in x][0]["lag_seqs"] == 0
    print(f"  sink: 400 changes, {len(seqs)} delivered ({len(seqs) - 400} again after the "
          f"SIGKILL), {len(hook.requests)} requests")
    s.stop()
    hook.stop()


def sink_dead_letters_and_shapes(args, tmp):
    """A message refused for good (400) becomes a dead letter and the rest
    flows on; replay sends it again; the debezium and Mia shapes field by
    field."""
    hook = Webhook()
    hook.reject = {"bad"}
    s = Cairnd(args.cairnd, os.path.join(tmp, "d"))
    cli = Cli(args.cli, s)
    cli.run("source", "add", "app", "--format", "canonical", check_rc=0)
    cli.run("sink", "add", "hook", "--url", hook.url, "--batch", "5", check_rc=0)
    ingest(cli, tmp, [upsert("a", 1), upsert("bad", 2), upsert("c", 3)])
    st = wait_for(lambda: sink_caught_up(cli, "hook"), "the sink to catch up")
    assert st["dead_letters"] == 1, st
    assert [m["key"] for m in hook.accepted] == ["a", "c"], hook.accepted
    dead = cli.lines("sink", "dead-letters", "hook")
    assert len(dead) == 1 and dead[0]["seq"] == 2 and dead[0]["http_status"] == 400, dead
    assert dead[0]["message"]["key"] == "bad" and "refused" in dead[0]["response"], dead
    hook.reject = set()
    assert cli.lines("sink", "replay", "hook")[0]["replayed"] == 1
    assert [m["key"] for m in hook.accepted] == ["a", "c", "bad"]
    assert cli.lines("sink", "dead-letters", "hook") == []

    for shape in ["debezium", "mia-projection-update"]:
        hook = Webhook()
        cli.run("sink", "add", shape, "--url", hook.url, "--shape", shape, "--collection", "acct",
                check_rc=0)
        base = 100 if shape == "debezium" else 200
        ingest(cli, tmp, [
            {"collection": "acct", "key": 7, "op": "upsert", "position": {"timestamp": base},
             "payload": {"plan": "basic"}},
            {"collection": "acct", "key": 7, "op": "patch", "position": {"timestamp": base + 1},
             "payload": {"plan": "gold"}},
            {"collection": "acct", "key": 7, "op": "delete", "position": {"timestamp": base + 2}}],
            f"{shape}.jsonl")
        wait_for(lambda: sink_caught_up(cli, shape), f"the {shape} sink")
        got = hook.accepted[-3:]
        if shape == "debezium":
            assert [m["op"] for m in got] == ["c", "u", "d"], got
            assert got[0]["before"] is None and got[0]["after"] == {"plan": "basic"}, got
            assert got[1]["before"] == {"plan": "basic"} and got[1]["after"] == {"plan": "gold"}
            assert got[2]["before"] == {"plan": "gold"} and got[2]["after"] is None, got
            src = got[1]["source"]
            assert src["connector"] == "cairn" and src["collection"] == "acct" and \
                src["cairn_source"] == "app" and src["ts_us"] == base + 1 and src["key"] == 7, src
            assert isinstance(got[1]["ts_ms"], int)
        else:
            assert [m["operationType"] for m in got] == ["INSERT", "UPDATE", "DELETE"], got
            assert got[1]["projectionName"] == "acct" and got[1]["documentId"] == "7", got
            assert got[1]["before"] == {"plan": "basic"} and got[1]["after"] == {"plan": "gold"}
            assert got[1]["operationTimestamp"] == "1970-01-01T00:00:00.000Z", got
            info = got[1]["__internal__cairnInfo"]
            assert info["source"] == "app" and info["position"]["timestamp"] == base + 1, info
    assert sorted(x["sink"] for x in cli.lines("sink", "list")) == \
        ["debezium", "hook", "mia-projection-update"]
    cli.run("sink", "rm", "hook", check_rc=0)
    rc, _, err = cli.run("sink", "status", "hook")
    assert rc == 1 and "NOT_FOUND" in err, err
    s.stop()
    hook.stop()


def sink_out_of_range(args, tmp):
    """A sink whose checkpoint fell out of retention stops with out_of_range,
    and says so; it never skips silently."""
    hook = Webhook()
    s = Cairnd(args.cairnd, os.path.join(tmp, "d"), extra=["--retention-commits", "5"])
    cli = Cli(args.cli, s)
    cli.run("source", "add", "app", "--format", "canonical", check_rc=0)
    # A sink of a collection nothing is written to: caught up, its
    # checkpoint follows the commits, so it never falls behind the horizon.
    cli.run("sink", "add", "quiet", "--url", hook.url, "--collection", "none", check_rc=0)
    for i in range(30):
        ingest(cli, tmp, [upsert(f"k{i}", i)], f"b{i}.jsonl")
    wait_for(lambda: cli.lines("stats")[0]["oldest_seq"] > 1, "retention to purge")
    quiet = wait_for(lambda: sink_caught_up(cli, "quiet"), "the quiet sink's checkpoint")
    assert quiet["state"] == "caught-up" and quiet["lag_seqs"] == 0, quiet
    cli.run("sink", "add", "late", "--url", hook.url, "--from", "0", check_rc=0)
    st = wait_for(lambda: [x for x in cli.lines("sink", "status", "late")
                           if x["state"] == "out_of_range"], "out_of_range")[0]
    assert "OUT_OF_RANGE" in st["last_error"] and hook.accepted == [], (st, hook.accepted)
    s.stop()
    hook.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cairnd", required=True)
    ap.add_argument("--cli", required=True)
    ap.add_argument("--fixtures", required=True)
    ap.add_argument("--only")
    args = ap.parse_args()
    run_sections([aria_with_drops, killed_mid_stream, gap_after_retention, reordered_urls,
                  definitions_and_errors, sink_delivery, sink_dead_letters_and_shapes,
                  sink_out_of_range], args)


if __name__ == "__main__":
    main()
