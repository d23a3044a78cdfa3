// End-to-end: a real cairnd on loopback, driven by the real client library.
#include <grpcpp/grpcpp.h>
#include <stdio.h>

#include <atomic>
#include <map>
#include <set>
#include <thread>

#include "cairn/client.h"
#include "cairn/v1/cairn.grpc.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server_process.h"
#include "test_util.h"

namespace cairn::e2e {
namespace {

using client::Client;
using ::testing::HasSubstr;

std::unique_ptr<Client> Connect(const ServerProcess& server, std::string token = "",
                                absl::Duration reconnect = absl::Seconds(30)) {
  auto c =
      Client::Connect({.target = server.address(), .token = token, .reconnect_window = reconnect});
  EXPECT_TRUE(c.ok()) << c.status();
  return *std::move(c);
}

Event Ev(const std::string& key, uint64_t ts, std::string payload = R"({"v":1})",
         Op op = Op::kUpsert, const std::string& source = "billing",
         const std::string& collection = "account") {
  return Event{.source = source,
               .collection = collection,
               .key = key,
               .position = {ts, 0},
               .op = op,
               .payload = std::move(payload)};
}

class E2eTest : public ::testing::Test {
 protected:
  TempDir dir_;
};

TEST_F(E2eTest, EveryRpcSucceeds) {
  ServerProcess server(dir_.Sub("data"));
  auto c = Connect(server);
  ASSERT_TRUE(c->Health().ok());
  ASSERT_TRUE(c->PutSource({.name = "billing", .format = "canonical"}).ok());
  ASSERT_TRUE(c->PutSource({.name = "contrib", .format = "bitbroker"}).ok());
  EXPECT_EQ(c->GetSource("billing")->format, "canonical");
  EXPECT_EQ(c->ListSources()->size(), 2u);

  auto r = c->Ingest({Ev("1", 10, R"({"a":1,"n":3.140000104904175})"), Ev("2", 11),
                      Ev("1", 12, R"({"b":2})", Op::kPatch)},
                     /*durable=*/true);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->applied, 3u);
  EXPECT_EQ(r->first_seq, 1u);
  EXPECT_EQ(r->last_seq, 3u);
  auto dup = c->Ingest({Ev("2", 11)}, false);
  ASSERT_TRUE(dup.ok());
  EXPECT_EQ(dup->outcomes, std::vector<Outcome>{Outcome::kDuplicate});

  auto e = c->Get("account", "1");
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->document, R"({"a":1,"n":3.140000104904175,"b":2})");
  EXPECT_EQ(e->seq, 3u);

  std::vector<std::string> now, at_seq1, at_pos10;
  ASSERT_TRUE(c->Snapshot({}, [&](const Entity& x) { return now.push_back(x.key), true; }).ok());
  ASSERT_TRUE(c->Snapshot({.as_of_seq = 1}, [&](const Entity& x) {
                 return at_seq1.push_back(x.document), true;
               }).ok());
  ASSERT_TRUE(c->Snapshot({.as_of_position = Position{10, 0}}, [&](const Entity& x) {
                 return at_pos10.push_back(x.document), true;
               }).ok());
  EXPECT_EQ(now, (std::vector<std::string>{"1", "2"}));
  EXPECT_EQ(at_seq1, std::vector<std::string>{R"({"a":1,"n":3.140000104904175})"});
  EXPECT_EQ(at_pos10, at_seq1);

  auto h = c->History("account", "1", {.reverse = true});
  ASSERT_TRUE(h.ok());
  ASSERT_EQ(h->size(), 2u);
  EXPECT_EQ((*h)[0].op, Op::kPatch);
  EXPECT_EQ((*h)[0].before, R"({"a":1,"n":3.140000104904175})");

  auto sub = c->Subscribe({.collections = {"account"}},
                          {.kind = client::SubscribeStart::Kind::kFromSeq, .from_seq = 1});
  ASSERT_TRUE(sub.ok());
  std::vector<uint64_t> seqs;
  SubscriptionItem item;
  while (seqs.size() < 2) {
    auto got = (*sub)->Next(absl::Seconds(10), &item);
    ASSERT_TRUE(got.ok() && *got) << got.status();
    if (item.kind == SubscriptionItem::Kind::kChange) seqs.push_back(item.change.seq);
  }
  EXPECT_EQ(seqs, (std::vector<uint64_t>{2, 3}));
  ASSERT_TRUE(c->CommitCheckpoint("etl", 3).ok());
  EXPECT_EQ(*c->GetCheckpoint("etl"), 3u);

