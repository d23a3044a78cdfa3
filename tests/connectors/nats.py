#!/usr/bin/python3
"""NATS JetStream in and out, against a real cairnd and a real nats-server
(started here, -js, on a free loopback port): the Debezium fixture published
on Debezium Server's per-table subjects and consumed into `products`; 3,000
generated change events consumed while cairnd is SIGKILLed twice (the
consumer's ack floor never passes what cairn committed, no event is applied
twice); a nats sink delivering 400 changes through a nats-server restart and
a SIGKILL of cairnd (every change in the stream once, in seq order, with
stable Nats-Msg-Ids); the omnia-datapoints shape against the Omnia seed;
bad definitions and the stop policy. Closes with an 'N passed, N failed'
line."""

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
from cli import Cli  # noqa: E402
from harness import Cairnd, run_sections  # noqa: E402
from webhook_server import Webhook  # noqa: E402


def wait_for(pred, what, timeout=120):
    deadline = time.time() + timeout
    while True:
        got = pred()
        if got:
            return got
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class NatsServer:
    """nats-server with JetStream on 127.0.0.1; restartable on the same port
    and store directory."""

    started = []

    def __init__(self, tmp):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(dir=tmp, prefix="nats-")
        self.proc = None
        NatsServer.started.append(self)
        self.start()

    @property
    def url(self):
        return f"nats://127.0.0.1:{self.port}"

    def start(self):
        self.log = open(os.path.join(self.dir, "server.log"), "ab")
        self.proc = subprocess.Popen(
            ["nats-server", "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd",
             os.path.join(self.dir, "store")], stdout=self.log, stderr=subprocess.STDOUT)
        def up():
            assert self.proc.poll() is None, "nats-server exited at start"
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return True
            except OSError:
                return False
        wait_for(up, "nats-server", timeout=20)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
        self.proc = None


class Tool:
    def __init__(self, binary, server):
        self.binary, self.server = binary, server

    def run(self, *args):
        p = subprocess.run([self.binary, self.server.url, *map(str, args)], capture_output=True,
                           text=True, timeout=120)
        assert p.returncode == 0, f"nats_tool {args}: {p.stderr}"
        return [json.loads(line) for line in p.stdout.splitlines() if line.strip()]


def state(cli, collection):
    return {json.dumps(e["key"]): e["document"]
            for e in cli.lines("snapshot", "--collection", collection)}


def connector(cli, name):
    return cli.lines("connector", "status", name)[0]


def source_stats(cli, name):
    return next((line for line in cli.lines("stats") if line.get("source") == name),
                {"accepted": 0, "duplicates": 0})


def debezium_in(args, tmp):
    """The Debezium fixture, published on Debezium Server's subject for the
    table, consumed into the collection the subject maps to: products
    101-110 as documented; every message acknowledged once committed."""
    nats = NatsServer(tmp)
    tool = Tool(args.nats_tool, nats)
    tool.run("add-stream", "DBZ", "dbserver1.>")
    fixture = os.path.join(args.fixtures, "flink", "debezium-postgres-data-schema-exclude.txt")
    tool.run("publish", "dbserver1.inventory.products", fixture)
    n = len([line for line in open(fixture) if line.strip()])
    s = Cairnd(args.cairnd, os.path.join(tmp, "d"))
    cli = Cli(args.cli, s)
    cli.run("source", "add", "pg", "--format", "debezium", "--key", "products=id", check_rc=0)
    cli.run("connector", "add", "dbz", "--type", "nats", "--source", "pg", "--url", nats.url,
            "--stream", "DBZ", "--subject", "dbserver1.inventory.*=products", "--batch", "4",
            check_rc=0)
    st = wait_for(lambda: connector(cli, "dbz")["last_event_id"] == str(n) and
                  connector(cli, "dbz"), "the fixture's messages")
    assert st["url"] == "DBZ/cairn_dbz" and st["url_state"] == "streaming", st
    products = state(cli, "products")
    assert sorted(products) == [str(k) for k in range(101, 111)], sorted(products)
    assert products["106"]["description"] == "18oz carpenter hammer", products["106"]
    assert products["107"]["weight"] == 5.1, products["107"]
    assert products["110"]["description"] == "new water resistent white wind breaker" and \
        products["110"]["weight"] == 0.5, products["110"]
    info = wait_for(lambda: [i for i in tool.run("consumer-info", "DBZ", "cairn_dbz")
                             if i["ack_floor"] == n], "the acks")[0]
    assert info["pending"] == 0 and info["ack_pending"] == 0, info
    # Published again (a Debezium Server replay): every event a duplicate,
    # nothing applied twice.
    tool.run("publish", "dbserver1.inventory.products", fixture)
    again = wait_for(lambda: connector(cli, "dbz")["last_event_id"] == str(2 * n) and
                     connector(cli, "dbz"), "the replay")
    assert again["applied"] == st["applied"] and \
        again["duplicates"] - st["duplicates"] == st["events"], (st, again)
    assert state(cli, "products") == products
    print(f"  debezium in: {again['events']} events, {again['duplicates']} duplicates")
    s.stop()
    nats.stop()


