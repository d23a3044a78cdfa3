#!/usr/bin/python3
"""Hostile clients against a real cairnd (issue: hardening).

Each section starts its own cairnd on loopback and checks that:
  * the server stays up (every check ends with a health call),
  * a rejected request gets the documented status naming what is wrong,
  * nothing of a rejected request is stored: a digest of every column family
    (store_digest, taken with the server stopped) is the same before and
    after the whole run of rejected requests,
  * the auth matrix (every RPC x every kind of credential) has no
    unauthorized success.
Prints one line per section and a closing 'N passed, N failed' line; exits
non-zero on any failure."""

import argparse
import json
import os
import re
import subprocess
import sys
import time

import grpc

from harness import Cairnd, ack_code, call, expect, expect_ack, run_sections

pb = None  # cairn.v1 messages, imported in main()

OK = grpc.StatusCode.OK
INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
OUT_OF_RANGE = grpc.StatusCode.OUT_OF_RANGE
DENIED = grpc.StatusCode.PERMISSION_DENIED
UNAUTH = grpc.StatusCode.UNAUTHENTICATED
FAILED_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION

DEEP = 100_000  # nesting levels of the hostile documents
TS = 1_700_000_000_000_000


def event(key, payload='{"v":1}', ts=TS, source="billing", collection="account", op=None):
    return pb.Event(source=source, collection=collection, key=key,
                    position=pb.Position(timestamp=ts), op=op or pb.OP_UPSERT, payload=payload)


def ingest(ch, events, batch_id=1, token=None):
    return call(ch, "Ingest", "IngestEvents", "stream_stream",
                [pb.IngestRequest(batch_id=batch_id, events=events)], pb.IngestAck, token)


def digest(tool, data_dir):
    return subprocess.run([tool, data_dir], check=True, capture_output=True,
                          text=True).stdout.strip()


def varint(n):
    out = b""
    while True:
        out += bytes([(n & 0x7F) | (0x80 if n > 0x7F else 0)])
        n >>= 7
        if not n:
            return out


def wire(*fields):
    """A protobuf message by hand: (field number, bytes) pairs, each
    length-delimited -- so a `string` field can hold bytes that are not
    UTF-8, which the generated classes refuse to build."""
    return b"".join(varint(num << 3 | 2) + varint(len(data)) + data for num, data in fields)


def deep_array(n=DEEP):
    return "[" * n + "]" * n


def deep_object(n):
    return '{"a":' * n + "1" + "}" * n


# ---------------------------------------------------------------------------
# Sections

