// proto/convert.h: the one status mapping (absl <-> gRPC, acks) and the
// proto <-> engine conversions, both directions.
#include "convert.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace cairn::wire {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(ConvertTest, EveryStatusCodeMapsBothWays) {
  for (int code = 0; code <= 16; ++code) {
    absl::Status s(static_cast<absl::StatusCode>(code), code == 0 ? "" : "why");
    grpc::Status g = ToGrpc(s);
    EXPECT_EQ(static_cast<int>(g.error_code()), code);
    absl::Status back = FromGrpc(g);
    EXPECT_EQ(back.code(), s.code());
    EXPECT_EQ(back.message(), s.message());
  }
}

TEST(ConvertTest, WireMessagesAreBoundedAndValidUtf8) {
  grpc::Status g = ToGrpc(absl::InvalidArgumentError(std::string(100000, 'x')));
  EXPECT_LE(g.error_message().size(), kMaxStatusMessageBytes);
  // Cut inside a multi-byte character: the cut backs off to its start.
  std::string accents;
  for (int i = 0; i < 1000; ++i) accents += "é";
  std::string cut = WireMessage(accents, 101);
  EXPECT_LE(cut.size(), 101u);
  EXPECT_TRUE(IsValidUtf8(cut));
  // Bytes that are not UTF-8 never reach the wire as such.
  EXPECT_TRUE(IsValidUtf8(WireMessage("bad \xFF\xFE bytes", 100)));
}

TEST(ConvertTest, FailedAcksCarryCodeMessageAndRecordErrors) {
  v1::IngestAck ack;
  FailAck(absl::InvalidArgumentError(
              "record 3: line 4: instance.name: required; record 12: key is empty"),
          &ack);
  EXPECT_EQ(ack.code(), static_cast<int>(absl::StatusCode::kInvalidArgument));
  ASSERT_EQ(ack.errors_size(), 2);
  EXPECT_EQ(ack.errors(0).index(), 3u);
  EXPECT_EQ(ack.errors(0).field(), "instance.name");
  EXPECT_EQ(ack.errors(1).index(), 12u);
  EXPECT_EQ(ack.errors(1).field(), "key");
  absl::Status s = AckStatus(ack);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("record 12"));
  // An index that does not fit 64 bits is no index (and does not throw).
  v1::IngestAck odd;
  FailAck(absl::InvalidArgumentError("event 99999999999999999999999: x"), &odd);
  EXPECT_EQ(odd.errors_size(), 0);

  v1::IngestAck good;
  ToProto(IngestResult{.first_seq = 1, .last_seq = 2, .applied = 2}, &good);
  EXPECT_TRUE(AckStatus(good).ok());
  EXPECT_EQ(FromProto(good).last_seq, 2u);
}

TEST(ConvertTest, RetentionRoundTripsAndIsBounded) {
  RetentionOptions r{.max_age = absl::Hours(48), .max_commits = 1000};
  auto back = FromProto(ToProto(r));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->max_age, r.max_age);
  EXPECT_EQ(back->max_commits, r.max_commits);
  auto none = FromProto(ToProto(RetentionOptions{}));
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->max_age.has_value());
  EXPECT_FALSE(none->max_commits.has_value());
  v1::Retention huge;
  huge.set_max_age_seconds(kMaxRetentionSeconds + 1);
  auto refused = FromProto(huge);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("retention.max_age_seconds"));
}

TEST(ConvertTest, QueryOptionsRoundTrip) {
  SnapshotOptions s{
      .as_of_seq = 7, .collection = "account", .key_prefix = "AC", .include_incomplete = false};
  SnapshotOptions sb = FromProto(ToProto(s));
  EXPECT_EQ(sb.collection, "account");
  EXPECT_EQ(sb.key_prefix, "AC");
  EXPECT_EQ(sb.as_of_seq, 7u);
  EXPECT_FALSE(sb.as_of_position.has_value());
  SnapshotOptions by_position =
      FromProto(ToProto(SnapshotOptions{.as_of_position = Position{5, 6}}));
  EXPECT_EQ(by_position.as_of_position, (Position{5, 6}));
  EXPECT_FALSE(by_position.as_of_seq.has_value());
  EXPECT_FALSE(sb.include_incomplete);
  EXPECT_FALSE(FromProto(ToProto(SnapshotOptions{})).as_of_seq.has_value());

  HistoryOptions h{.reverse = true,
                   .from_position = Position{1, 2},
                   .to_position = Position{3, 4},
                   .from_seq = 5,
                   .to_seq = 9,
                   .limit = 10};
  v1::HistoryRequest hr = ToProto("account", "101", h);
  EXPECT_EQ(hr.collection(), "account");
  EXPECT_EQ(hr.key(), "101");
  HistoryOptions hb = FromProto(hr);
  EXPECT_EQ(hb.from_position, h.from_position);
  EXPECT_EQ(hb.to_position, h.to_position);
  EXPECT_EQ(hb.from_seq, h.from_seq);
  EXPECT_EQ(hb.to_seq, h.to_seq);
  EXPECT_TRUE(hb.reverse);
  EXPECT_EQ(hb.limit, 10u);

  v1::SubscribeRequest sr;
  ToProto(SubscribeFilter{.sources = {"billing"},
                          .collections = {"account"},
                          .key_prefix = "A",
                          .keys = {"1", "2"}},
          /*include_incomplete=*/false, &sr);
  sr.set_from_seq(41);
  SubscribeOptions so = FromProto(sr);
  EXPECT_THAT(so.filter.sources, ElementsAre("billing"));
  EXPECT_THAT(so.filter.collections, ElementsAre("account"));
  EXPECT_EQ(so.filter.key_prefix, "A");
  EXPECT_THAT(so.filter.keys, ElementsAre("1", "2"));
  EXPECT_FALSE(so.include_incomplete);
  EXPECT_EQ(so.start, SubscribeOptions::Start::kFromSeq);
  EXPECT_EQ(so.from_seq, 41u);
  sr.set_snapshot(true);
  EXPECT_EQ(FromProto(sr).start, SubscribeOptions::Start::kSnapshot);
  sr.set_now(true);
  EXPECT_EQ(FromProto(sr).start, SubscribeOptions::Start::kNow);
}

