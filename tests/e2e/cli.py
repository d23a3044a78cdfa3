#!/usr/bin/python3
"""The `cairn` CLI as a user drives it, against a real cairnd: the ingest
policy (stop at the first rejected batch, file line numbers, --continue,
--atomic of any size, sizes, surviving a server restart), option validation, UTF-8,
checkpoint batching with an exact clean stop, sessions, sources,
checkpoints, and backup and restore. Closes with an 'N passed, N failed' line."""

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time

from harness import Cairnd, run_sections

TS = 1_700_000_000_000_000


class Cli:
    def __init__(self, binary, server):
        self.binary, self.server = binary, server

    def run(self, *args, stdin=None, timeout=120, check_rc=None):
        p = subprocess.run([self.binary, "--server", f"127.0.0.1:{self.server.port}"] +
                           [str(a) for a in args], input=stdin, capture_output=True,
                           timeout=timeout)
        out, err = p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")
        if check_rc is not None:
            assert p.returncode == check_rc, \
                f"cairn {' '.join(map(str, args))}: rc {p.returncode}, want {check_rc}\n{err}"
        return p.returncode, out, err

    def lines(self, *args):
        _, out, _ = self.run(*args, check_rc=0)
        return [json.loads(line) for line in out.splitlines() if line.strip()]


def canonical_file(path, n, broken=(), key=lambda i: i, payload=lambda i: {"i": i}):
    with open(path, "w") as f:
        for i in range(n):
            if i + 1 in broken:
                f.write("{broken\n")
            else:
                f.write(json.dumps({"collection": "c", "key": key(i), "op": "upsert",
                                    "position": {"timestamp": TS + i},
                                    "payload": payload(i)}) + "\n")


