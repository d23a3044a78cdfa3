// Contribution sessions and the source registry (DESIGN §6): every row of the
// stream/accrue/replace x open/commit/discard table, restarts, bad ids.
#include <map>
#include <string>

#include "cairn/store.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "test_util.h"

namespace cairn {
namespace {

using ::testing::HasSubstr;

class SessionTest : public ::testing::Test {
 protected:
  void SetUp() override { Reopen(); }

  void Reopen() {
    store_.reset();
    auto s = Store::Open(dir_.path(), Options{});
    ASSERT_TRUE(s.ok()) << s.status();
    store_ = *std::move(s);
    if (!store_->GetSource("contrib").ok()) {
      ASSERT_TRUE(store_->PutSource({.name = "contrib", .format = "bitbroker"}).ok());
    }
  }

  // The collection's visible content: key -> document.
  std::map<std::string, std::string> Content(const std::string& collection = "countries") {
    std::map<std::string, std::string> out;
    auto s = store_->Snapshot({.collection = collection}, [&](const Entity& e) {
      out[e.key] = e.document;
      return true;
    });
    EXPECT_TRUE(s.ok()) << s;
    return out;
  }

  std::string Open(SessionMode mode) {
    auto id = store_->OpenSession("contrib", "countries", mode);
    EXPECT_TRUE(id.ok()) << id.status();
    return id.value_or("");
  }

  void Upsert(const std::string& id, const std::vector<std::string>& keys) {
    std::vector<SessionRecord> records;
    for (const auto& k : keys) {
      records.push_back({.key = "\"" + k + "\"", .document = R"({"name":")" + k + R"("})"});
    }
    auto r = store_->SessionUpsert(id, records);
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(r->size(), keys.size());
    for (size_t i = 0; i < keys.size(); ++i) EXPECT_EQ((*r)[i], "\"" + keys[i] + "\"");
  }

  // Seeds GB and FR through a committed replace session.
  void Seed() {
    std::string id = Open(SessionMode::kReplace);
    Upsert(id, {"GB", "FR"});
    ASSERT_TRUE(store_->CloseSession(id, true).ok());
  }