  auto id = c->OpenSession("contrib", "countries", SessionMode::kAccrue);
  ASSERT_TRUE(id.ok()) << id.status();
  auto keys = c->SessionUpsert(*id, {{.key = "\"GB\"", .document = R"({"name":"UK"})"}});
  ASSERT_TRUE(keys.ok());
  EXPECT_EQ(*keys, std::vector<std::string>{"\"GB\""});
  EXPECT_EQ(c->Get("countries", "\"GB\"").status().code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(c->SessionDelete(*id, {"\"FR\""}).ok());
  auto closed = c->CloseSession(*id, true);
  ASSERT_TRUE(closed.ok()) << closed.status();
  EXPECT_EQ(c->Get("countries", "\"GB\"")->document, R"({"name":"UK"})");

  ASSERT_TRUE(c->SetRetention({.max_commits = 1000}).ok());
  EXPECT_EQ(c->GetRetention()->max_commits, 1000u);
  ASSERT_TRUE(c->Compact().ok());
  auto stats = c->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->store.last_seq, 4u);
  EXPECT_EQ(stats->store.sources.at("billing").accepted, 3u);
  EXPECT_EQ(stats->store.sources.at("billing").duplicates, 1u);
  EXPECT_EQ(stats->checkpoints.at("etl"), 3u);
  EXPECT_EQ(stats->subscriptions.size(), 1u);
  // The subscription (collection account) has delivered 2 and 3 and skipped
  // 4 (countries): caught up, lag 0, once the dispatcher has looked.
  for (int i = 0;
       i < 250 && (stats->subscriptions.empty() || stats->subscriptions[0].delivered_seq != 4);
       ++i) {
    absl::SleepFor(absl::Milliseconds(20));
    stats = c->Stats();
    ASSERT_TRUE(stats.ok());
  }
  ASSERT_EQ(stats->subscriptions.size(), 1u);
  EXPECT_EQ(stats->subscriptions[0].delivered_seq, 4u);
  EXPECT_EQ(stats->subscriptions[0].lag, 0u);
  ASSERT_TRUE(c->RemoveSource("contrib").ok());
}