TEST(ConvertTest, SubscriptionItemsRoundTrip) {
  SubscriptionItem change{.kind = SubscriptionItem::Kind::kChange};
  change.change =
      Change{.seq = 9, .collection = "c", .key = "1", .op = Op::kDelete, .before = "{}"};
  SubscriptionItem end{.kind = SubscriptionItem::Kind::kSnapshotEnd, .seq = 4};
  SubscriptionItem caught{.kind = SubscriptionItem::Kind::kCaughtUp, .seq = 12};
  SubscriptionItem entity{.kind = SubscriptionItem::Kind::kSnapshotEntity};
  entity.entity = Entity{.collection = "c", .key = "2", .document = R"({"a":1})", .seq = 3};
  for (const SubscriptionItem& in : {change, end, caught, entity}) {
    v1::SubscribeItem wire;
    ToProto(in, &wire);
    SubscriptionItem out;
    ASSERT_TRUE(FromProto(wire, &out));
    EXPECT_EQ(out.kind, in.kind);
    EXPECT_EQ(out.seq, in.seq);
    EXPECT_EQ(out.change.seq, in.change.seq);
    EXPECT_EQ(out.change.op, in.change.op);
    EXPECT_EQ(out.change.before, in.change.before);
    EXPECT_EQ(out.entity.document, in.entity.document);
  }
  SubscriptionItem out;
  EXPECT_FALSE(FromProto(v1::SubscribeItem(), &out));  // no item: a kind not known
}

TEST(ConvertTest, StatsAndSessionsRoundTrip) {
  StoreStats st{.last_seq = 10, .oldest_seq = 2, .oldest_position = {7, 8}};
  st.sources["a"] = SourceStats{.accepted = 5,
                                .duplicates = 1,
                                .conflicts = 2,
                                .rejected_batches = 3,
                                .last_position = {9, 1}};
  st.sources["b"] = SourceStats{.accepted = 1};
  st.resources = {.memory_budget = 1,
                  .block_cache_capacity = 2,
                  .block_cache_usage = 3,
                  .memtables = 4,
                  .recent_changes = 5,
                  .reserved = 10,
                  .subscriber_buffers = 11,
                  .wal_bytes = 6,
                  .wal_files = 7,
                  .sst_bytes = 8,
                  .pending_compaction_bytes = 9};
  st.versions = {
      .cairn = "1.2.3", .format = 4, .created_by = "1.0.0", .previously_opened_by = "1.2.2"};
  v1::StatsResponse resp;
  ToProto(st, 1000, &resp);
  EXPECT_FALSE(resp.truncated());
  StoreStats back = FromProto(resp);
  EXPECT_EQ(back.last_seq, 10u);
  EXPECT_EQ(back.oldest_seq, 2u);
  EXPECT_EQ(back.oldest_position, (Position{7, 8}));
  ASSERT_EQ(back.sources.size(), 2u);
  EXPECT_EQ(back.sources["a"].conflicts, 2u);
  EXPECT_EQ(back.sources["a"].rejected_batches, 3u);
  const StoreStats::Resources& res = back.resources;
  EXPECT_EQ(std::vector<uint64_t>(
                {res.memory_budget, res.block_cache_capacity, res.block_cache_usage, res.memtables,
                 res.recent_changes, res.wal_bytes, res.wal_files, res.sst_bytes,
                 res.pending_compaction_bytes, res.reserved, res.subscriber_buffers}),
            std::vector<uint64_t>({1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}));
  EXPECT_EQ(back.sources["a"].last_position, (Position{9, 1}));
  EXPECT_EQ(back.versions.cairn, "1.2.3");
  EXPECT_EQ(back.versions.format, 4u);
  EXPECT_EQ(back.versions.created_by, "1.0.0");
  EXPECT_EQ(back.versions.previously_opened_by, "1.2.2");
  v1::StatsResponse small;
  ToProto(st, 1, &small);
  EXPECT_TRUE(small.truncated());
  EXPECT_EQ(small.sources_size(), 1);

  for (SessionMode m :
       {SessionMode::kStream, SessionMode::kAccrue, SessionMode::kReplace, SessionMode::kAtomic}) {
    EXPECT_EQ(FromProto(ToProto(m)), m);
  }
  EXPECT_EQ(ToProto(SessionMode::kAtomic), v1::SESSION_MODE_ATOMIC);
  v1::CloseSessionResponse closed;
  ToProto(
      IngestResult{.first_seq = 3, .last_seq = 7, .applied = 5, .duplicates = 2, .conflicts = 1},
      &closed);
  IngestResult r = FromProto(closed);
  EXPECT_EQ(r.first_seq, 3u);
  EXPECT_EQ(r.last_seq, 7u);
  EXPECT_EQ(r.applied, 5u);
  EXPECT_EQ(r.duplicates, 2u);
  EXPECT_EQ(r.conflicts, 1u);
}

}  // namespace
}  // namespace cairn::wire