def rejected_requests_store_nothing(args, tmp):
    """Items 1, 2, 8, 9, 11, 12, 13: crashes, wrong answers and unbounded
    echoes. Every request here is rejected; the store is unchanged."""
    data = os.path.join(tmp, "rejected")
    s = Cairnd(args.cairnd, data)
    ch = s.channel
    expect(call(ch, "Admin", "PutSource", "unary_unary", pb.PutSourceRequest(
        source=pb.Source(name="billing", format="canonical")), pb.PutSourceResponse), OK)
    expect(call(ch, "Admin", "PutSource", "unary_unary", pb.PutSourceRequest(
        source=pb.Source(name="contrib", format="bitbroker",
                         json_schemas={"c": '{"type":"object"}'})), pb.PutSourceResponse), OK)
    expect_ack(ingest(ch, [event('"a"')]), OK)
    stream_sid = expect(call(ch, "Sessions", "Open", "unary_unary", pb.OpenSessionRequest(
        source="contrib", collection="c", mode=pb.SESSION_MODE_STREAM),
        pb.OpenSessionResponse), OK).session_id
    atomic_sid = expect(call(ch, "Sessions", "Open", "unary_unary", pb.OpenSessionRequest(
        source="billing", mode=pb.SESSION_MODE_ATOMIC), pb.OpenSessionResponse), OK).session_id
    s.stop()
    before = digest(args.digest, data)
    s.start()
    ch = s.channel

    # 1. Nesting: rejected before any recursive code, naming the field.
    deep = deep_array()
    expect(call(ch, "Query", "Get", "unary_unary", pb.GetRequest(collection="account", key=deep),
                pb.Entity), INVALID, "key", "nest deeper than 64", what="Get deep key")
    expect(call(ch, "Query", "History", "unary_unary",
                pb.HistoryRequest(collection="account", key=deep), pb.HistoryResponse),
           INVALID, "key", "nest deeper", what="History deep key")
    expect(call(ch, "Query", "Subscribe", "unary_stream",
                pb.SubscribeRequest(keys=[deep], now=True), pb.SubscribeItem),
           INVALID, "filter.keys[0]", what="Subscribe deep key")
    expect_ack(ingest(ch, [event('"b"', payload=deep)]), INVALID, "event 0", "payload",
               "nest deeper than 512", what="IngestEvents deep payload")
    expect_ack(ingest(ch, [event(deep)]), INVALID, "event 0", "key", what="IngestEvents deep key")
    expect_ack(ingest(ch, [event('"b"', payload=deep_object(DEEP))]), INVALID, "payload",
               what="IngestEvents deep object payload")
    canonical = json.dumps({"source": "billing", "collection": "account", "key": "x",
                            "position": {"timestamp": TS, "tick": 0}, "op": "upsert",
                            "payload": {"a": 1}}).replace('{"a": 1}', deep_object(DEEP))
    expect_ack(call(ch, "Ingest", "IngestPayloads", "stream_stream",
                    [pb.IngestRawRequest(batch_id=1, source="billing", payload=canonical.encode())],
                    pb.IngestAck), INVALID, "record 0", what="IngestPayloads deep canonical")
    expect(call(ch, "Sessions", "Upsert", "unary_unary", pb.SessionUpsertRequest(
        session_id=stream_sid, records=[pb.SessionRecord(key='"k"', document=deep_object(DEEP))]),
        pb.SessionReport), INVALID, "nest deeper", what="Sessions.Upsert deep document")
    expect(call(ch, "Sessions", "Upsert", "unary_unary", pb.SessionUpsertRequest(
        session_id=stream_sid, records=[pb.SessionRecord(key=deep, document="{}")]),
        pb.SessionReport), INVALID, "nest deeper", what="Sessions.Upsert deep key")
    bb = '[{"id":"GB","name":"x","entity":%s}]' % deep_object(DEEP)
    expect(call(ch, "Sessions", "Upsert", "unary_unary", pb.SessionUpsertRequest(
        session_id=stream_sid, payload=bb.encode()), pb.SessionReport), INVALID, "nest deeper",
        what="Sessions.Upsert deep bitbroker")
    expect_ack(ingest(ch, [event('"b"', payload=deep_object(513))]), INVALID, "512",
               what="IngestEvents 513 levels")
    expect(call(ch, "Sessions", "Ingest", "unary_unary", pb.SessionIngestRequest(
        session_id=atomic_sid, events=[event('"b"', payload=deep)]), pb.SessionIngestResponse),
        INVALID, "event 0", "nest deeper", what="Sessions.Ingest deep payload")
    expect(call(ch, "Sessions", "Ingest", "unary_unary", pb.SessionIngestRequest(
        session_id=atomic_sid, payload=canonical.encode()), pb.SessionIngestResponse),
        INVALID, "record 0", what="Sessions.Ingest deep canonical")
    expect(call(ch, "Sessions", "Ingest", "unary_unary", pb.SessionIngestRequest(
        session_id=atomic_sid, events=[event('"b"')], payload=b"{}"), pb.SessionIngestResponse),
        INVALID, "not both", what="Sessions.Ingest events and payload")
    expect(call(ch, "Sessions", "Ingest", "unary_unary", pb.SessionIngestRequest(
        session_id=stream_sid, events=[event('"b"')]), pb.SessionIngestResponse),
        FAILED_PRECONDITION, "stream session", what="Sessions.Ingest into a stream session")
    s.alive()

    # 2. Schemas whose references loop without progress are refused.
    for schema in ['{"$ref":"#"}', '{"allOf":[{"$ref":"#"}]}',
                   '{"definitions":{"a":{"$ref":"#/definitions/b"},"b":{"anyOf":[{"$ref":'
                   '"#/definitions/a"}]}},"$ref":"#/definitions/a"}',
                   '{"not":{"$ref":"#"}}', '{"$ref":"http://example.com/s.json"}',
                   '{"$ref":"#/nowhere"}', deep_object(600)]:
        expect(call(ch, "Admin", "PutSource", "unary_unary", pb.PutSourceRequest(source=pb.Source(
            name="f3", format="bitbroker", json_schemas={"c": schema})), pb.PutSourceResponse),
            INVALID, "json_schemas[c]", what=f"schema {schema[:40]}")
    s.alive()

    # 9. A start after the last commit is OUT_OF_RANGE naming the last seq.
    for seq in (10 ** 9, 2 ** 64 - 1):
        expect(call(ch, "Query", "Subscribe", "unary_stream", pb.SubscribeRequest(from_seq=seq),
                    pb.SubscribeItem), OUT_OF_RANGE, "last committed seq 1",
               what=f"Subscribe from {seq}")

    # 11. Echoes are bounded (the call itself must not fail on header size).
    expect(call(ch, "Query", "Get", "unary_unary", pb.GetRequest(
        collection="account", key='"' + "k" * 20000 + '"'), pb.Entity), NOT_FOUND, "bytes)",
        what="Get long key")

    # 12. Names are bounded; Stats stays answerable.
    for i in range(17):
        expect(call(ch, "Query", "CommitCheckpoint", "unary_unary", pb.CommitCheckpointRequest(
            name=f"{i}" + "n" * (1 << 20), seq=0), pb.CommitCheckpointResponse), INVALID,
            "checkpoint name", "256", what="1 MiB checkpoint name")
    for name in ["a\x00b", "tab\there", "x" * 257, ""]:
        expect(call(ch, "Admin", "PutSource", "unary_unary", pb.PutSourceRequest(
            source=pb.Source(name=name, format="canonical")), pb.PutSourceResponse), INVALID,
            "source name", what=f"source name {name[:10]!r}")
        expect_ack(ingest(ch, [event('"c"', collection=name)]), INVALID, "collection",
                   what=f"collection {name[:10]!r}")
    expect(call(ch, "Admin", "Stats", "unary_unary", pb.StatsRequest(), pb.StatsResponse), OK)

    # A quoted name that looks like a record index past 64 bits (the ack's
    # record-error parser threw on it and killed the ingest thread).
    expect_ack(ingest(ch, [event('"d"', collection="a\x01; event 99999999999999999999999: x")]),
               INVALID, "control character", what="an index-like name")
    s.alive()

    # 13. Ranges.
    expect(call(ch, "Admin", "SetRetention", "unary_unary", pb.SetRetentionRequest(
        retention=pb.Retention(max_age_seconds=2 ** 64 - 1)), pb.SetRetentionResponse), INVALID,
        "max_age_seconds", "out of range", what="retention 2^64-1")
    expect(call(ch, "Query", "History", "unary_unary", pb.HistoryRequest(
        collection="account", key='"a"', from_seq=10, to_seq=2), pb.HistoryResponse), INVALID,
        "from_seq 10 is after to_seq 2", what="inverted history")

    # 8. A stream that cannot be read ends non-OK; nothing after is applied.
    good = pb.IngestRequest(batch_id=41, events=[]).SerializeToString()
    later = pb.IngestRequest(batch_id=43, events=[event('"late"')]).SerializeToString()
    code, msg, _ = call(ch, "Ingest", "IngestEvents", "stream_stream",
                        [good, b"\xff\xff\xff", later], pb.IngestAck)
    assert code == INVALID and "message 1" in msg and "not a protobuf" in msg, (code, msg)
    # IngestRequest.events (2) holding an Event whose key (3) is not UTF-8.
    bad_utf8 = wire((2, wire((1, b"billing"), (2, b"account"), (3, b'"ab\xff\xfecd"'),
                             (6, b"{}"))))
    code, msg, _ = call(ch, "Ingest", "IngestEvents", "stream_stream", [bad_utf8, later],
                        pb.IngestAck)
    assert code == INVALID and "events[0].key is not valid UTF-8" in msg, (code, msg)
    code, msg, _ = call(ch, "Ingest", "IngestPayloads", "stream_stream",
                        [wire((2, b"bil\xffling"))], pb.IngestAck)
    assert code == INVALID and "source is not valid UTF-8" in msg, (code, msg)
    # Unary calls too (gRPC alone answers UNIMPLEMENTED with no message).
    expect(call(ch, "Query", "Get", "unary_unary", wire((1, b"account"), (2, b'"ab\xff"')),
                pb.Entity), INVALID, "cairn.v1.GetRequest", "key is not valid UTF-8",
           what="Get with a key that is not UTF-8")
    expect(call(ch, "Admin", "PutSource", "unary_unary",
                wire((1, wire((1, b"s"), (2, b"canonical"), (5, b"\xc3(")))),
                pb.PutSourceResponse), INVALID, "source.default_collection is not valid UTF-8",
           what="PutSource with a field that is not UTF-8")
    expect(call(ch, "Query", "History", "unary_unary", b"\xff\xff\xff", pb.HistoryResponse),
           INVALID, "not a protobuf message", what="History garbage")
    # And the server streams: SubscribeRequest.keys (4), SnapshotRequest.key_prefix (4).
    expect(call(ch, "Query", "Subscribe", "unary_stream", wire((4, b'"\xff"')),
                pb.SubscribeItem), INVALID, "keys[0] is not valid UTF-8",
           what="Subscribe with a key that is not UTF-8")
    expect(call(ch, "Query", "Snapshot", "unary_stream", wire((3, b"c"), (4, b"\xe2\x82")),
                pb.SnapshotItem), INVALID, "key_prefix is not valid UTF-8",
           what="Snapshot with a prefix that is not UTF-8")
    expect(call(ch, "Query", "Get", "unary_unary", pb.GetRequest(collection="account",
                                                                 key='"late"'), pb.Entity),
           NOT_FOUND)
    s.alive()
    s.stop()
    after = digest(args.digest, data)
    assert before == after, f"store changed by rejected requests: {before} -> {after}"


