// Checkpoints, runtime retention and per-source counters.
#include "cairn/store.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "test_util.h"

namespace cairn {
namespace {

Event Upsert(int key, uint64_t ts) {
  return {.source = "s", .collection = "c", .key = std::to_string(key),
          .position = {ts, 0}, .payload = R"({"v":1})"};
}

TEST(AdminTest, CheckpointsPersistAndAreBounded) {
  TempDir dir;
  {
    auto store = Store::Open(dir.path(), Options{});
    ASSERT_TRUE(store.ok());
    ASSERT_TRUE((*store)->Ingest({Upsert(1, 1), Upsert(2, 2)}, {}).ok());
    EXPECT_EQ((*store)->GetCheckpoint("etl").status().code(), absl::StatusCode::kNotFound);
    ASSERT_TRUE((*store)->PutCheckpoint("etl", 1).ok());
    EXPECT_EQ((*store)->PutCheckpoint("etl", 3).code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ((*store)->PutCheckpoint("", 1).code(), absl::StatusCode::kInvalidArgument);
  }
  auto store = Store::Open(dir.path(), Options{});
  ASSERT_TRUE(store.ok());
  EXPECT_EQ(*(*store)->GetCheckpoint("etl"), 1u);
  EXPECT_EQ((*store)->ListCheckpoints()->size(), 1u);
}

TEST(AdminTest, RuntimeRetentionPersistsAndApplies) {
  TempDir dir;
  {
    auto store = Store::Open(dir.path(), Options{});
    ASSERT_TRUE(store.ok());
    for (int i = 0; i < 10; ++i) ASSERT_TRUE((*store)->Ingest({Upsert(i, i + 1)}, {}).ok());
    EXPECT_EQ((*store)->SetRetention({.max_commits = 0}).code(),
              absl::StatusCode::kInvalidArgument);
    ASSERT_TRUE((*store)->SetRetention({.max_commits = 4}).ok());
  }
  auto store = Store::Open(dir.path(), Options{});
  ASSERT_TRUE(store.ok());
  EXPECT_EQ((*store)->Retention().max_commits, 4u);
  ASSERT_TRUE((*store)->CompactNow().ok());
  EXPECT_EQ((*store)->Stats().oldest_seq, 7u);
  auto old = (*store)->NewSnapshot({.as_of_seq = 6});
  EXPECT_EQ(old.status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_THAT(std::string(old.status().message()), ::testing::HasSubstr("oldest available seq is 7"));
  EXPECT_TRUE((*store)->NewSnapshot({.as_of_seq = 7}).ok());
}

TEST(AdminTest, CountersCountEveryOutcome) {
  TempDir dir;
  {
    auto store = Store::Open(dir.path(), Options{});
    ASSERT_TRUE(store.ok());
    ASSERT_TRUE((*store)->Ingest({Upsert(1, 5), Upsert(2, 6)}, {}).ok());
    Event conflict = Upsert(1, 5);
    conflict.payload = R"({"v":2})";
    auto r = (*store)->Ingest({Upsert(1, 5), conflict}, {});
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->outcomes, (std::vector<Outcome>{Outcome::kDuplicate, Outcome::kConflict}));
    Event bad = Upsert(3, 7);
    bad.payload = "[]";
    EXPECT_FALSE((*store)->Ingest({bad}, {}).ok());
    (*store)->CountRejectedBatch("s");
    // Rejections are persisted with the next commit.
    ASSERT_TRUE((*store)->Ingest({Upsert(4, 8)}, {}).ok());
  }
  auto store = Store::Open(dir.path(), Options{});
  ASSERT_TRUE(store.ok());
  SourceStats s = (*store)->Stats().sources.at("s");
  EXPECT_EQ(s.accepted, 3u);
  EXPECT_EQ(s.duplicates, 1u);
  EXPECT_EQ(s.conflicts, 1u);
  EXPECT_EQ(s.rejected_batches, 2u);
  EXPECT_EQ(s.last_position, (Position{8, 0}));
}

}  // namespace
}  // namespace cairn