def dbz_event(table, key, i, op):
    return {"before": None, "after": None if op == "d" else {"id": key, "v": i, "t": table},
            **({"before": {"id": key}} if op == "d" else {}),
            "source": {"schema": "inventory", "table": table, "ts_ms": 1_700_000_000_000,
                       "lsn": i}, "op": op, "ts_ms": 1_700_000_000_000}


def killed_mid_stream(args, tmp):
    """3,000 change events on three table subjects, consumed while cairnd is
    SIGKILLed twice. With nats-server paused at each restart, the consumer's
    ack floor is at most what the store holds (JetStream delivers in order
    and batches commit in order, so the store holds a prefix); afterwards
    the end state equals the fold and every event was applied once."""
    nats = NatsServer(tmp)
    tool = Tool(args.nats_tool, nats)
    tool.run("add-stream", "CDC", "shop.>")
    rng = random.Random(5)
    lines, expected = [], {}
    for i in range(1, 3001):
        table = rng.choice(["a", "b", "c"])
        key = rng.randint(1, 200)
        op = "d" if rng.random() < 0.05 else "u"
        lines.append(f"shop.inventory.{table}\t{json.dumps(dbz_event(table, key, i, op))}")
        coll = expected.setdefault(table, {})
        if op == "d":
            coll.pop(str(key), None)
        else:
            coll[str(key)] = {"id": key, "v": i, "t": table}
    path = os.path.join(tmp, "cdc.tsv")
    open(path, "w").write("\n".join(lines) + "\n")
    tool.run("publish-map", path)
    s = Cairnd(args.cairnd, os.path.join(tmp, "d"))
    cli = Cli(args.cli, s)
    cli.run("source", "add", "shop", "--format", "debezium", "--key", "a=id", "--key", "b=id",
            "--key", "c=id", check_rc=0)
    cli.run("connector", "add", "cdc", "--type", "nats", "--source", "shop", "--url", nats.url,
            "--stream", "CDC", "--batch", "2", "--durable", check_rc=0)
    floors = []
    for fraction in (0.25, 0.6):
        wait_for(lambda: source_stats(cli, "shop")["accepted"] >= fraction * 3000,
                 f"{fraction:.0%} of the events")
        s.proc.send_signal(signal.SIGKILL)
        s.proc.wait()
        floor = tool.run("consumer-info", "CDC", "cairn_cdc")[0]["ack_floor"]
        nats.proc.send_signal(signal.SIGSTOP)  # the connector cannot fetch
        s.start()
        held = source_stats(cli, "shop")
        nats.proc.send_signal(signal.SIGCONT)
        assert held["accepted"] < 3000, "read before the kill"
        assert floor <= held["accepted"], (floor, held)
        floors.append((floor, held["accepted"]))
    wait_for(lambda: source_stats(cli, "shop")["accepted"] == 3000, "every event", timeout=300)
    for table, docs in expected.items():
        assert state(cli, table) == {k: v for k, v in docs.items()}, f"table {table} differs"
    # What was committed but not acknowledged before a kill comes again
    # after the consumer's AckWait (30 s): duplicates, never applied twice.
    wait_for(lambda: [i for i in tool.run("consumer-info", "CDC", "cairn_cdc")
                      if i["ack_floor"] == 3000], "the last acks")
    held = source_stats(cli, "shop")
    assert held["accepted"] == 3000, held
    for table, docs in expected.items():
        assert state(cli, table) == {k: v for k, v in docs.items()}, f"table {table} differs"
    print(f"  nats in: 3000 events, 2 SIGKILLs, ack floor <= committed at each "
          f"{floors}, {held['duplicates']} redeliveries absorbed as duplicates")
    s.stop()
    nats.stop()