def accepted_bounds(args, tmp):
    """What lies inside the bounds is accepted: 512 levels, recursive schemas
    that descend, and a garbage frame after a good batch keeps that batch."""
    s = Cairnd(args.cairnd, os.path.join(tmp, "accepted"))
    ch = s.channel
    expect_ack(ingest(ch, [event('"deep"', payload=deep_object(511))]), OK)
    e = expect(call(ch, "Query", "Get", "unary_unary",
                    pb.GetRequest(collection="account", key='"deep"'), pb.Entity), OK)
    assert e.document == deep_object(511), e.document[:100]
    tree = ('{"type":"object","properties":{"children":{"type":"array","items":{"$ref":"#"}}},'
            '"definitions":{"n":{"allOf":[{"$ref":"#"}]}}}')
    expect(call(ch, "Admin", "PutSource", "unary_unary", pb.PutSourceRequest(source=pb.Source(
        name="tree", format="bitbroker", json_schemas={"c": tree})), pb.PutSourceResponse), OK)
    sid = expect(call(ch, "Sessions", "Open", "unary_unary", pb.OpenSessionRequest(
        source="tree", collection="c", mode=pb.SESSION_MODE_STREAM),
        pb.OpenSessionResponse), OK).session_id
    entity = '{"children":[{"children":[{"children":[]}]}]}'
    expect(call(ch, "Sessions", "Upsert", "unary_unary", pb.SessionUpsertRequest(
        session_id=sid, payload=('[{"id":"GB","name":"x","entity":%s}]' % entity).encode()),
        pb.SessionReport), OK)
    wrong = '{"children":[{"children":7}]}'
    expect(call(ch, "Sessions", "Upsert", "unary_unary", pb.SessionUpsertRequest(
        session_id=sid, payload=('[{"id":"GB","name":"x","entity":%s}]' % wrong).encode()),
        pb.SessionReport), INVALID, "JSON Schema")

    # 8 again, with a good batch first: it is acked and applied, the stream
    # ends INVALID_ARGUMENT, the batch after the garbage is not applied.
    first = pb.IngestRequest(batch_id=41, events=[event('"g41"')]).SerializeToString()
    after = pb.IngestRequest(batch_id=43, events=[event('"g43"')]).SerializeToString()
    fn = ch.stream_stream("/cairn.v1.Ingest/IngestEvents", request_serializer=lambda b: b,
                          response_deserializer=pb.IngestAck.FromString)
    acks = []
    try:
        for a in fn(iter([first, b"\xff\xff\xff", after]), timeout=30):
            acks.append(a)
        raise AssertionError("stream with a garbage frame ended OK")
    except grpc.RpcError as err:
        assert err.code() == INVALID, err
    assert [a.batch_id for a in acks] == [41] and acks[0].code == 0, acks
    expect(call(ch, "Query", "Get", "unary_unary", pb.GetRequest(collection="account",
                                                                 key='"g41"'), pb.Entity), OK)
    expect(call(ch, "Query", "Get", "unary_unary", pb.GetRequest(collection="account",
                                                                 key='"g43"'), pb.Entity),
           NOT_FOUND)

    # 10. The sources filter applies to the snapshot phase.
    expect_ack(ingest(ch, [event('"o1"', source="other"), event('"o2"', source="other")]), OK)
    items = expect(call(ch, "Query", "Subscribe", "unary_stream", pb.SubscribeRequest(
        sources=["other"], snapshot=True), pb.SubscribeItem, limit=3), OK)
    keys = [i.snapshot_entity.key for i in items if i.WhichOneof("item") == "snapshot_entity"]
    assert keys == ['"o1"', '"o2"'], keys
    s.alive()
    s.stop()