  TempDir dir_;
  std::unique_ptr<Store> store_;
};

using KeyDocs = std::map<std::string, std::string>;
const KeyDocs kSeeded = {{"\"FR\"", R"({"name":"FR"})"}, {"\"GB\"", R"({"name":"GB"})"}};

TEST_F(SessionTest, StreamIsVisibleAsPosted) {
  Seed();
  std::string id = Open(SessionMode::kStream);
  Upsert(id, {"IN"});
  EXPECT_EQ(Content().size(), 3u);  // visible before close
  ASSERT_TRUE(store_->SessionDelete(id, {"\"GB\""}).ok());
  EXPECT_EQ(Content().count("\"GB\""), 0u);
  uint64_t before_close = store_->LastSeq();
  auto r = store_->CloseSession(id, true);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(Content().size(), 2u);
  // Close reports what the posts applied (IN created, GB deleted), not 0.
  EXPECT_EQ(r->applied, 2u);
  EXPECT_EQ(r->last_seq, before_close);
  EXPECT_EQ(r->last_seq - r->first_seq + 1, 2u);
}

TEST_F(SessionTest, StreamCloseFalseKeepsWhatWasPosted) {
  std::string id = Open(SessionMode::kStream);
  Upsert(id, {"IN"});
  ASSERT_TRUE(store_->CloseSession(id, false).ok());
  EXPECT_EQ(Content().count("\"IN\""), 1u);
}

TEST_F(SessionTest, AccrueInvisibleUntilCommit) {
  Seed();
  std::string id = Open(SessionMode::kAccrue);
  Upsert(id, {"IN", "GB"});
  ASSERT_TRUE(store_->SessionDelete(id, {"\"FR\""}).ok());
  EXPECT_EQ(Content(), kSeeded);  // a reader during the session sees only previous data
  uint64_t before = store_->LastSeq();
  auto r = store_->CloseSession(id, true);
  ASSERT_TRUE(r.ok()) << r.status();
  // IN created, FR deleted; GB re-sent unchanged produces no change.
  EXPECT_EQ(r->last_seq - r->first_seq + 1, 2u);
  EXPECT_EQ(r->first_seq, before + 1);
  KeyDocs want = {{"\"GB\"", R"({"name":"GB"})"}, {"\"IN\"", R"({"name":"IN"})"}};
  EXPECT_EQ(Content(), want);
}

TEST_F(SessionTest, AccrueCloseFalseDiscards) {
  Seed();
  std::string id = Open(SessionMode::kAccrue);
  Upsert(id, {"IN"});
  ASSERT_TRUE(store_->CloseSession(id, false).ok());
  EXPECT_EQ(Content(), kSeeded);
}

TEST_F(SessionTest, ReplaceCommitDeletesRecordsNotResent) {
  Seed();
  std::string id = Open(SessionMode::kReplace);
  Upsert(id, {"IN", "GB"});
  EXPECT_EQ(Content(), kSeeded);
  ASSERT_TRUE(store_->CloseSession(id, true).ok());
  KeyDocs want = {{"\"GB\"", R"({"name":"GB"})"}, {"\"IN\"", R"({"name":"IN"})"}};
  EXPECT_EQ(Content(), want);
}

TEST_F(SessionTest, ReplaceLeavesOtherSourcesAlone) {
  Seed();
  ASSERT_TRUE(store_->PutSource({.name = "other", .format = "bitbroker"}).ok());
  auto other = store_->OpenSession("other", "countries", SessionMode::kStream);
  ASSERT_TRUE(other.ok());
  ASSERT_TRUE(store_->SessionUpsert(*other, {{.key = "\"DE\"", .document = "{}"}}).ok());
  std::string id = Open(SessionMode::kReplace);
  Upsert(id, {"IN"});
  ASSERT_TRUE(store_->CloseSession(id, true).ok());
  EXPECT_EQ(Content().count("\"DE\""), 1u);
  EXPECT_EQ(Content().count("\"GB\""), 0u);
  EXPECT_EQ(Content().count("\"IN\""), 1u);
}

TEST_F(SessionTest, ReplaceCloseFalseChangesNothing) {
  Seed();
  std::string id = Open(SessionMode::kReplace);
  Upsert(id, {"IN"});
  uint64_t seq = store_->LastSeq();
  ASSERT_TRUE(store_->CloseSession(id, false).ok());
  EXPECT_EQ(Content(), kSeeded);
  EXPECT_EQ(store_->LastSeq(), seq);
}

TEST_F(SessionTest, CommitIsOneSeqRangeSeenWholeBySubscribers) {
  Seed();
  auto sub = store_->Subscribe({.start = SubscribeOptions::Start::kNow});
  ASSERT_TRUE(sub.ok());
  std::string id = Open(SessionMode::kReplace);
  Upsert(id, {"A1", "A2", "A3"});
  auto r = store_->CloseSession(id, true);
  ASSERT_TRUE(r.ok());
  // 3 creates + 2 deletes (GB, FR), contiguous seqs from one commit.
  EXPECT_EQ(r->last_seq - r->first_seq + 1, 5u);
  std::vector<uint64_t> seqs;
  SubscriptionItem item;
  while (seqs.size() < 5) {
    auto n = (*sub)->Next(absl::Seconds(5), &item);
    ASSERT_TRUE(n.ok() && *n);
    if (item.kind == SubscriptionItem::Kind::kChange) seqs.push_back(item.change.seq);
  }
  for (size_t i = 0; i < seqs.size(); ++i) EXPECT_EQ(seqs[i], r->first_seq + i);
}

// Large enough that the commit is spilled to SST files many times: the
// result must still be complete, one contiguous seq range, and visible only
// once the commit returns.
TEST_F(SessionTest, LargeReplaceCommitSpillsAndStaysAtomic) {
  Seed();
  std::string id = Open(SessionMode::kReplace);
  const std::string filler(600, 'x');
  constexpr int kRecords = 30000;
  for (int chunk = 0; chunk < kRecords; chunk += 5000) {
    std::vector<SessionRecord> records;
    for (int i = chunk; i < chunk + 5000; ++i) {
      records.push_back(
          {.key = std::to_string(i),
           .document = R"({"n":)" + std::to_string(i) + R"(,"f":")" + filler + "\"}"});
    }
    ASSERT_TRUE(store_->SessionUpsert(id, std::move(records)).ok());
  }
  uint64_t before = store_->LastSeq();
  EXPECT_EQ(Content(), kSeeded);
  auto r = store_->CloseSession(id, true);
  ASSERT_TRUE(r.ok()) << r.status();
  // 30000 creates + GB and FR deleted, as one range right after `before`.
  EXPECT_EQ(r->first_seq, before + 1);
  EXPECT_EQ(r->last_seq, before + kRecords + 2);
  EXPECT_EQ(store_->LastSeq(), r->last_seq);
  auto content = Content();
  EXPECT_EQ(content.size(), static_cast<size_t>(kRecords));
  EXPECT_EQ(content.count("\"GB\""), 0u);
  EXPECT_EQ(content.at("29999").substr(0, 12), R"({"n":29999,")");
  // Survives a restart with its counters and seq.
  Reopen();
  EXPECT_EQ(store_->LastSeq(), r->last_seq);
  EXPECT_EQ(Content().size(), static_cast<size_t>(kRecords));
  EXPECT_EQ(store_->Stats().sources.at("contrib").accepted, 2u + 2u + kRecords);
  auto h = store_->History("countries", "\"FR\"", {});
  ASSERT_TRUE(h.ok());
  ASSERT_EQ(h->size(), 2u);
  EXPECT_EQ(h->back().op, Op::kDelete);
}

TEST_F(SessionTest, OpenSessionSurvivesRestart) {
  Seed();
  std::string id = Open(SessionMode::kAccrue);
  Upsert(id, {"IN"});
  Reopen();
  EXPECT_EQ(Content(), kSeeded);
  auto info = store_->GetSession(id);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->records, 1u);
  Upsert(id, {"JP"});
  ASSERT_TRUE(store_->CloseSession(id, true).ok());
  EXPECT_EQ(Content().size(), 4u);
}