def upsert(key, i):
    return {"collection": "orders", "key": key, "op": "upsert",
            "position": {"timestamp": 1_767_225_600_000_000 + i}, "payload": {"i": i}}


def ingest(cli, tmp, lines, name):
    path = os.path.join(tmp, name)
    with open(path, "w") as f:
        for line in lines:
            f.write(json.dumps(line) + "\n")
    cli.run("ingest", "--source", "app", path, check_rc=0)


def sink_caught_up(cli, name):
    last = cli.lines("stats")[0]["last_seq"]
    st = cli.lines("sink", "status", name)[0]
    return st if st["checkpoint_seq"] == last else None


def nats_sink(args, tmp):
    """400 changes to a JetStream stream through a nats-server restart and a
    SIGKILL of cairnd: each change in the stream exactly once (re-sends carry
    the same Nats-Msg-Id, and JetStream's duplicate window drops them), in
    seq order, on the subject of its collection."""
    nats = NatsServer(tmp)
    tool = Tool(args.nats_tool, nats)
    tool.run("add-stream", "OUT", "cairn.>", "--dup-window-ms", "600000")
    s = Cairnd(args.cairnd, os.path.join(tmp, "d"))
    cli = Cli(args.cli, s)
    cli.run("source", "add", "app", "--format", "canonical", check_rc=0)
    ingest(cli, tmp, [upsert(f"k{i % 40}", i) for i in range(200)], "a.jsonl")
    nats.stop()
    cli.run("sink", "add", "out", "--type", "nats", "--url", nats.url, "--from", "beginning",
            "--batch", "10", "--max-backoff-ms", "200", "--timeout-ms", "1000", check_rc=0)
    st = wait_for(lambda: [x for x in cli.lines("sink", "status", "out")
                           if x["retries"] >= 2 and x["state"] == "backing-off"], "retries")[0]
    assert st["checkpoint_seq"] == 0, st
    nats.start()
    wait_for(lambda: cli.lines("sink", "status", "out")[0]["checkpoint_seq"] >= 50,
             "the first deliveries")
    s.proc.send_signal(signal.SIGKILL)
    s.proc.wait()
    s.start()
    ingest(cli, tmp, [upsert(f"k{i % 40}", i) for i in range(200, 400)], "b.jsonl")
    st = wait_for(lambda: sink_caught_up(cli, "out"), "the sink to catch up")
    msgs = tool.run("messages", "OUT")
    seqs = [json.loads(m["data"])["seq"] for m in msgs]
    assert sorted(seqs) == list(range(1, 401)), f"{len(seqs)} messages, missing or twice"
    assert seqs == sorted(seqs), "not in seq order"
    assert all(m["id"] == f"out-{json.loads(m['data'])['seq']}" and m["subject"] == "cairn.orders"
               for m in msgs), msgs[:3]
    assert st["lag_seqs"] == 0 and st["dead_letters"] == 0, st
    print(f"  nats sink: 400 changes, {len(msgs)} in the stream, 0 missing, 0 twice, "
          f"{st['delivered']} delivered since the restart")
    s.stop()
    nats.stop()


def omnia_shape(args, tmp):
    """The Omnia seed ingested through a datapoints source and delivered in
    the omnia-datapoints shape: the seed's series, its points (the repeated
    one once) and its schema, field by field."""
    seed = json.load(open(os.path.join(args.fixtures, "seeds", "omnia-datapoints.json")))
    hook = Webhook()
    s = Cairnd(args.cairnd, os.path.join(tmp, "d"))
    cli = Cli(args.cli, s)
    cli.run("source", "add", "plant", "--format", "datapoints", "--default-collection", "series",
            check_rc=0)
    cli.run("sink", "add", "omnia", "--url", hook.url, "--shape", "omnia-datapoints",
            "--omnia-schema", seed["schema"], check_rc=0)
    cli.run("ingest", "--source", "plant",
            os.path.join(args.fixtures, "seeds", "omnia-datapoints.json"), check_rc=0)
    wait_for(lambda: sink_caught_up(cli, "omnia"), "the omnia sink")
    got = {}
    for body in hook.accepted:
        assert set(body) == {"data", "schema"} and body["schema"] == seed["schema"], body
        for item in body["data"]["items"]:
            assert set(item) == {"id", "datapoints"}, item
            got.setdefault(item["id"], []).extend(item["datapoints"])
    want = {}
    for item in seed["data"]["items"]:
        points = want.setdefault(item["id"], [])
        for p in item["datapoints"]:
            if p not in points:
                points.append(p)
    assert got == want, (got, want)
    print(f"  omnia: {sum(len(p) for p in got.values())} points of {len(got)} series "
          f"in {len(hook.accepted)} requests")
    s.stop()
    hook.stop()