TOKENS = {"tokens": [
    {"token": "t-admin", "write": ["*"], "read": ["*"], "admin": True},
    {"token": "t-writer", "write": ["billing", "contrib"], "read": []},
    {"token": "t-reader", "read": ["account", "c"]},
    {"token": "t-other", "write": ["other"], "read": ["other"]},
]}


def auth_matrix(args, tmp):
    """Every RPC x none / malformed / wrong / other-scope / read-for-write /
    write-for-read / valid: 0 unauthorized successes, and valid succeeds."""
    tokens = os.path.join(tmp, "tokens.json")
    with open(tokens, "w") as f:
        json.dump(TOKENS, f)
    s = Cairnd(args.cairnd, os.path.join(tmp, "auth"),
               ["--tokens", tokens, "--backup-dir", os.path.join(tmp, "auth-backups")])
    ch = s.channel
    admin = "t-admin"
    for src in [pb.Source(name="billing", format="canonical"),
                pb.Source(name="contrib", format="bitbroker")]:
        expect(call(ch, "Admin", "PutSource", "unary_unary", pb.PutSourceRequest(source=src),
                    pb.PutSourceResponse, admin), OK)
    expect_ack(ingest(ch, [event('"a"')], token=admin), OK)

    def session(token):
        r = call(ch, "Sessions", "Open", "unary_unary", pb.OpenSessionRequest(
            source="contrib", collection="c", mode=pb.SESSION_MODE_ACCRUE),
            pb.OpenSessionResponse, admin)
        return expect(r, OK).session_id

    def atomic_session():
        r = call(ch, "Sessions", "Open", "unary_unary", pb.OpenSessionRequest(
            source="billing", mode=pb.SESSION_MODE_ATOMIC), pb.OpenSessionResponse, admin)
        return expect(r, OK).session_id

    def ack_or_status(r):
        code, msg, acks = r
        if code != OK or not acks:
            return code
        return ack_code(acks)

    canonical_line = json.dumps({"source": "billing", "collection": "account", "key": "p",
                                 "position": {"timestamp": TS + 5}, "op": "upsert",
                                 "payload": {"x": 1}}).encode()
    # (name, needs, function of token -> status code)
    rpcs = [
        ("Ingest.IngestEvents", "write",
         lambda t: ack_or_status(ingest(ch, [event('"m"', ts=TS + 1)], token=t))),
        ("Ingest.IngestPayloads", "write", lambda t: ack_or_status(call(
            ch, "Ingest", "IngestPayloads", "stream_stream",
            [pb.IngestRawRequest(batch_id=1, source="billing", payload=canonical_line)],
            pb.IngestAck, t))),
        ("Sessions.Open", "write", lambda t: call(ch, "Sessions", "Open", "unary_unary",
                                                  pb.OpenSessionRequest(source="contrib",
                                                                        collection="c"),
                                                  pb.OpenSessionResponse, t)[0]),
        ("Sessions.Upsert", "write", lambda t: call(ch, "Sessions", "Upsert", "unary_unary",
                                                    pb.SessionUpsertRequest(
                                                        session_id=session(t),
                                                        records=[pb.SessionRecord(
                                                            key='"k"', document="{}")]),
                                                    pb.SessionReport, t)[0]),
        ("Sessions.Delete", "write", lambda t: call(ch, "Sessions", "Delete", "unary_unary",
                                                    pb.SessionDeleteRequest(
                                                        session_id=session(t), keys=['"k"']),
                                                    pb.SessionReport, t)[0]),
        ("Sessions.Ingest", "write", lambda t: call(ch, "Sessions", "Ingest", "unary_unary",
                                                    pb.SessionIngestRequest(
                                                        session_id=atomic_session(),
                                                        payload=canonical_line),
                                                    pb.SessionIngestResponse, t)[0]),
        ("Sessions.Close", "write", lambda t: call(ch, "Sessions", "Close", "unary_unary",
                                                   pb.CloseSessionRequest(
                                                       session_id=session(t), commit=False),
                                                   pb.CloseSessionResponse, t)[0]),
        ("Query.Get", "read", lambda t: call(ch, "Query", "Get", "unary_unary", pb.GetRequest(
            collection="account", key='"a"'), pb.Entity, t)[0]),
        ("Query.Snapshot", "read", lambda t: call(ch, "Query", "Snapshot", "unary_stream",
                                                  pb.SnapshotRequest(collection="account"),
                                                  pb.SnapshotItem, t)[0]),
        ("Query.History", "read", lambda t: call(ch, "Query", "History", "unary_unary",
                                                 pb.HistoryRequest(collection="account",
                                                                   key='"a"'),
                                                 pb.HistoryResponse, t)[0]),
        ("Query.Subscribe", "read", lambda t: call(ch, "Query", "Subscribe", "unary_stream",
                                                   pb.SubscribeRequest(collections=["account"],
                                                                       from_seq=0),
                                                   pb.SubscribeItem, t, limit=1)[0]),
        ("Query.CommitCheckpoint", "read", lambda t: call(
            ch, "Query", "CommitCheckpoint", "unary_unary", pb.CommitCheckpointRequest(
                name="cp-account", seq=1, collections=["account"]),
            pb.CommitCheckpointResponse, t)[0]),
        ("Query.GetCheckpoint", "read", lambda t: call(
            ch, "Query", "GetCheckpoint", "unary_unary",
            pb.GetCheckpointRequest(name="cp-account"), pb.GetCheckpointResponse, t)[0]),
    ] + [(f"Admin.{m}", "admin", (lambda m, req, resp: lambda t: call(
        ch, "Admin", m, "unary_unary", req, resp, t)[0])(m, req, resp)) for m, req, resp in [
        ("PutSource", pb.PutSourceRequest(source=pb.Source(name="s2", format="canonical")),
         pb.PutSourceResponse),
        ("GetSource", pb.GetSourceRequest(name="billing"), pb.Source),
        ("ListSources", pb.ListSourcesRequest(), pb.ListSourcesResponse),
        ("RemoveSource", pb.RemoveSourceRequest(name="s2"), pb.RemoveSourceResponse),
        ("Stats", pb.StatsRequest(), pb.StatsResponse),
        ("SetRetention", pb.SetRetentionRequest(retention=pb.Retention()),
         pb.SetRetentionResponse),
        ("GetRetention", pb.GetRetentionRequest(), pb.Retention),
        ("Compact", pb.CompactRequest(), pb.CompactResponse),
        ("ListCheckpoints", pb.ListCheckpointsRequest(), pb.ListCheckpointsResponse),
        ("DeleteCheckpoint", pb.DeleteCheckpointRequest(name="cp-account"),
         pb.DeleteCheckpointResponse),
        ("Backup", pb.BackupRequest(), pb.BackupResponse),
        ("PutSource", pb.PutSourceRequest(source=pb.Source(name="feed", format="sse-feed")),
         pb.PutSourceResponse),
        ("PutConnector", pb.PutConnectorRequest(connector=pb.Connector(
            name="c2", source="feed", urls=["http://127.0.0.1:9/feed"])),
         pb.PutConnectorResponse),
        ("GetConnector", pb.GetConnectorRequest(name="c2"), pb.Connector),
        ("ListConnectors", pb.ListConnectorsRequest(), pb.ListConnectorsResponse),
        ("ConnectorStatus", pb.ConnectorStatusRequest(), pb.ConnectorStatusResponse),
        ("RemoveConnector", pb.RemoveConnectorRequest(name="c2"), pb.RemoveConnectorResponse),
        ("PutSink", pb.PutSinkRequest(sink=pb.Sink(name="s2", url="http://127.0.0.1:9/hook")),
         pb.PutSinkResponse),
        ("GetSink", pb.GetSinkRequest(name="s2"), pb.Sink),
        ("ListSinks", pb.ListSinksRequest(), pb.ListSinksResponse),
        ("SinkStatus", pb.SinkStatusRequest(), pb.SinkStatusResponse),
        ("ListDeadLetters", pb.ListDeadLettersRequest(name="s2"), pb.ListDeadLettersResponse),
        ("ReplayDeadLetters", pb.ReplayDeadLettersRequest(name="s2"),
         pb.ReplayDeadLettersResponse),
        ("RemoveSink", pb.RemoveSinkRequest(name="s2"), pb.RemoveSinkResponse),
    ]]
    # The credentials: (name, metadata or token, denied with)
    creds = [("none", None, UNAUTH), ("malformed", "Basic dXNlcjpwdw==", UNAUTH),
             ("empty bearer", "Bearer ", UNAUTH), ("wrong", "Bearer nope", UNAUTH),
             ("other-scope", "t-other", DENIED)]
    unauthorized, calls = [], 0
    for name, needs, fn in rpcs:
        matrix = list(creds)
        if needs == "write":
            matrix += [("read-for-write", "t-reader", DENIED)]
            valid = "t-writer"
        elif needs == "read":
            matrix += [("write-for-read", "t-writer", DENIED)]
            valid = "t-reader"
        else:
            matrix += [("read-for-admin", "t-reader", DENIED), ("write-for-admin", "t-writer",
                                                               DENIED)]
            valid = admin
        for cred, token, denied in matrix:
            if name == "Query.GetCheckpoint" and cred == "other-scope":
                denied = NOT_FOUND  # another scope's checkpoint is not there for it
            calls += 1
            code = fn(token) if token else fn(None)
            if code == OK or code != denied:
                unauthorized.append(f"{name} with {cred}: {code.name} (expected {denied.name})")
        code = fn(valid)
        assert code == OK, f"{name} with a valid token: {code.name}"
    assert not unauthorized, "\n".join(unauthorized)
    print(f"  auth matrix: {len(rpcs)} RPCs, {calls} denied calls, 0 unauthorized successes")

    # 4. Checkpoints belong to the scope they were created for.
    def commit(token, name, seq, collections=()):
        return call(ch, "Query", "CommitCheckpoint", "unary_unary", pb.CommitCheckpointRequest(
            name=name, seq=seq, collections=list(collections)), pb.CommitCheckpointResponse,
            token)

    expect(commit(admin, "admin-cp", 1), OK)
    expect(commit("t-reader", "admin-cp", 0), DENIED, what="reader resets admin-cp")
    expect(commit("t-reader", "admin-cp", 0, ["account"]), DENIED,
           what="reader resets admin-cp naming its own scope")
    expect(commit("t-writer", "w-cp", 0, ["account"]), DENIED, what="write-only commits")
    # Out of its scope, a checkpoint answers as one that does not exist.
    for name in ["admin-cp", "no-such-cp"]:
        expect(call(ch, "Query", "GetCheckpoint", "unary_unary", pb.GetCheckpointRequest(
            name=name), pb.GetCheckpointResponse, "t-reader"), NOT_FOUND,
            "that this token may read", what=f"reader gets {name}")
        expect(call(ch, "Query", "Subscribe", "unary_stream", pb.SubscribeRequest(
            collections=["account"], checkpoint=name), pb.SubscribeItem, "t-reader"), NOT_FOUND,
            "that this token may read", what=f"reader resumes from {name}")
    expect(call(ch, "Query", "GetCheckpoint", "unary_unary", pb.GetCheckpointRequest(
        name="admin-cp"), pb.GetCheckpointResponse, "t-writer"), DENIED,
        what="a token without a read grant")
    expect(commit("t-reader", "r-cp", 1, ["account"]), OK)
    expect(commit("t-other", "r-cp", 0, ["other"]), DENIED, what="other moves r-cp")
    got = expect(call(ch, "Query", "GetCheckpoint", "unary_unary", pb.GetCheckpointRequest(
        name="r-cp"), pb.GetCheckpointResponse, "t-reader"), OK)
    assert got.seq == 1 and list(got.collections) == ["account"], got
    listing = expect(call(ch, "Admin", "ListCheckpoints", "unary_unary",
                          pb.ListCheckpointsRequest(), pb.ListCheckpointsResponse, admin), OK)
    assert [c.name for c in listing.checkpoints] == ["admin-cp", "r-cp"], listing
    expect(call(ch, "Admin", "DeleteCheckpoint", "unary_unary", pb.DeleteCheckpointRequest(
        name="r-cp"), pb.DeleteCheckpointResponse, "t-reader"), DENIED)
    expect(call(ch, "Admin", "DeleteCheckpoint", "unary_unary", pb.DeleteCheckpointRequest(
        name="r-cp"), pb.DeleteCheckpointResponse, admin), OK)
    expect(call(ch, "Query", "GetCheckpoint", "unary_unary", pb.GetCheckpointRequest(
        name="r-cp"), pb.GetCheckpointResponse, "t-reader"), NOT_FOUND)

    # 6. No probing: authentication first, the same answer for registered
    # and unregistered sources, unguessable session ids.
    for method, req, resp in [
            ("Upsert", pb.SessionUpsertRequest(session_id="nope"), pb.SessionReport),
            ("Delete", pb.SessionDeleteRequest(session_id="nope"), pb.SessionReport),
            ("Ingest", pb.SessionIngestRequest(session_id="nope"), pb.SessionIngestResponse),
            ("Close", pb.CloseSessionRequest(session_id="nope"), pb.CloseSessionResponse)]:
        expect(call(ch, "Sessions", method, "unary_unary", req, resp), UNAUTH,
               what=f"Sessions.{method} unknown id, no token")
        expect(call(ch, "Sessions", method, "unary_unary", req, resp, "t-reader"), DENIED,
               what=f"Sessions.{method} unknown id, reader")
    for source in ["billing", "unregistered"]:
        a = expect_ack(call(ch, "Ingest", "IngestPayloads", "stream_stream",
                            [pb.IngestRawRequest(batch_id=1, source=source, payload=b"{}")],
                            pb.IngestAck, "t-other"), DENIED, what=f"payloads into {source}")
        assert source in a.message, a
    # Even a request that does not parse learns nothing without a token.
    expect(call(ch, "Query", "Get", "unary_unary", b"\xff\xff\xff", pb.Entity), UNAUTH,
           what="garbage without a token")
    ids = [session(admin) for _ in range(3)]
    assert all(re.fullmatch("[0-9a-f]{32}", i) for i in ids), ids
    common = [sum(x == y for x, y in zip(a, b)) for a, b in zip(ids, ids[1:])]
    assert max(common) < 16, f"session ids share {common} characters: {ids}"
    s.alive()
    s.stop()

    # 7. Denied calls are logged, never with the token.
    assert "denied Query.Get from" in s.log, s.log[-2000:]
    assert "nope" not in s.log and "t-reader" not in s.log, "a token reached the log"