// Runs the cairn CLI against `server`; returns its exit code and stdout.
std::pair<int, std::string> Cli(const ServerProcess& server, const std::string& args) {
  std::string cmd =
      std::string(CAIRN_CLI_PATH) + " --server " + server.address() + " " + args + " 2>/dev/null";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  for (size_t n; (n = fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
  int status = pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

std::string Fixture(const std::string& relative) {
  return std::string(CAIRN_FIXTURES_DIR) + "/" + relative;
}

// The fixtures, registered and ingested with the cairn CLI, reach the end
// states ../shared/fixtures/README.md gives.
TEST_F(E2eTest, FixturesThroughTheCli) {
  ServerProcess server(dir_.Sub("data"));
  auto run = [&](const std::string& args) {
    auto [code, out] = Cli(server, args);
    EXPECT_EQ(code, 0) << args;
    return out;
  };
  run("source add products-db --format debezium --key products=id");
  run("ingest --source products-db --batch 4 " +
      Fixture("flink/debezium-postgres-data-schema-exclude.txt"));
  run("source add ogg --format goldengate --map OGG.TBL_TEST=ogg_products");
  run("ingest --source ogg " + Fixture("flink/ogg-data.txt"));
  run("source add billing --format sse-feed");
  run("ingest --source billing --batch 1 " + Fixture("seeds/aria-feed.sse"));
  run("source add plant --format datapoints --default-collection series");
  run("ingest --source plant " + Fixture("seeds/omnia-datapoints.json"));
  run("source add iis --format infosphere --default-collection users");
  run("ingest --source iis " + Fixture("seeds/infosphere-basic.jsonl"));
  run("source add contrib --format bitbroker");
  std::string id = run("session open contrib countries --mode stream");
  while (!id.empty() && id.back() == '\n') id.pop_back();
  ASSERT_FALSE(id.empty());
  run("session upsert " + id + " " + Fixture("seeds/bitbroker-upsert.json"));
  run("session delete " + id + " GB BR");
  run("session close " + id);

  auto c = Connect(server);
  auto keys = [&](const std::string& collection) {
    std::vector<std::string> out;
    EXPECT_TRUE(c->Snapshot({.collection = collection}, [&](const Entity& e) {
                   return out.push_back(e.key), true;
                 }).ok());
    return out;
  };
  const std::vector<std::string> products = {"101", "102", "103", "104", "105",
                                             "106", "107", "108", "109", "110"};
  EXPECT_EQ(keys("products"), products);
  EXPECT_EQ(keys("ogg_products"), products);
  EXPECT_THAT(c->Get("products", "106")->document, HasSubstr("18oz carpenter hammer"));
  EXPECT_THAT(c->Get("ogg_products", "107")->document, HasSubstr(R"("weight":5.099999904632568)"));
  EXPECT_EQ(c->Get("account", "1001")->document,
            R"({"acct_no":1001,"status":"ACTIVE","plan":"gold","balance":99.0})");
  EXPECT_EQ(c->Get("account", "1003")->document,
            R"({"acct_no":1003,"status":"ACTIVE","plan":"platinum","balance":10})");
  EXPECT_EQ(keys("account"), (std::vector<std::string>{"1001", "1002", "1003"}));
  EXPECT_EQ(c->History("series", R"("4ec07552-7334-47f8-ac9f-666e65304b1a")", {})->size(), 2u);
  EXPECT_TRUE(keys("users").empty());
  EXPECT_EQ(keys("countries"), std::vector<std::string>{R"("IN")"});
  auto stats = c->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->store.sources.at("billing").duplicates, 1u);
  EXPECT_EQ(stats->store.sources.at("products-db").accepted, 16u);

  // The snapshot command at a past point: before 107's update (seq 10 is the
  // first update in the Debezium file), 107 still weighed 5.3.
  std::string past = run("snapshot --collection products --as-of-seq 9");
  EXPECT_THAT(past, HasSubstr(R"("weight":5.3)"));
  EXPECT_THAT(past, ::testing::Not(HasSubstr("18oz")));
}

// `cairn ingest` on a pipe sends what arrives as it arrives: an event of a
// live SSE feed is in the store while the feed is still open.
TEST_F(E2eTest, CliIngestStreamsALiveFeed) {
  ServerProcess server(dir_.Sub("data"));
  auto c = Connect(server);
  ASSERT_TRUE(c->PutSource({.name = "billing", .format = "sse-feed"}).ok());
  std::string cmd = std::string(CAIRN_CLI_PATH) + " --server " + server.address() +
                    " ingest --source billing --batch 100 - 2>/dev/null";
  FILE* feed = popen(cmd.c_str(), "w");
  ASSERT_NE(feed, nullptr);
  fputs(
      "event: load\n"
      "data: {\"entity\":\"account\",\"key\":{\"acct_no\":1001},"
      "\"timestamp\":\"2026-11-20T10:00:00Z\",\"tick\":1}\n"
      "data: {\"acct_no\":1001,\"balance\":1}\n\n",
      feed);
  fflush(feed);
  absl::StatusOr<Entity> e;
  for (absl::Time deadline = absl::Now() + absl::Seconds(20); absl::Now() < deadline;) {
    if ((e = c->Get("account", "1001")).ok()) break;
    absl::SleepFor(absl::Milliseconds(50));
  }
  ASSERT_TRUE(e.ok()) << "the first event did not arrive while the feed was open: " << e.status();
  // The next event arrives split across writes, its end with the close.
  fputs(
      "event: update\ndata: "
      "{\"entity\":\"account\",\"key\":{\"acct_no\":1001},",
      feed);
  fflush(feed);
  absl::SleepFor(absl::Milliseconds(300));
  fputs(
      "\"timestamp\":\"2026-11-20T10:00:05Z\",\"tick\":2}\ndata: "
      "{\"balance\":2}\n",
      feed);
  int status = pclose(feed);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  EXPECT_EQ(c->Get("account", "1001")->document, R"({"acct_no":1001,"balance":2})");
}

// A payload its source's decoder refuses: INVALID_ARGUMENT naming the record
// and field, counted as a rejected batch, nothing applied.
TEST_F(E2eTest, MalformedPayloadIsRejectedWithRecordIndex) {
  ServerProcess server(dir_.Sub("data"));
  auto c = Connect(server);
  ASSERT_TRUE(
      c->PutSource({.name = "pg", .format = "debezium", .key_fields = {{"products", {"id"}}}})
          .ok());
  std::string good =
      R"({"op":"c","after":{"id":1},"source":{"table":"products","ts_ms":1,"lsn":1}})";
  std::string bad = R"({"op":"c","after":{"id":2},"source":{"table":"products","ts_ms":"x"}})";
  std::vector<client::RecordError> errors;
  auto r = c->IngestPayload("pg", good + "\n" + bad + "\n", false, &errors);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("record 1: line 2: source.ts_ms"));
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].index, 1u);
  EXPECT_EQ(errors[0].field, "source.ts_ms");
  EXPECT_EQ(c->Stats()->store.last_seq, 0u);
  EXPECT_EQ(c->Stats()->store.sources.at("pg").rejected_batches, 1u);

  // Session-only formats are not ingested directly.
  ASSERT_TRUE(c->PutSource({.name = "contrib", .format = "bitbroker"}).ok());
  auto direct = c->IngestPayload("contrib", R"(["GB"])", false);
  EXPECT_EQ(direct.status().code(), absl::StatusCode::kFailedPrecondition) << direct.status();
}