def definitions_and_errors(args, tmp):
    """Bad nats definitions are refused naming the field; a message the
    format rejects stops the connector (status failed, the message not
    acknowledged) or, with skip, is counted and terminated."""
    nats = NatsServer(tmp)
    tool = Tool(args.nats_tool, nats)
    s = Cairnd(args.cairnd, os.path.join(tmp, "d"))
    cli = Cli(args.cli, s)
    cli.run("source", "add", "pg", "--format", "debezium", "--key", "t=id", check_rc=0)
    cli.run("source", "add", "feed", "--format", "sse-feed", check_rc=0)
    base = ["--type", "nats", "--source", "pg", "--url", nats.url]
    for argv, words in [
            (["n1", "--type", "nats", "--source", "pg", "--url", "http://127.0.0.1:1"],
             "urls[0]"),
            (["n1", *base], "stream"),
            (["n1", *base, "--stream", "a.b"], "stream"),
            (["n1", *base, "--stream", "S", "--filter-subject", "a..b"], "filter_subject"),
            (["n1", *base, "--stream", "S", "--subject", "a.>.b=x"], "subjects"),
            (["n1", "--type", "nats", "--source", "feed", "--url", nats.url, "--stream", "S"],
             "has format sse-feed")]:
        rc, _, err = cli.run("connector", "add", *argv)
        assert rc == 1 and words in err, (argv, rc, err)
    for argv, words in [
            (["s1", "--type", "nats", "--url", "http://x"], "nats:// or tls://"),
            (["s1", "--type", "nats", "--url", nats.url, "--subject", "a.*"], "subject")]:
        rc, _, err = cli.run("sink", "add", *argv)
        assert rc == 1 and words in err, (argv, rc, err)

    # The stream does not exist yet: backing off, then streaming once it does.
    cli.run("connector", "add", "strict", *base, "--stream", "BAD", "--max-backoff-ms", "200",
            check_rc=0)
    st = wait_for(lambda: [c for c in [connector(cli, "strict")]
                           if c["reconnects"] >= 1 and "BAD" in c["last_error"]], "retries")[0]
    tool.run("add-stream", "BAD", "bad.>")
    good = json.dumps(dbz_event("t", 1, 1, "u"))
    path = os.path.join(tmp, "bad.tsv")
    open(path, "w").write(f"bad.x\t{good}\nbad.x\t{{not json\nbad.x\t{good}\n")
    tool.run("publish-map", path)
    st = wait_for(lambda: [c for c in [connector(cli, "strict")] if c["url_state"] == "failed"],
                  "the strict connector to fail")[0]
    assert "message 2 on bad.x" in st["last_error"] and st["events"] == 1, st
    assert tool.run("consumer-info", "BAD", "cairn_strict")[0]["ack_floor"] == 1
    cli.run("connector", "add", "lenient", *base, "--stream", "BAD", "--on-error", "skip",
            check_rc=0)
    st = wait_for(lambda: [c for c in [connector(cli, "lenient")]
                           if c["last_event_id"] == "3"], "the lenient connector")[0]
    assert st["skipped"] == 1 and st["events"] == 2 and st["url_state"] == "streaming", st
    cli.run("connector", "rm", "strict", check_rc=0)
    assert [c["connector"] for c in cli.lines("connector", "list")] == ["lenient"]
    s.stop()
    nats.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cairnd", required=True)
    ap.add_argument("--cli", required=True)
    ap.add_argument("--nats-tool", required=True)
    ap.add_argument("--fixtures", required=True)
    ap.add_argument("--only")
    args = ap.parse_args()
    if not shutil.which("nats-server"):
        print("nats-server is not installed (make deps installs it)")
        sys.exit(1)
    try:
        run_sections([debezium_in, killed_mid_stream, nats_sink, omnia_shape,
                      definitions_and_errors], args)
    finally:
        for n in NatsServer.started:
            if n.proc and n.proc.poll() is None:
                n.proc.send_signal(signal.SIGCONT)
                n.stop()


if __name__ == "__main__":
    main()
