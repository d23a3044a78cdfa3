// Checkpoints, runtime retention and per-source counters.
#include "cairn/store.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "test_util.h"

namespace cairn {
namespace {

Event Upsert(int key, uint64_t ts) {
  return {.source = "s",
          .collection = "c",
          .key = std::to_string(key),
          .position = {ts, 0},
          .payload = R"({"v":1})"};
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

// A checkpoint keeps the read scope it was created for; moving it asks the
// caller's check first and keeps the scope; it can be deleted.
TEST(AdminTest, CheckpointsKeepTheirScope) {
  TempDir dir;
  auto store = Store::Open(dir.path(), Options{});
  ASSERT_TRUE(store.ok());
  ASSERT_TRUE((*store)->Ingest({Upsert(1, 1), Upsert(2, 2)}, {}).ok());
  ASSERT_TRUE((*store)->PutCheckpoint("r", 1, {"b", "a", "a"}, nullptr).ok());
  auto info = (*store)->GetCheckpointInfo("r");
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->collections, (std::vector<std::string>{"a", "b"}));
  std::vector<std::string> asked;
  auto deny = [&](const Store::CheckpointInfo& c) {
    asked = c.collections;
    return absl::PermissionDeniedError("no");
  };
  EXPECT_EQ((*store)->PutCheckpoint("r", 2, {}, deny).code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(asked, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(*(*store)->GetCheckpoint("r"), 1u);
  // Moving with a different scope keeps the one it was created for.
  ASSERT_TRUE((*store)->PutCheckpoint("r", 2, {"z"}, nullptr).ok());
  info = (*store)->GetCheckpointInfo("r");
  EXPECT_EQ(info->seq, 2u);
  EXPECT_EQ(info->collections, (std::vector<std::string>{"a", "b"}));
  // Creating asks nothing (there is nothing to move).
  ASSERT_TRUE((*store)->PutCheckpoint("new", 0, {}, deny).ok());
  EXPECT_TRUE((*store)->GetCheckpointInfo("new")->collections.empty());
  EXPECT_EQ((*store)->ListCheckpointInfos()->size(), 2u);
  ASSERT_TRUE((*store)->DeleteCheckpoint("new").ok());
  EXPECT_EQ((*store)->DeleteCheckpoint("new").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ((*store)->ListCheckpoints()->size(), 1u);
  EXPECT_EQ((*store)->PutCheckpoint(std::string(257, 'n'), 0).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*store)->PutCheckpoint("a\nb", 0).code(), absl::StatusCode::kInvalidArgument);
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
  EXPECT_THAT(std::string(old.status().message()),
              ::testing::HasSubstr("oldest available seq is 7"));
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

// Stats' latency histograms count each batch and each group commit (the
// fsynced ones apart), their buckets add up, and the block cache counts
// its lookups.
TEST(AdminTest, LatencyHistogramsCountBatchesAndCommits) {
  TempDir dir;
  auto store = Store::Open(dir.path(), Options{});
  ASSERT_TRUE(store.ok());
  for (int i = 1; i <= 5; ++i) {
    ASSERT_TRUE((*store)->Ingest({Upsert(i, i)}, {.durable = i > 3}).ok());
  }
  ASSERT_TRUE((*store)->Ingest({Upsert(9, 1), Upsert(9, 1)}, {}).ok());
  ASSERT_TRUE((*store)->CompactNow().ok());  // SST files: reads go through the block cache
  for (int i = 1; i <= 5; ++i) ASSERT_TRUE((*store)->Get("c", std::to_string(i)).ok());
  StoreStats st = (*store)->Stats();
  EXPECT_EQ(st.latency.ingest.count, 6u);
  EXPECT_EQ(st.latency.commit.count, 4u);  // one batch per commit: nothing else queued
  EXPECT_EQ(st.latency.commit_sync.count, 2u);
  for (const LatencyHistogram* h :
       {&st.latency.ingest, &st.latency.commit, &st.latency.commit_sync}) {
    uint64_t sum = 0;
    for (uint64_t c : h->counts) sum += c;
    EXPECT_EQ(sum, h->count);
    EXPECT_GT(h->sum_micros, 0u);
  }
  EXPECT_GT(st.resources.block_cache_hits + st.resources.block_cache_misses, 0u);
}

}  // namespace
}  // namespace cairn