TEST_F(SessionTest, UnknownAndStaleIdsRejected) {
  auto r = store_->SessionUpsert("nope", {{.key = "\"X\"", .document = "{}"}});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  std::string id = Open(SessionMode::kAccrue);
  ASSERT_TRUE(store_->CloseSession(id, false).ok());
  auto again = store_->SessionUpsert(id, {{.key = "\"X\"", .document = "{}"}});
  EXPECT_EQ(again.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(again.status().message()), HasSubstr("discarded"));
  EXPECT_EQ(store_->CloseSession(id, true).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(store_->OpenSession("missing", "c", SessionMode::kStream).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(SessionTest, BadRecordsAllReportedNothingStaged) {
  std::string id = Open(SessionMode::kAccrue);
  auto r = store_->SessionUpsert(id, {{.key = "\"OK\"", .document = "{}"},
                                      {.key = "", .document = "{}"},
                                      {.key = "\"X\"", .document = "[1]"}});
  ASSERT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  std::string msg(r.status().message());
  EXPECT_THAT(msg, HasSubstr("record 1"));
  EXPECT_THAT(msg, HasSubstr("record 2"));
  EXPECT_THAT(msg, ::testing::Not(HasSubstr("record 0")));
  EXPECT_EQ(store_->GetSession(id)->records, 0u);
  ASSERT_TRUE(store_->CloseSession(id, true).ok());
  EXPECT_TRUE(Content().empty());
}

TEST(SourceRegistryTest, CrudPersists) {
  TempDir dir;
  {
    auto store = Store::Open(dir.path(), Options{});
    ASSERT_TRUE(store.ok());
    SourceDefinition d{.name = "orders-db",
                       .format = "debezium",
                       .key_fields = {{"orders", {"id"}}},
                       .collection_map = {{"public.orders", "orders"}},
                       .json_schemas = {{"orders", R"({"type":"object"})"}}};
    ASSERT_TRUE((*store)->PutSource(d).ok());
    ASSERT_TRUE((*store)->PutSource({.name = "billing", .format = "sse-feed"}).ok());
    auto bad = (*store)->PutSource({.name = "x", .format = "csv"});
    EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(bad.message()), HasSubstr("unknown format 'csv'"));
  }
  auto store = Store::Open(dir.path(), Options{});
  ASSERT_TRUE(store.ok());
  auto d = (*store)->GetSource("orders-db");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->format, "debezium");
  EXPECT_EQ(d->key_fields.at("orders"), std::vector<std::string>{"id"});
  EXPECT_EQ(d->collection_map.at("public.orders"), "orders");
  EXPECT_EQ(d->json_schemas.at("orders"), R"({"type":"object"})");
  EXPECT_EQ((*store)->ListSources()->size(), 2u);
  ASSERT_TRUE((*store)->RemoveSource("billing").ok());
  EXPECT_EQ((*store)->RemoveSource("billing").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ((*store)->ListSources()->size(), 1u);
}

}  // namespace
}  // namespace cairn
