"""Shared by the Python e2e tests: a real cairnd on loopback, calls through
grpc's generic stubs, and status assertions."""

import os
import subprocess
import sys
import tempfile
import time
import traceback

import grpc

OK = grpc.StatusCode.OK


class Cairnd:
    """cairnd on 127.0.0.1 with a free port; stderr kept for log checks."""

    # Every instance a section started: run_sections stops what a failing
    # section left running (and shows its log).
    started = []

    def __init__(self, binary, data_dir, extra=()):
        self.binary, self.data_dir, self.extra = binary, data_dir, list(extra)
        self.proc, self.port, self.log = None, None, ""
        Cairnd.started.append(self)
        self.start()

    def start(self, port=0):
        port_file = self.data_dir + ".port"
        if os.path.exists(port_file):
            os.remove(port_file)
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [self.binary, "--data-dir", self.data_dir, "--listen", f"127.0.0.1:{port}",
             "--port-file", port_file, "--log-level", "warn"] + self.extra,
            stdout=self.stderr, stderr=subprocess.STDOUT)
        for _ in range(500):
            if os.path.exists(port_file) or self.proc.poll() is not None:
                break
            time.sleep(0.02)
        assert self.proc.poll() is None, "cairnd exited at start"
        self.port = int(open(port_file).read())
        self.channel = grpc.insecure_channel(
            f"127.0.0.1:{self.port}",
            options=[("grpc.max_receive_message_length", 64 << 20),
                     ("grpc.max_send_message_length", 64 << 20)])

    def stop(self):
        """SIGTERM; asserts a clean exit (a crash is a failure)."""
        self.channel.close()
        self.proc.terminate()
        rc = self.proc.wait(timeout=60)
        self.stderr.seek(0)
        self.log += self.stderr.read().decode(errors="replace")
        assert rc == 0, f"cairnd exited with {rc}:\n{self.log[-2000:]}"

    def alive(self):
        assert self.proc.poll() is None, f"cairnd died: {self.proc.returncode}"
        health = self.channel.unary_unary("/grpc.health.v1.Health/Check",
                                          request_serializer=lambda b: b,
                                          response_deserializer=lambda b: b)
        health(b"", timeout=10)


def call(ch, service, method, kind, req, resp, token=None, **kw):
    """A call through grpc's generic stubs; returns (code, message, result)."""
    md = kw.pop("metadata", None)
    if md is None and token is not None:
        md = [("authorization", token if token.startswith(("Bearer", "Basic")) else
               "Bearer " + token)]
    fn = getattr(ch, kind)(f"/cairn.v1.{service}/{method}",
                           request_serializer=(lambda b: b) if isinstance(req, bytes) or
                           kind.startswith("stream") else req.SerializeToString,
                           response_deserializer=resp.FromString)
    try:
        if kind == "unary_unary":
            return OK, "", fn(req, metadata=md, timeout=30, **kw)
        if kind == "unary_stream":
            items = []
            limit = kw.pop("limit", None)
            stream = fn(req, metadata=md, timeout=30, **kw)
            for item in stream:
                items.append(item)
                if limit and len(items) >= limit:
                    stream.cancel()
                    break
            return OK, "", items
        # stream_stream: req is a list of messages or raw bytes
        msgs = [m if isinstance(m, bytes) else m.SerializeToString() for m in req]
        return OK, "", list(fn(iter(msgs), metadata=md, timeout=30, **kw))
    except grpc.RpcError as e:
        if e.code() == grpc.StatusCode.CANCELLED and kind == "unary_stream":
            return OK, "", items
        return e.code(), e.details() or "", None


def expect(result, code, *words, what=""):
    got, msg, _ = result
    assert got == code, f"{what}: expected {code.name}, got {got.name}: {msg[:300]}"
    for w in words:
        assert w in msg, f"{what}: message lacks {w!r}: {msg[:300]}"
    assert len(msg) <= 1200, f"{what}: message of {len(msg)} bytes echoes its input"
    return result[2]


def ack_code(acks):
    return grpc.StatusCode(next(c for c in grpc.StatusCode if c.value[0] == acks[0].code))


def expect_ack(result, code, *words, what=""):
    got, msg, acks = result
    assert got == OK, f"{what}: stream failed {got.name}: {msg[:300]}"
    assert len(acks) == 1, f"{what}: {len(acks)} acks"
    c = ack_code(acks)
    assert c == code, f"{what}: ack {c.name}: {acks[0].message[:300]}"
    for w in words:
        assert w in acks[0].message, f"{what}: ack message lacks {w!r}: {acks[0].message[:300]}"
    return acks[0]


def parse_args(*extra):
    """The e2e tests' command line: --cairnd, --cli, --fixtures, --only, and
    `extra` as (flag, argparse keywords) pairs."""
    import argparse
    ap = argparse.ArgumentParser()
    ap.add_argument("--cairnd", required=True)
    ap.add_argument("--cli", required=True)
    ap.add_argument("--fixtures", required=True)
    ap.add_argument("--only")
    for flag, kw in extra:
        ap.add_argument(flag, **kw)
    return ap.parse_args()


def run_sections(sections, args):
    """Runs each section (a function of args and a fresh temporary folder)
    whose name contains args.only, reports PASS/FAIL per section and closes
    with the 'N passed, N failed' line; exits non-zero on any failure."""
    passed = failed = 0
    for section in sections:
        if args.only and args.only not in section.__name__:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            start = time.time()
            try:
                section(args, tmp)
                passed += 1
                print(f"PASS {section.__name__} ({time.time() - start:.1f} s)")
            except Exception:  # noqa: BLE001 - report every section
                failed += 1
                print(f"FAIL {section.__name__}")
                traceback.print_exc()
                for d in Cairnd.started:
                    if d.proc and d.proc.poll() is None:
                        d.stderr.seek(0)
                        tail = d.stderr.read().decode(errors="replace")[-2000:]
                        print(f"  cairnd on port {d.port}, still running; its log:\n{tail}")
            finally:
                # A failed section must not leave a cairnd behind.
                for d in Cairnd.started:
                    if d.proc and d.proc.poll() is None:
                        d.proc.kill()
                        d.proc.wait()
                Cairnd.started.clear()
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)