TEST_F(E2eTest, ErrorCodesLeaveStoreUnchanged) {
  ServerProcess server(dir_.Sub("data"), {"--max-message-bytes", "65536"});
  auto c = Connect(server);
  ASSERT_TRUE(c->Ingest({Ev("1", 1)}, false).ok());
  uint64_t seq = c->Stats()->store.last_seq;

  EXPECT_EQ(c->Get("account", "404").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(c->GetSource("nope").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(c->Snapshot({.as_of_seq = 99}, [](const Entity&) { return true; }).code(),
            absl::StatusCode::kOutOfRange);
  EXPECT_EQ(c->OpenSession("nope", "c", SessionMode::kStream).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(c->CloseSession("no-such-session", true).status().code(), absl::StatusCode::kNotFound);

  std::vector<client::RecordError> errors;
  auto bad = c->Ingest({Ev("2", 2), Ev("3", 3, "[1,2]")}, false, &errors);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("event 1"));
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].index, 1u);
  EXPECT_EQ(errors[0].field, "payload");

  auto unknown = c->IngestPayload("nope", "{}", false);
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kNotFound);

  auto huge = c->Ingest({Ev("4", 4, R"({"blob":")" + std::string(100000, 'x') + "\"}")}, false);
  EXPECT_EQ(huge.status().code(), absl::StatusCode::kResourceExhausted) << huge.status();

  // The server is still healthy and nothing of the failed calls was applied.
  ASSERT_TRUE(c->Health().ok());
  EXPECT_EQ(c->Stats()->store.last_seq, seq);
  EXPECT_EQ(c->Get("account", "2").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(c->Get("account", "4").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(E2eTest, TokensScopeWritesReadsAndAdmin) {
  std::string tokens = dir_.Sub("tokens.json");
  std::ofstream(tokens) << R"({"tokens":[
      {"token":"writer","write":["billing"],"read":["account"]},
      {"token":"ops","write":["*"],"read":["*"],"admin":true}]})";
  ServerProcess server(dir_.Sub("data"), {"--tokens", tokens});
  auto anonymous = Connect(server);
  auto wrong = Connect(server, "guess");
  auto writer = Connect(server, "writer");
  auto ops = Connect(server, "ops");

  EXPECT_EQ(anonymous->Ingest({Ev("1", 1)}, false).status().code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(wrong->Get("account", "1").status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(writer->Ingest({Ev("1", 1, "{}", Op::kUpsert, "orders")}, false).status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(writer->Get("secrets", "1").status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(writer->Stats().status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(writer->Snapshot({}, [](const Entity&) { return true; }).code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(ops->Stats()->store.last_seq, 0u);  // nothing applied so far

  ASSERT_TRUE(writer->Ingest({Ev("1", 1)}, false).ok());
  EXPECT_TRUE(writer->Get("account", "1").ok());
  EXPECT_EQ(ops->Stats()->store.last_seq, 1u);
}

TEST_F(E2eTest, SnapshotHandOffWhileIngesting) {
  ServerProcess server(dir_.Sub("data"));
  auto c = Connect(server);
  ASSERT_TRUE(c->Ingest({Ev("0", 1), Ev("1", 1)}, false).ok());
  std::atomic<bool> done{false};
  std::jthread writer([&] {
    auto w = Connect(server);
    for (int i = 0; i < 300; ++i) {
      std::string key = std::to_string(i % 40);
      Op op = i % 7 == 6 ? Op::kDelete : Op::kUpsert;
      ASSERT_TRUE(
          w->Ingest({Ev(key, 100 + i, R"({"i":)" + std::to_string(i) + "}", op)}, false).ok());
    }
    done = true;
  });
  auto sub = c->Subscribe({}, {.kind = client::SubscribeStart::Kind::kSnapshot});
  ASSERT_TRUE(sub.ok());
  std::map<std::string, std::string> state;
  std::set<uint64_t> seen;
  uint64_t last = 0, snapshot_seq = 0;
  bool in_snapshot = true;
  SubscriptionItem item;
  absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (true) {
    // `done` first: once the writer is done, the last seq is final.
    if (done && !in_snapshot && last == c->Stats()->store.last_seq) break;
    ASSERT_LT(absl::Now(), deadline) << "subscriber stuck at seq " << last;
    auto got = (*sub)->Next(absl::Milliseconds(200), &item);
    ASSERT_TRUE(got.ok()) << got.status();
    if (!*got) continue;
    switch (item.kind) {
      case SubscriptionItem::Kind::kSnapshotEntity:
        state[item.entity.key] = item.entity.document;
        break;
      case SubscriptionItem::Kind::kSnapshotEnd:
        in_snapshot = false;
        snapshot_seq = last = item.seq;
        break;
      case SubscriptionItem::Kind::kChange:
        ASSERT_FALSE(in_snapshot);
        ASSERT_EQ(item.change.seq, last + 1) << "gap or duplicate at the hand-off";
        ASSERT_TRUE(seen.insert(item.change.seq).second);
        last = item.change.seq;
        if (item.change.after.empty()) {
          state.erase(item.change.key);
        } else {
          state[item.change.key] = item.change.after;
        }
        break;
      case SubscriptionItem::Kind::kCaughtUp:
        break;
    }
  }
  writer.join();
  std::map<std::string, std::string> want;
  ASSERT_TRUE(c->Snapshot({}, [&](const Entity& e) {
                 want[e.key] = e.document;
                 return true;
               }).ok());
  EXPECT_EQ(state, want);
  EXPECT_GT(last, snapshot_seq);
}

// A pipelined ingest stream: 200 one-event batches sent before any ack is
// read. Through the raw API with coalesce_acks, every batch is acked exactly
// once, in order, and the acks arrive in fewer messages than batches; without
// it, one ack per message. Through the client library (which asks for
// coalesced acks), Receive still returns one result per batch, in order.
TEST_F(E2eTest, PipelinedBatchesGetEveryAckInOrder) {
  ServerProcess server(dir_.Sub("data"));
  constexpr int kBatches = 200;
  auto raw_stream = [&](bool coalesce, uint64_t ts0, std::vector<uint64_t>* batch_ids) {
    auto channel = grpc::CreateChannel(server.address(), grpc::InsecureChannelCredentials());
    auto stub = v1::Ingest::NewStub(channel);
    grpc::ClientContext ctx;
    auto stream = stub->IngestEvents(&ctx);
    for (int i = 0; i < kBatches; ++i) {
      v1::IngestRequest req;
      req.set_batch_id(1000 + i);
      req.set_coalesce_acks(coalesce);
      v1::Event* e = req.add_events();
      e->set_source("billing");
      e->set_collection("account");
      e->set_key(std::to_string(i % 7));
      e->mutable_position()->set_timestamp(ts0 + i);
      e->set_op(v1::OP_UPSERT);
      e->set_payload(R"({"i":)" + std::to_string(i) + "}");
      EXPECT_TRUE(stream->Write(req));
    }
    stream->WritesDone();
    size_t messages = 0;
    v1::IngestAck ack;
    while (stream->Read(&ack)) {
      ++messages;
      EXPECT_EQ(ack.code(), 0) << ack.message();
      batch_ids->push_back(ack.batch_id());
      for (const v1::IngestAck& more : ack.coalesced()) {
        EXPECT_EQ(more.code(), 0) << more.message();
        EXPECT_EQ(more.applied(), 1u);
        EXPECT_EQ(more.coalesced_size(), 0);
        batch_ids->push_back(more.batch_id());
      }
    }
    EXPECT_TRUE(stream->Finish().ok());
    return messages;
  };
  std::vector<uint64_t> want(kBatches);
  for (int i = 0; i < kBatches; ++i) want[i] = 1000 + i;

  std::vector<uint64_t> ids;
  size_t messages = raw_stream(/*coalesce=*/true, 1000, &ids);
  EXPECT_EQ(ids, want);
  EXPECT_LT(messages, static_cast<size_t>(kBatches)) << "no ack was coalesced";

  ids.clear();
  EXPECT_EQ(raw_stream(/*coalesce=*/false, 5000, &ids), static_cast<size_t>(kBatches));
  EXPECT_EQ(ids, want);

  auto c = Connect(server);
  auto stream = c->OpenIngestStream(false);
  ASSERT_TRUE(stream.ok());
  for (int i = 0; i < kBatches; ++i) {
    ASSERT_TRUE((*stream)->Send({Ev(std::to_string(100 + i), 9000 + i)}, false).ok());
  }
  uint64_t last = 2 * kBatches;  // the raw streams' changes
  for (int i = 0; i < kBatches; ++i) {
    auto r = (*stream)->Receive();
    ASSERT_TRUE(r.ok()) << i << ": " << r.status();
    EXPECT_EQ(r->applied, 1u);
    EXPECT_EQ(r->first_seq, last + 1) << i;
    last = r->last_seq;
  }
  EXPECT_TRUE((*stream)->Close().ok());
  EXPECT_EQ(c->Stats()->store.last_seq, 3u * kBatches);
}

// One thread sends while another receives on the same ingest stream; the
// server is killed under them. Every result received before is in order,
// and both sides end with an error instead of crashing or hanging (each side
// waits for the status the other side's Finish returns when it has one).
TEST_F(E2eTest, ConcurrentSendAndReceiveEndCleanlyWhenTheServerDies) {
  ServerProcess server(dir_.Sub("data"));
  auto c = Connect(server);
  auto stream = c->OpenIngestStream(false);
  ASSERT_TRUE(stream.ok());
  std::atomic<int> sent{0};
  absl::Status send_end, receive_end;
  std::thread sender([&] {
    for (int i = 0;; ++i) {
      absl::Status s = (*stream)->Send(
          {Ev(std::to_string(i % 100), 10 + i, R"({"i":)" + std::to_string(i) + "}")}, false);
      if (!s.ok()) {
        send_end = s;
        return;
      }
      sent++;
      if (i % 64 == 63) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  });
  std::atomic<int> received{0};
  uint64_t last = 0;
  std::thread receiver([&] {
    while (true) {
      auto r = (*stream)->Receive();
      if (!r.ok()) {
        receive_end = r.status();
        return;
      }
      EXPECT_EQ(r->first_seq, last + 1);
      last = r->last_seq;
      received++;
    }
  });
  while (received < 500) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  server.Kill(SIGKILL);
  sender.join();
  receiver.join();
  EXPECT_FALSE(send_end.ok());
  EXPECT_FALSE(receive_end.ok());
  EXPECT_GE(received, 500);
  EXPECT_LE(received, sent.load());
  EXPECT_FALSE((*stream)->Close().ok());
}

// A subscriber behind by 500 changes: with max_batch 64 they arrive in
// order, up to 64 per message, in fewer messages; without it, one change per
// message. Either way the caught-up marker follows the last one.
TEST_F(E2eTest, SubscriptionBatchesChangesWhileBehind) {
  ServerProcess server(dir_.Sub("data"));
  constexpr int kChanges = 500;
  {
    auto c = Connect(server);
    std::vector<Event> events;
    for (int i = 0; i < kChanges; ++i) {
      events.push_back(Ev(std::to_string(i % 50), 10 + i, R"({"i":)" + std::to_string(i) + "}"));
    }
    auto r = c->Ingest(std::move(events), false);
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(r->last_seq, static_cast<uint64_t>(kChanges));
  }
  auto channel = grpc::CreateChannel(server.address(), grpc::InsecureChannelCredentials());
  auto stub = v1::Query::NewStub(channel);
  auto read_all = [&](uint32_t max_batch, size_t* messages, size_t* largest) {
    grpc::ClientContext ctx;
    v1::SubscribeRequest req;
    req.set_from_seq(0);
    req.set_max_batch(max_batch);
    auto reader = stub->Subscribe(&ctx, req);
    std::vector<uint64_t> seqs;
    v1::SubscribeItem item;
    *messages = *largest = 0;
    while (reader->Read(&item)) {
      if (item.has_caught_up()) {
        EXPECT_EQ(item.caught_up(), static_cast<uint64_t>(kChanges));
        break;
      }
      EXPECT_TRUE(item.has_change());
      ++*messages;
      seqs.push_back(item.change().seq());
      for (const v1::Change& c : item.more_changes()) seqs.push_back(c.seq());
      *largest = std::max<size_t>(*largest, 1 + item.more_changes_size());
    }
    ctx.TryCancel();
    reader->Finish().IgnoreError();
    return seqs;
  };
  std::vector<uint64_t> want(kChanges);
  for (int i = 0; i < kChanges; ++i) want[i] = i + 1;
  size_t messages = 0, largest = 0;
  EXPECT_EQ(read_all(64, &messages, &largest), want);
  EXPECT_LE(largest, 64u);
  EXPECT_GT(largest, 1u);
  EXPECT_LT(messages, static_cast<size_t>(kChanges));
  EXPECT_EQ(read_all(0, &messages, &largest), want);
  EXPECT_EQ(messages, static_cast<size_t>(kChanges));
  EXPECT_EQ(largest, 1u);

  // Large documents: a message stays under about 1 MiB whatever max_batch
  // (each change below carries ~200 KB before and ~200 KB after).
  {
    auto c = Connect(server);
    std::vector<Event> events;
    for (int i = 0; i < 20; ++i) {
      events.push_back(Ev("\"big\"", 10'000 + i,
                          R"({"i":)" + std::to_string(i) + R"(,"pad":")" +
                              std::string(200'000, 'a' + i % 26) + R"("})"));
    }
    ASSERT_TRUE(c->Ingest(std::move(events), false).ok());
  }
  grpc::ClientContext ctx;
  v1::SubscribeRequest req;
  req.set_from_seq(kChanges);
  req.set_max_batch(1024);
  auto reader = stub->Subscribe(&ctx, req);
  v1::SubscribeItem item;
  std::vector<uint64_t> seqs;
  bool batched = false;
  while (reader->Read(&item) && !item.has_caught_up()) {
    EXPECT_LE(item.ByteSizeLong(), (1u << 20) + 4096u);
    batched |= item.more_changes_size() > 0;
    seqs.push_back(item.change().seq());
    for (const v1::Change& ch : item.more_changes()) seqs.push_back(ch.seq());
  }
  ctx.TryCancel();
  reader->Finish().IgnoreError();
  EXPECT_TRUE(batched);
  ASSERT_EQ(seqs.size(), 20u);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(seqs[i], static_cast<uint64_t>(kChanges + 1 + i));
}

// Consumes changes with a named checkpoint, restarts the server (gracefully
// and by SIGKILL), and resumes from the checkpoint: the resumed stream
// starts exactly after the last committed seq.
TEST_F(E2eTest, CheckpointResumeAcrossRestarts) {
  ServerProcess server(dir_.Sub("data"));
  for (int sig : {SIGTERM, SIGKILL}) {
    auto c = Connect(server);
    uint64_t base = c->Stats()->store.last_seq;
    std::vector<Event> batch;
    // Fresh documents each round: an unchanged document produces no change.
    for (int i = 0; i < 20; ++i) {
      batch.push_back(
          Ev(std::to_string(i), base + 100 + i, R"({"round":)" + std::to_string(sig) + "}"));
    }
    ASSERT_TRUE(c->Ingest(batch, true).ok());
    // Consume 7 changes, committing each.
    client::SubscribeStart start = {.kind = client::SubscribeStart::Kind::kFromSeq,
                                    .from_seq = base};
    if (c->GetCheckpoint("reader").ok()) {
      start = {.kind = client::SubscribeStart::Kind::kCheckpoint, .checkpoint = "reader"};
    }
    auto sub = c->Subscribe({}, start);
    ASSERT_TRUE(sub.ok());
    SubscriptionItem item;
    uint64_t committed = 0;
    for (int n = 0; n < 7;) {
      auto got = (*sub)->Next(absl::Seconds(10), &item);
      ASSERT_TRUE(got.ok() && *got) << got.status();
      if (item.kind != SubscriptionItem::Kind::kChange) continue;
      ASSERT_TRUE(c->CommitCheckpoint("reader", item.change.seq).ok());
      committed = item.change.seq;
      ++n;
    }
    (*sub)->Cancel();
    sub->reset();
    server.Restart(sig);
    auto c2 = Connect(server);
    ASSERT_TRUE(c2->Health().ok());
    EXPECT_EQ(*c2->GetCheckpoint("reader"), committed);
    auto resumed = c2->Subscribe(
        {}, {.kind = client::SubscribeStart::Kind::kCheckpoint, .checkpoint = "reader"});
    ASSERT_TRUE(resumed.ok());
    std::vector<uint64_t> seqs;
    while (seqs.size() < 13) {
      auto got = (*resumed)->Next(absl::Seconds(10), &item);
      ASSERT_TRUE(got.ok() && *got) << got.status();
      if (item.kind == SubscriptionItem::Kind::kChange) seqs.push_back(item.change.seq);
    }
    for (size_t i = 0; i < seqs.size(); ++i) EXPECT_EQ(seqs[i], committed + 1 + i);
    ASSERT_TRUE(c2->CommitCheckpoint("reader", seqs.back()).ok());
  }
}

// A subscription that was delivering when the server restarted continues
// (client-side resume) with no gap and no duplicate.
TEST_F(E2eTest, ClientSubscriptionSurvivesRestart) {
  ServerProcess server(dir_.Sub("data"));
  auto c = Connect(server);
  auto sub = c->Subscribe({}, {.kind = client::SubscribeStart::Kind::kFromSeq, .from_seq = 0});
  ASSERT_TRUE(sub.ok());
  std::vector<uint64_t> seqs;
  SubscriptionItem item;
  for (int round = 0; round < 3; ++round) {
    std::vector<Event> batch;
    for (int i = 0; i < 10; ++i) {
      batch.push_back(
          Ev(std::to_string(i), round * 100 + i + 1, R"({"round":)" + std::to_string(round) + "}"));
    }
    ASSERT_TRUE(c->Ingest(batch, true).ok());
    while (seqs.size() < static_cast<size_t>(10 * (round + 1))) {
      auto got = (*sub)->Next(absl::Seconds(20), &item);
      ASSERT_TRUE(got.ok() && *got) << got.status();
      if (item.kind == SubscriptionItem::Kind::kChange) seqs.push_back(item.change.seq);
    }
    server.Restart(round % 2 ? SIGKILL : SIGTERM);
  }
  for (size_t i = 0; i < seqs.size(); ++i) EXPECT_EQ(seqs[i], i + 1);
}

TEST_F(E2eTest, ShutdownEndsSubscriptionsWithUnavailable) {
  ServerProcess server(dir_.Sub("data"));
  auto c = Connect(server, "", /*reconnect=*/absl::ZeroDuration());
  auto sub = c->Subscribe({}, {.kind = client::SubscribeStart::Kind::kNow});
  ASSERT_TRUE(sub.ok());
  SubscriptionItem item;
  auto first = (*sub)->Next(absl::Seconds(10), &item);  // the caught-up marker
  ASSERT_TRUE(first.ok() && *first);
  EXPECT_EQ(server.Kill(SIGTERM), 0);  // clean exit
  absl::StatusOr<bool> got = false;
  for (int i = 0; i < 50 && got.ok(); ++i) got = (*sub)->Next(absl::Milliseconds(200), &item);
  EXPECT_EQ(got.status().code(), absl::StatusCode::kUnavailable) << got.status();
}

}  // namespace
}  // namespace cairn::e2e
