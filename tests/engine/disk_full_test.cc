// A full disk (issue 12 R5): the store runs on fault_fs.h, which refuses
// appends with ENOSPC (IOStatus::NoSpace) once a random number of bytes has
// been written -- while ingesting (the WAL) or while flushing the memtables
// into a table file. The failing ingest must be answered RESOURCE_EXHAUSTED
// naming the cause, nothing acknowledged is lost, nothing is half applied,
// reads keep answering, and ingest works again by itself once space is
// freed: no restart, no repair.
#include <memory>
#include <random>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "cairn/store.h"
#include "crash_check.h"
#include "fault_fs.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rocksdb/env.h"
#include "test_util.h"

namespace cairn {
namespace {

using crash_check::BatchEvents;
using crash_check::kBatchEvents;
using crash_check::VerifyWholeBatches;
using ::testing::HasSubstr;
using testing_fs::FaultFs;

void ExpectDiskFull(const absl::Status& s) {
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("No space left on device")) << s;
}

TEST(DiskFullTest, IngestFailsClearlyAndResumesOnceSpaceIsFreed) {
  TempDir dir;
  const std::string path = dir.Sub("store");
  std::mt19937 rng(5);
  uint64_t next = 0;
  int full_while_flushing = 0;
  for (int cycle = 0; cycle < 24; ++cycle) {
    SCOPED_TRACE(absl::StrCat("cycle ", cycle, " from batch ", next));
    auto fs = std::make_shared<FaultFs>();
    std::unique_ptr<rocksdb::Env> env = rocksdb::NewCompositeEnv(fs);
    Options o;
    o.env = env.get();
    auto opened = Store::Open(path, o);
    ASSERT_TRUE(opened.ok()) << opened.status();
    Store& store = **opened;
    uint64_t acked_end = next;
    auto ingest = [&](uint64_t b) { return store.Ingest(BatchEvents(b), {.durable = true}); };
    for (int i = 0; i < 5; ++i) {
      auto r = ingest(acked_end);
      ASSERT_TRUE(r.ok()) << r.status();
      ++acked_end;
    }
    if (cycle % 2 == 0) {
      // Full while ingesting: some batches still fit, then one does not.
      fs->FailWritesAfter(rng() % 20000);
      absl::Status failure;
      for (int i = 0; i < 1000 && failure.ok(); ++i) {
        auto r = ingest(acked_end);
        if (r.ok()) {
          ++acked_end;
        } else {
          failure = r.status();
        }
      }
      ExpectDiskFull(failure);
    } else {
      // Full while the memtables are flushed into a table file.
      fs->FailWritesAfter(rng() % 4096);
      absl::Status flushed = store.CompactNow();
      EXPECT_FALSE(flushed.ok());
      if (!flushed.ok()) {
        ExpectDiskFull(flushed);
        ++full_while_flushing;
      }
    }
    EXPECT_GT(fs->no_space_errors(), 0u);
    const uint64_t last = store.LastSeq();
    // Still full: refused again the same way, and nothing of it applied.
    ExpectDiskFull(ingest(acked_end).status());
    EXPECT_EQ(store.LastSeq(), last);
    // Reads keep answering.
    EXPECT_EQ(store.Stats().last_seq, last);
    for (const auto& id : crash_check::AllEntities()) {
      auto e = store.Get(id.collection, id.canonical_key());
      EXPECT_TRUE(e.ok() || absl::IsNotFound(e.status())) << e.status();
    }
    // Space freed: the next ingest applies the batch that was refused --
    // all of it, so none of it had been applied before.
    fs->FreeSpace();
    auto r = ingest(acked_end);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->applied, kBatchEvents);
    ++acked_end;
    EXPECT_TRUE(store.CompactNow().ok());
    opened->reset();
    // Reopened without the fault: exactly the acknowledged batches, whole.
    uint64_t present = VerifyWholeBatches(path);
    ASSERT_FALSE(::testing::Test::HasFailure());
    EXPECT_EQ(present, acked_end);
    next = present;
  }
  EXPECT_EQ(full_while_flushing, 12);
}

// The disk fills while the memtables are flushed and nothing is written
// afterwards: the store gets its background work back by itself (the
// retention thread resumes RocksDB every second while an error is pending),
// so a flush works again without an ingest to set it off.
TEST(DiskFullTest, BackgroundWorkResumesWithoutAWrite) {
  TempDir dir;
  auto fs = std::make_shared<FaultFs>();
  std::unique_ptr<rocksdb::Env> env = rocksdb::NewCompositeEnv(fs);
  Options o;
  o.env = env.get();
  auto opened = Store::Open(dir.Sub("store"), o);
  ASSERT_TRUE(opened.ok()) << opened.status();
  Store& store = **opened;
  ASSERT_TRUE(store.Ingest(BatchEvents(0), {.durable = true}).ok());
  fs->FailWritesAfter(100);
  ExpectDiskFull(store.CompactNow());
  // Still full: RocksDB stays stopped.
  absl::SleepFor(absl::Milliseconds(1500));
  EXPECT_FALSE(store.CompactNow().ok());
  fs->FreeSpace();
  absl::Status flushed = absl::UnknownError("not tried");
  for (int i = 0; i < 50 && !flushed.ok(); ++i) {
    absl::SleepFor(absl::Milliseconds(100));
    flushed = store.CompactNow();
  }
  EXPECT_TRUE(flushed.ok()) << flushed;
  auto r = store.Ingest(BatchEvents(1), {.durable = true});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->applied, kBatchEvents);
}

}  // namespace
}  // namespace cairn