def startup_refusals(args, tmp):
    """7. What cairnd refuses to start with."""
    def run(*flags):
        p = subprocess.run([args.cairnd, "--data-dir", os.path.join(tmp, "startup")] +
                           list(flags), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, timeout=60)
        return p.returncode, p.stdout

    rc, err = run("--listen", "0.0.0.0:0")
    assert rc == 2 and "refusing to listen on 0.0.0.0:0" in err, (rc, err)
    rc, err = run("--listen", "[::]:0")
    assert rc == 2 and "insecure-allow-remote" in err, (rc, err)
    rc, err = run("--listen", "127.example.invalid:0")  # a name, not 127.0.0.0/8
    assert rc == 2 and "refusing" in err, (rc, err)
    cert = os.path.join(tmp, "ca.pem")
    open(cert, "w").write("not a cert")
    rc, err = run("--tls-client-ca", cert)
    assert rc == 2 and "--tls-client-ca needs --tls-cert" in err, (rc, err)
    # With the explicit flag it serves, saying so. It listens on every
    # address, but this test only ever connects to loopback.
    port_file = os.path.join(tmp, "remote.port")
    p = subprocess.Popen([args.cairnd, "--data-dir", os.path.join(tmp, "remote"), "--listen",
                          "0.0.0.0:0", "--insecure-allow-remote", "--port-file", port_file],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for _ in range(500):
        if os.path.exists(port_file) or p.poll() is not None:
            break
        time.sleep(0.02)
    assert p.poll() is None, p.stdout.read()
    p.terminate()
    err, _ = p.communicate(timeout=60)
    assert "not loopback" in err and "warn" in err, err


def rss_mib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024
    raise AssertionError("no VmRSS")


# The documented bound (README "Limits"): with the defaults, 500 subscribers
# that never read plus 500 idle connections stay under this RSS.
RSS_BOUND_MIB = 512


def resource_bounds(args, tmp):
    """14: bounded streams, bounded memory for slow consumers, memory that
    comes back, a cut-off for stalled subscribers, bounded batches."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    s = Cairnd(args.cairnd, os.path.join(tmp, "rss"))
    ch = s.channel
    doc = json.dumps({"blob": "x" * 4000})
    for b in range(20):  # 2,000 updates of 4 KB
        expect_ack(ingest(ch, [event(f'"k{b * 100 + i}"', payload=doc, ts=TS + b * 100 + i)
                               for i in range(100)], batch_id=b), OK)
    time.sleep(1)
    start = rss_mib(s.proc.pid)
    channels = [grpc.insecure_channel(f"127.0.0.1:{s.port}") for _ in range(10)]
    subs = []
    for i in range(500):
        fn = channels[i % 10].unary_stream(
            "/cairn.v1.Query/Subscribe", request_serializer=pb.SubscribeRequest.SerializeToString,
            response_deserializer=pb.SubscribeItem.FromString)
        subs.append(fn(pb.SubscribeRequest(from_seq=0, max_batch=1024)))  # never read
    idle = []
    for _ in range(500):
        c = grpc.insecure_channel(f"127.0.0.1:{s.port}")
        grpc.channel_ready_future(c).result(timeout=30)
        idle.append(c)
    time.sleep(3)
    peak = rss_mib(s.proc.pid)
    s.alive()
    for sub in subs:
        sub.cancel()
    for c in channels + idle:
        c.close()
    # The dispatcher trims once a second after streams end; tearing down
    # 1,000 streams and connections takes longer when other tests load the
    # machine: wait up to 20 s for RSS to come back (the bound is the same).
    deadline = time.monotonic() + 20
    after = rss_mib(s.proc.pid)
    while after > start * 1.2 and time.monotonic() < deadline:
        time.sleep(0.5)
        after = rss_mib(s.proc.pid)
    print(f"  RSS: {start} MiB at start, {peak} MiB with 500 never-reading subscribers and "
          f"500 idle connections, {after} MiB after they left")
    assert peak < RSS_BOUND_MIB, f"{peak} MiB >= the documented {RSS_BOUND_MIB} MiB"
    assert after <= start * 1.2, f"RSS did not come back: {start} -> {after} MiB"
    big = [event(f'"b{i}"', op=pb.OP_DELETE, payload="") for i in range(100_001)]
    expect_ack(ingest(ch, big), INVALID, "100001 events; the limit is 100000")
    s.stop()

    # Stream counts and the stall cut-off.
    s = Cairnd(args.cairnd, os.path.join(tmp, "limits"),
               ["--max-subscriptions", "3", "--max-ingest-streams", "2",
                "--subscriber-stall-seconds", "1"])
    ch = s.channel
    for b in range(10):
        expect_ack(ingest(ch, [event(f'"k{b * 100 + i}"', payload=doc, ts=TS + b * 100 + i)
                               for i in range(100)], batch_id=b), OK)
    # Without BDP probing the client's window stays at 64 KB: a client that
    # does not read holds the server's message, as a slow consumer would.
    slow = grpc.insecure_channel(f"127.0.0.1:{s.port}", options=[("grpc.http2.bdp_probe", 0)])
    fn = slow.unary_stream("/cairn.v1.Query/Subscribe",
                           request_serializer=pb.SubscribeRequest.SerializeToString,
                           response_deserializer=pb.SubscribeItem.FromString)
    held = [fn(pb.SubscribeRequest(from_seq=0), timeout=30) for _ in range(3)]
    for h in held:
        next(h)  # open for sure
    expect(call(ch, "Query", "Subscribe", "unary_stream", pb.SubscribeRequest(now=True),
                pb.SubscribeItem, limit=1), grpc.StatusCode.RESOURCE_EXHAUSTED,
           "--max-subscriptions", what="a fourth subscription")
    expect(call(ch, "Query", "Snapshot", "unary_stream", pb.SnapshotRequest(),
                pb.SnapshotItem), grpc.StatusCode.RESOURCE_EXHAUSTED, "--max-subscriptions",
           what="a snapshot past the limit")
    # None of them reads: each is cut off once its message waits 1 s (what
    # its client had already buffered still arrives, then CANCELLED).
    time.sleep(4)
    cut = 0
    for h in held:
        try:
            for _ in h:
                pass
        except grpc.RpcError as err:
            cut += err.code() == grpc.StatusCode.CANCELLED
    assert cut == 3, f"{cut} of 3 stalled subscribers were cut off"
    items = expect(call(ch, "Query", "Subscribe", "unary_stream",
                        pb.SubscribeRequest(from_seq=999), pb.SubscribeItem, limit=1), OK)
    assert items, "a place was not given back"
    ing = ch.stream_stream("/cairn.v1.Ingest/IngestEvents", request_serializer=lambda b: b,
                           response_deserializer=pb.IngestAck.FromString)
    import queue
    feeds = [queue.Queue() for _ in range(2)]

    def gen(q):
        while True:
            m = q.get()
            if m is None:
                return
            yield m
    open_streams = [ing(gen(q)) for q in feeds]
    for q in feeds:
        q.put(pb.IngestRequest(batch_id=1).SerializeToString())
    for st in open_streams:
        next(st)
    code, msg, _ = call(ch, "Ingest", "IngestEvents", "stream_stream",
                        [pb.IngestRequest(batch_id=1)], pb.IngestAck)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "--max-ingest-streams" in msg, \
        (code, msg)
    for q in feeds:
        q.put(None)
    for st in open_streams:
        list(st)
    s.alive()
    s.stop()
    assert "cut off" in s.log, s.log[-2000:]


def main():
    global pb
    ap = argparse.ArgumentParser()
    ap.add_argument("--cairnd", required=True)
    ap.add_argument("--digest", required=True)
    ap.add_argument("--cli", required=True)
    ap.add_argument("--pyout", required=True)
    ap.add_argument("--only", help="run the sections whose name contains this")
    args = ap.parse_args()
    sys.path.insert(0, args.pyout)
    from cairn.v1 import cairn_pb2
    pb = cairn_pb2
    sections = [rejected_requests_store_nothing, accepted_bounds, auth_matrix, startup_refusals,
                resource_bounds]
    run_sections(sections, args)


if __name__ == "__main__":
    main()