def ingest_across_restart(args, s, path, flags, half_in=None, between=None):
    """`cairn ingest [flags] -` fed `path` on stdin: the first half; once
    `half_in()` says it is stored (if given), SIGKILL cairnd and start it
    again on its port, call `between()`, then the rest. Stdin is open
    throughout, so the CLI is mid-run when cairnd dies. Returns (rc, stderr)."""
    with open(path, "rb") as f:
        lines = f.readlines()
    half = len(lines) // 2
    p = subprocess.Popen([args.cli, "--server", f"127.0.0.1:{s.port}", "ingest"] + flags + ["-"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdin.write(b"".join(lines[:half]))
    p.stdin.flush()
    deadline = time.time() + 120
    while half_in and not half_in(half):
        assert time.time() < deadline and p.poll() is None, "the first half never arrived"
        time.sleep(0.05)
    time.sleep(0.3)
    port = s.port
    s.proc.send_signal(signal.SIGKILL)
    s.proc.wait()
    s.start(port)
    if between:
        between()
    _, err = p.communicate(input=b"".join(lines[half:]), timeout=300)
    return p.returncode, err.decode()


def ingest_policy(args, tmp):
    """16: the file's own line numbers; stop at the first rejected batch and
    say what was acknowledged; --continue; a re-run after the fix."""
    s = Cairnd(args.cairnd, os.path.join(tmp, "d"))
    cli = Cli(args.cli, s)
    cli.run("source", "add", "s", "--format", "canonical", check_rc=0)
    path = os.path.join(tmp, "f.jsonl")
    canonical_file(path, 1200, broken={777})
    rc, _, err = cli.run("ingest", "--source", "s", "--batch", 500, path)
    assert rc == 3, err
    assert "batch of lines 501-1000 rejected: line 777 (record 776)" in err, err
    assert "lines acknowledged: 1-500, 1001-1200; rejected: 501-1000" in err, err
    assert "ingest again from line 501" in err, err
    assert len(cli.lines("snapshot", "--collection", "c")) == 700
    rc, _, err = cli.run("ingest", "--source", "s", "--batch", 500, "--continue", path)
    assert rc == 3 and "duplicate 700" in err, err
    canonical_file(path, 1200)
    rc, _, err = cli.run("ingest", "--source", "s", "--batch", 500, path)
    assert rc == 0 and "accepted 500, duplicate 700" in err, err
    assert len(cli.lines("snapshot", "--collection", "c")) == 1200

    # --atomic: all or nothing.
    atomic = os.path.join(tmp, "atomic.jsonl")
    canonical_file(atomic, 300, broken={250}, key=lambda i: f"a{i}")
    rc, _, err = cli.run("ingest", "--source", "s", "--atomic", atomic)
    assert rc == 3 and "line 250" in err, err
    assert not [e for e in cli.lines("snapshot", "--collection", "c") if
                str(e["key"]).startswith("a")], "half of an --atomic file was applied"

    # Inputs are checked before anything is sent.
    last = cli.lines("stats")[0]["last_seq"]
    rc, _, err = cli.run("ingest", "--source", "s", path, os.path.join(tmp, "missing"))
    assert rc == 2 and "cannot read" in err and "missing" in err, err
    rc, _, err = cli.run("ingest", "--source", "s", tmp)
    assert rc == 2 and "is a directory" in err, err
    assert cli.lines("stats")[0]["last_seq"] == last

    # 19: input in the wrong format is an error, not 0 events.
    cli.run("source", "add", "billing", "--format", "sse-feed", check_rc=0)
    rc, _, err = cli.run("ingest", "--source", "billing", "/bin/ls")
    assert rc == 3 and "no SSE event found" in err, err
    fixture = os.path.join(args.fixtures, "flink", "debezium-postgres-data-schema-exclude.txt")
    rc, _, err = cli.run("ingest", "--source", "billing", fixture)
    assert rc == 3 and "no SSE event found" in err, err
    s.stop()


def ingest_sizes(args, tmp):
    """18: batches split by size; a record larger than the server takes is
    named with its line and the flag to raise."""
    s = Cairnd(args.cairnd, os.path.join(tmp, "d"), ["--max-message-bytes", str(1 << 20)])
    cli = Cli(args.cli, s)
    cli.run("source", "add", "s", "--format", "canonical", check_rc=0)
    path = os.path.join(tmp, "big.jsonl")
    # 40 records of 100 KB: one batch by count; by size 4 a batch (a fifth
    # would take it past 500 KB).
    canonical_file(path, 40, payload=lambda i: {"blob": "x" * 100_000})
    rc, _, err = cli.run("ingest", "--source", "s", "--max-batch-bytes", 500_000, path)
    assert rc == 0 and "batches 10: accepted 40" in err, err
    huge = os.path.join(tmp, "huge.jsonl")
    canonical_file(huge, 5, key=lambda i: f"h{i}",
                   payload=lambda i: {"blob": "y" * (2_000_000 if i == 3 else 10)})
    rc, _, err = cli.run("ingest", "--source", "s", "--max-batch-bytes", 500_000, huge)
    assert rc == 1, err
    assert "lines 4-4 make a batch of" in err and "--max-message-bytes" in err, err
    assert "lines acknowledged: 1-3" in err and "resume" in err, err
    s.stop()


def ingest_survives_restart(args, tmp):
    """17: a server restart during an ingest is survived (reconnect, resend
    what has no ack) and the summary matches the store."""
    s = Cairnd(args.cairnd, os.path.join(tmp, "d"))
    cli = Cli(args.cli, s)
    cli.run("source", "add", "s", "--format", "canonical", check_rc=0)
    path = os.path.join(tmp, "f.jsonl")
    n = 60_000
    canonical_file(path, n)
    rc, err = ingest_across_restart(args, s, path, ["--source", "s", "--batch", "20"],
                                    half_in=lambda h: cli.lines("stats")[0]["last_seq"] >= h)
    assert rc == 0, err
    assert "reconnecting" in err, err
    stored = len(cli.lines("snapshot", "--collection", "c"))
    assert stored == n, f"{stored} of {n} stored\n{err}"
    s.stop()


def ingest_atomic(args, tmp):
    """16: --atomic of any size: a file several times cairnd's message limit
    is applied by one commit, or nothing of it is; a cairnd restart while it
    is staged is survived."""
    s = Cairnd(args.cairnd, os.path.join(tmp, "d"), ["--max-message-bytes", str(1 << 20)])
    cli = Cli(args.cli, s)
    cli.run("source", "add", "s", "--format", "canonical", check_rc=0)
    n = 6000
    path = os.path.join(tmp, "big.jsonl")  # ~6.5 MB: six times the limit
    canonical_file(path, n, key=lambda i: f"a{i}", payload=lambda i: {"blob": "x" * 1000})
    assert os.path.getsize(path) > 6 * (1 << 20)
    rc, _, err = cli.run("ingest", "--source", "s", "--atomic", "--max-batch-bytes", 500_000, path)
    assert rc == 0 and f"all {n} lines applied atomically" in err, err
    assert f"accepted {n}, duplicate 0" in err, err
    assert len(cli.lines("snapshot", "--collection", "c")) == n
    assert cli.lines("stats")[0]["last_seq"] == n
    # Again: every event is a duplicate, nothing changes.
    rc, _, err = cli.run("ingest", "--source", "s", "--atomic", "--max-batch-bytes", 500_000, path)
    assert rc == 0 and f"accepted 0, duplicate {n}" in err, err
    assert cli.lines("stats")[0]["last_seq"] == n

    # A bad line near the end of a large file: nothing of the file.
    broken = os.path.join(tmp, "broken.jsonl")
    canonical_file(broken, n, broken={n - 10}, key=lambda i: f"b{i}",
                   payload=lambda i: {"blob": "x" * 1000})
    rc, _, err = cli.run("ingest", "--source", "s", "--atomic", "--max-batch-bytes", 500_000,
                         broken)
    assert rc == 3 and f"line {n - 10}" in err and "nothing of it was applied" in err, err
    keys = [e["key"] for e in cli.lines("snapshot", "--collection", "c")]
    assert not [k for k in keys if str(k).startswith("b")], "half of an --atomic file was applied"
    assert cli.lines("stats")[0]["last_seq"] == n

    # SIGKILL while the input is being staged: the session survives, nothing
    # of it is visible, the CLI reconnects (posting again what had no
    # answer) and the commit applies the whole input.
    restart = os.path.join(tmp, "restart.jsonl")
    m = 40_000
    canonical_file(restart, m, key=lambda i: f"r{i}")

    def nothing_visible():
        keys = [e["key"] for e in cli.lines("snapshot", "--collection", "c")]
        assert not [k for k in keys if str(k).startswith("r")], "staged events are visible"

    rc, err = ingest_across_restart(args, s, restart, ["--source", "s", "--atomic", "--batch", "50"],
                                    between=nothing_visible)
    assert rc == 0, err
    assert f"all {m} lines applied atomically" in err, err
    keys = [e["key"] for e in cli.lines("snapshot", "--collection", "c")]
    assert len([k for k in keys if str(k).startswith("r")]) == m
    s.stop()


def options_and_text(args, tmp):
    """20, 21, 25: numbers, flags that need each other, UTF-8, NOT_FOUND."""
    s = Cairnd(args.cairnd, os.path.join(tmp, "d"))
    cli = Cli(args.cli, s)
    for argv, words in [
            (["snapshot", "--as-of-seq", "-1"], "expected a whole number from 0"),
            (["history", "c", "1", "--limit", "-1"], "expected a whole number"),
            (["subscribe", "--max", "-1"], "expected a whole number"),
            (["snapshot", "--as-of-time", "2020-01-01T00:00:00Z", "--as-of-tick", "-1"],
             "expected a whole number"),
            (["ingest", "--source", "s", "--batch", "0"],
             "expected a whole number from 1 to 100000, got '0'"),
            (["snapshot", "--as-of-tick", "3"], "--as-of-tick requires --as-of-time"),
            (["snapshot", "--prefix", "a"], "--prefix requires --collection"),
            (["subscribe", "--prefix", "a"], "--prefix requires --collection")]:
        rc, _, err = cli.run(*argv)
        assert rc == 2 and words in err, (argv, rc, err)
    p = subprocess.run([args.cli, "--server", f"127.0.0.1:{s.port}", "get", "products",
                        b'"ab\xff\xfecd"'], capture_output=True)
    rc, err = p.returncode, p.stderr.decode(errors="replace")
    assert rc == 1 and "key is not valid UTF-8" in err and "libprotobuf" not in err, err
    rc, _, err = cli.run("history", "products", "424242")
    assert rc == 1 and "NOT_FOUND" in err, err
    s.stop()


def versions(args, tmp):
    """Issue 20: one project version, from each binary and in Stats."""
    shown = {}
    for binary, name in [(args.cairnd, "cairnd"), (args.cli, "cairn"),
                         (args.backup_tool, "cairn-backup")]:
        p = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, (binary, p.returncode, p.stderr)
        words = p.stdout.split()
        assert len(words) == 2 and words[0] == name, p.stdout
        shown[name] = words[1]
    assert len(set(shown.values())) == 1, shown
    version = shown["cairnd"]
    assert all(part.isdigit() for part in version.split(".")) and version.count(".") == 2, version
    s = Cairnd(args.cairnd, os.path.join(tmp, "d"))
    v = Cli(args.cli, s).lines("stats")[1]
    assert v["cairn_version"] == version and v["created_by"] == version, v
    assert v["format_version"] >= 4 and v["previously_opened_by"] == "", v
    s.stop()
    s.start()
    v = Cli(args.cli, s).lines("stats")[1]
    assert v["previously_opened_by"] == version, v
    s.stop()


def memory_budget(args, tmp):
    """Issue 18: the subscribers' buffer is part of --memory-budget."""
    s = Cairnd(args.cairnd, os.path.join(tmp, "d"), extra=["--memory-budget", "64MiB"])
    res = Cli(args.cli, s).lines("stats")[-1]
    mib = 1 << 20
    # An eighth each for the ring, the subscribers and cairnd's headroom for
    # gRPC's buffers (reserved: the last two); the cache the rest.
    assert res["memory_budget"] == 64 * mib and res["reserved"] == 16 * mib, res
    assert res["block_cache_capacity"] == 40 * mib, res
    assert res["subscriber_buffers"] == 0, res
    s.stop()
    p = subprocess.run([args.cairnd, "--data-dir", os.path.join(tmp, "e"), "--listen",
                        "127.0.0.1:0", "--memory-budget", "64MiB", "--subscriber-buffer-mib", "40"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and "--subscriber-buffer-mib 40 exceeds half of --memory-budget" in (
        p.stdout + p.stderr), (p.returncode, p.stdout, p.stderr)


def checkpoints_and_sessions(args, tmp):
    """22, 23 and the source/checkpoint commands."""
    s = Cairnd(args.cairnd, os.path.join(tmp, "d"))
    cli = Cli(args.cli, s)
    cli.run("source", "add", "s", "--format", "canonical", "--key", "c=id,x", "--map",
            "public.c=c", check_rc=0)
    got = cli.lines("source", "get", "s")[0]
    assert got["key_fields"] == {"c": ["id", "x"]} and got["collection_map"] == {"public.c": "c"}
    listed = cli.lines("source", "list")[0]
    assert listed["key_fields"] == {"c": ["id", "x"]}, listed
    path = os.path.join(tmp, "f.jsonl")
    canonical_file(path, 5000)
    cli.run("ingest", "--source", "s", path, check_rc=0)

    # A clean stop (--max) commits exactly the last printed change.
    out = cli.lines("subscribe", "--collection", "c", "--from", 0, "--checkpoint", "cp",
                    "--max", 3210)
    assert len(out) == 3210 and out[-1]["seq"] == 3210, out[-1]
    assert cli.lines("checkpoint", "get", "cp")[0]["seq"] == 3210
    # SIGINT mid-tail: the checkpoint is the last printed line; a restart
    # continues right after it.
    p = subprocess.Popen([args.cli, "--server", f"127.0.0.1:{s.port}", "subscribe",
                          "--collection", "c", "--checkpoint", "cp"], stdout=subprocess.PIPE)
    lines = []

    def read():
        for line in p.stdout:
            lines.append(json.loads(line))
    reader = threading.Thread(target=read)
    reader.start()
    for _ in range(500):
        if any("caught_up" in line for line in lines):
            break
        time.sleep(0.02)
    p.send_signal(signal.SIGINT)
    assert p.wait(timeout=30) == 0
    reader.join()
    changes = [line for line in lines if "seq" in line]
    assert changes and changes[0]["seq"] == 3211 and changes[-1]["seq"] == 5000, \
        (changes[:1], changes[-1:])
    assert cli.lines("checkpoint", "get", "cp")[0]["seq"] == 5000
    listing = cli.lines("checkpoint", "list")
    assert listing == [{"checkpoint": "cp", "seq": 5000, "collections": ["c"]}], listing
    cli.run("checkpoint", "rm", "cp", check_rc=0)
    rc, _, err = cli.run("checkpoint", "get", "cp")
    assert rc == 1 and "NOT_FOUND" in err, err

    # 23: a stream session reports what it applied.
    cli.run("source", "add", "contrib", "--format", "bitbroker", check_rc=0)
    _, sid, _ = cli.run("session", "open", "contrib", "countries", check_rc=0)
    upsert = os.path.join(args.fixtures, "seeds", "bitbroker-upsert.json")
    cli.run("session", "upsert", sid.strip(), upsert, check_rc=0)
    closed = cli.lines("session", "close", sid.strip())[0]
    assert closed["applied"] == 3 and closed["last_seq"] - closed["first_seq"] == 2, closed
    s.stop()


def backups(args, tmp):
    """Backup and restore (README "Backup and restore"): cairn backup
    create, cairn-backup list/verify/prune/restore, cairnd --backup-dir/
    --backup-keep/--backup-interval and --restore-from, and their refusals."""

    def tool(*a):
        # `cairn backup <command>` runs cairn-backup (the CLI links no engine).
        p = subprocess.run([args.cli, "backup"] + [str(x) for x in a], capture_output=True,
                           timeout=120)
        return p.returncode, p.stdout.decode(), p.stderr.decode()

    def tool_lines(*a):
        rc, out, err = tool(*a)
        assert rc == 0, f"cairn-backup {a}: rc {rc}\n{err}"
        return [json.loads(line) for line in out.splitlines()]
    bdir = os.path.join(tmp, "backups")
    s = Cairnd(args.cairnd, os.path.join(tmp, "live"), ["--backup-dir", bdir, "--backup-keep", "2"])
    cli = Cli(args.cli, s)
    cli.run("source", "add", "s", "--format", "canonical", check_rc=0)
    taken = []
    for n, offset in ((5000, 0), (1000, 10000), (500, 20000)):
        path = os.path.join(tmp, f"f{offset}.jsonl")
        canonical_file(path, n, key=lambda i, o=offset: i + o)
        cli.run("ingest", "--source", "s", path, check_rc=0)
        taken.append(cli.lines("backup", "create")[0])
    assert [b["id"] for b in taken] == [1, 2, 3], taken
    assert [b["seq"] for b in taken] == [5000, 6000, 6500], taken
    assert taken[0]["copied_bytes"] == taken[0]["size_bytes"] > 0, taken[0]
    stats = cli.lines("stats")
    backups_line = [line for line in stats if "backups" in line]
    assert backups_line and backups_line[0]["backups"] == 3, stats
    assert backups_line[0]["last_backup_seq"] == 6500, backups_line
    assert backups_line[0]["last_backup_time"] == taken[2]["created"], backups_line
    # A backup set of its own under --backup-dir; nothing outside it.
    pre = cli.lines("backup", "create", "sets/pre-upgrade")[0]
    assert pre["id"] == 1 and pre["seq"] == 6500, pre
    for bad in ("../out", "/tmp/out", "a//b", "./a"):
        rc, _, err = cli.run("backup", "create", bad)
        assert rc == 1 and "INVALID_ARGUMENT" in err and "--backup-dir" in err, (bad, err)
    assert not os.path.exists(os.path.join(tmp, "out"))
    s.stop()

    # --backup-keep 2: the first is gone; the others list, verify, restore.
    listed = tool_lines("list", bdir)
    direct = subprocess.run([args.backup_tool, "list", bdir], capture_output=True, check=True)
    assert [json.loads(line) for line in direct.stdout.splitlines()] == listed
    assert [(b["id"], b["seq"]) for b in listed] == [(2, 6000), (3, 6500)], listed
    assert [b["id"] for b in tool_lines("list", os.path.join(bdir, "sets/pre-upgrade"))] == [1]
    assert all(b["format_version"] > 0 and b["cairn_version"] for b in listed), listed
    assert tool_lines("verify", bdir, "--id", 2)[0]["seq"] == 6000
    target = os.path.join(tmp, "restored")
    assert tool_lines("restore", bdir, target)[0]["seq"] == 6500
    r = Cairnd(args.cairnd, target)
    rcli = Cli(args.cli, r)
    assert rcli.lines("stats")[0]["last_seq"] == 6500
    assert rcli.lines("get", "c", 20499)[0]["document"] == {"i": 499}
    r.stop()
    # cairnd --restore-from: restores, then serves.
    r = Cairnd(args.cairnd, os.path.join(tmp, "restored2"), ["--restore-from", bdir,
                                                             "--backup-id", "2"])
    rcli = Cli(args.cli, r)
    assert rcli.lines("stats")[0]["last_seq"] == 6000
    rc, _, err = rcli.run("get", "c", 20000)
    assert rc == 1 and "NOT_FOUND" in err, err
    r.stop()

    # Refusals: over a store, an unknown id, a cairnd without --backup-dir,
    # a cairnd asked to restore over its data.
    rc, _, err = tool("restore", bdir, target)
    assert rc == 1 and "not empty" in err, err
    rc, _, err = tool("verify", bdir, "--id", 9)
    assert rc == 1 and "NOT_FOUND" in err and "no backup 9" in err, err
    p = subprocess.run([args.cairnd, "--data-dir", target, "--listen", "127.0.0.1:0",
                        "--restore-from", bdir], capture_output=True, timeout=60)
    assert p.returncode == 2 and b"not empty" in p.stdout + p.stderr, p
    plain = Cairnd(args.cairnd, os.path.join(tmp, "plain"))
    rc, _, err = Cli(args.cli, plain).run("backup", "create")
    assert rc == 1 and "FAILED_PRECONDITION" in err and "--backup-dir" in err, err
    plain.stop()

    # A damaged table: verify names the file; restore restores nothing.
    tables = [os.path.join(d, f) for d, _, fs in os.walk(bdir) for f in fs if f.endswith(".sst")]
    victim = max(tables, key=os.path.getsize)
    with open(victim, "r+b") as f:
        f.seek(os.path.getsize(victim) // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0x5A]))
    failed = {}
    for backup_id in (2, 3):  # the table may be backup 2's only, or shared
        rc, _, err = tool("verify", bdir, "--id", backup_id)
        if rc != 0:
            failed[backup_id] = err
    assert failed, "no backup found damaged"
    for err in failed.values():
        assert "DATA_LOSS" in err and os.path.basename(victim) in err, (victim, err)
    rc, _, err = tool("restore", bdir, os.path.join(tmp, "restored3"), "--id",
                         min(failed))
    assert rc == 1 and "DATA_LOSS" in err, err
    assert not os.path.exists(os.path.join(tmp, "restored3"))
    assert tool_lines("prune", bdir, "--keep", 1) == [{"deleted": 2}]

    # --backup-interval: backups come by themselves.
    sched = os.path.join(tmp, "scheduled")
    s = Cairnd(args.cairnd, os.path.join(tmp, "live"), ["--backup-dir", sched,
                                                        "--backup-interval", "1"])
    for _ in range(200):
        rc, out, _ = tool("list", sched)
        if rc == 0 and len(out.splitlines()) >= 2:
            break
        time.sleep(0.05)
    listed = tool_lines("list", sched)
    assert len(listed) >= 2 and listed[-1]["seq"] == 6500, listed
    s.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cairnd", required=True)
    ap.add_argument("--cli", required=True)
    ap.add_argument("--fixtures", required=True)
    ap.add_argument("--backup-tool", required=True)
    ap.add_argument("--only")
    args = ap.parse_args()
    sections = [ingest_policy, ingest_sizes, ingest_atomic, ingest_survives_restart, options_and_text,
                versions, memory_budget, checkpoints_and_sessions, backups]
    run_sections(sections, args)


if __name__ == "__main__":
    main()
