// R4 (issue 12): corruption found, never served.
//
// Table files: bytes flipped in a store's SST files are
// found, never served. The store is written, compacted into table files and
// closed; then 1-3 bytes of one table file are flipped at random and it is
// opened again. It must refuse to open with DATA_LOSS naming the
// corruption, or answer every Get, History and snapshot either exactly as
// before or with DATA_LOSS: every block RocksDB reads is checksummed (XXH3,
// store_open.cc) and every record verified (records.cc).
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cairn/store.h"
#include "crash_check.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model.h"
#include "test_util.h"

namespace cairn {
namespace {

// Everything the store answers about the entities; a DATA_LOSS answer is
// "corrupt" (and counted), any other failure is itself a test failure.
struct Answers {
  std::vector<std::string> lines;
  int data_loss = 0;
};

Answers Ask(Store& store) {
  Answers a;
  auto note = [&](const absl::Status& s, const std::string& what) {
    if (s.code() == absl::StatusCode::kDataLoss) {
      ++a.data_loss;
      a.lines.push_back("corrupt");
    } else {
      ADD_FAILURE() << what << ": " << s;
      a.lines.push_back("error");
    }
  };
  for (const model::EntityId& id : crash_check::AllEntities()) {
    auto e = store.Get(id.collection, id.canonical_key());
    if (e.ok()) {
      a.lines.push_back(model::EntityLine(*e, true));
    } else if (absl::IsNotFound(e.status())) {
      a.lines.push_back("absent");
    } else {
      note(e.status(), "get");
    }
    auto h = store.History(id.collection, id.canonical_key(), {});
    if (h.ok()) {
      std::string text;
      for (const Version& v : *h) text += model::VersionLine(v);
      a.lines.push_back(text);
    } else {
      note(h.status(), "history");
    }
  }
  std::string snapshot = model::SnapshotText(store, {}, true);
  if (snapshot.rfind("snapshot failed: DATA_LOSS", 0) == 0) {
    ++a.data_loss;
    snapshot = "corrupt";
  }
  a.lines.push_back(snapshot);
  return a;
}

// The files of `dir` with `extension`, in name order (the directory's own
// order is not fixed).
std::vector<std::string> FilesOf(const std::string& dir, const std::string& extension) {
  std::vector<std::string> out;
  for (const auto& f : std::filesystem::directory_iterator(dir)) {
    if (f.path().extension() == extension) out.push_back(f.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

// Flips 1-3 bytes of `file` at random offsets from `from` on.
void FlipBytes(const std::string& file, uint64_t from, std::mt19937& rng) {
  std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
  const auto size = static_cast<uint64_t>(std::filesystem::file_size(file));
  for (int flips = 1 + static_cast<int>(rng() % 3); flips > 0; --flips) {
    const auto at = static_cast<std::streamoff>(from + rng() % (size - from));
    char c;
    f.seekg(at);
    f.read(&c, 1);
    c = static_cast<char>(c ^ (1 + rng() % 255));
    f.seekp(at);
    f.write(&c, 1);
  }
}

TEST(CorruptionTest, FlippedTableFileBytesAreRefusedNeverServed) {
  TempDir dir;
  const std::string clean = dir.Sub("clean");
  Answers truth;
  {
    auto store = Store::Open(clean, {});
    ASSERT_TRUE(store.ok()) << store.status();
    for (uint64_t b = 0; b < 30; ++b) {
      ASSERT_TRUE((*store)->Ingest(crash_check::BatchEvents(b), {}).ok());
    }
    ASSERT_TRUE((*store)->CompactNow().ok());
    truth = Ask(**store);
    ASSERT_EQ(truth.data_loss, 0);
  }
  std::mt19937 rng(29);
  int refused = 0, found = 0, unread = 0;
  for (int round = 0; round < 40; ++round) {
    SCOPED_TRACE(absl::StrCat("round ", round));
    const std::string path = dir.Sub(absl::StrCat("round", round));
    std::filesystem::copy(clean, path, std::filesystem::copy_options::recursive);
    std::vector<std::string> tables = FilesOf(path, ".sst");
    ASSERT_FALSE(tables.empty());
    FlipBytes(tables[rng() % tables.size()], 0, rng);
    auto store = Store::Open(path, {});
    if (!store.ok()) {
      // Refused: a clear error naming the corruption.
      EXPECT_EQ(store.status().code(), absl::StatusCode::kDataLoss) << store.status();
      if (refused++ == 0) std::cerr << "refused, e.g.: " << store.status() << "\n";
      continue;
    }
    Answers a = Ask(**store);
    ASSERT_EQ(a.lines.size(), truth.lines.size());
    for (size_t i = 0; i < a.lines.size(); ++i) {
      if (a.lines[i] != "corrupt") {
        EXPECT_EQ(a.lines[i], truth.lines[i]) << "answer " << i;
      }
    }
    (a.data_loss > 0 ? found : unread)++;
    std::filesystem::remove_all(path);
  }
  std::cerr << "flipped table files: " << refused << " refused at open, " << found
            << " found by reads (DATA_LOSS), " << unread
            << " in blocks these reads never touch; 0 wrong answers\n";
  // The flips are seen: most land in blocks the reads above read.
  EXPECT_GT(refused + found, 10);
}

// R4, the write-ahead log: bytes flipped in the WAL of a store closed
// before any flush (its every commit is in the log only). It opens either
// with a consistent prefix of its commits -- whole batches, exactly their
// fold -- and, when commits are missing, says so in Stats().recovery; or it
// refuses with DATA_LOSS. It never opens with a torn batch or silently
// short.
TEST(CorruptionTest, FlippedLogBytesRecoverAReportedPrefixOrAreRefused) {
  TempDir dir;
  const std::string clean = dir.Sub("clean");
  constexpr uint64_t kBatches = 30;
  {
    auto store = Store::Open(clean, {});
    ASSERT_TRUE(store.ok()) << store.status();
    for (uint64_t b = 0; b < kBatches; ++b) {
      ASSERT_TRUE((*store)->Ingest(crash_check::BatchEvents(b), {}).ok());
    }
  }
  std::mt19937 rng(31);
  int refused = 0, prefixes = 0, whole = 0;
  for (int round = 0; round < 40; ++round) {
    SCOPED_TRACE(absl::StrCat("round ", round));
    const std::string path = dir.Sub(absl::StrCat("round", round));
    std::filesystem::copy(clean, path, std::filesystem::copy_options::recursive);
    std::vector<std::string> logs = FilesOf(path, ".log");
    ASSERT_FALSE(logs.empty());
    // Half the rounds hit the tail (the last tenth), half anywhere.
    const auto size = static_cast<uint64_t>(std::filesystem::file_size(logs.back()));
    ASSERT_GT(size, 0u);
    FlipBytes(logs.back(), round % 2 ? size - size / 10 : 0, rng);
    std::string recovery;
    {
      auto store = Store::Open(path, {});
      if (!store.ok()) {
        EXPECT_EQ(store.status().code(), absl::StatusCode::kDataLoss) << store.status();
        if (refused++ == 0) std::cerr << "refused, e.g.: " << store.status() << "\n";
        continue;
      }
      recovery = (*store)->Stats().recovery;
    }
    // Whole batches, a prefix, exactly their fold.
    uint64_t present = crash_check::VerifyWholeBatches(path);
    if (present < kBatches) {
      ++prefixes;
      EXPECT_THAT(recovery, ::testing::HasSubstr("write-ahead log ends in a torn or corrupt"));
      if (prefixes == 1) std::cerr << "recovered " << present << " batches: " << recovery << "\n";
    } else {
      ++whole;
    }
    std::filesystem::remove_all(path);
  }
  std::cerr << "flipped log bytes: " << refused << " refused at open, " << prefixes
            << " recovered a reported prefix, " << whole << " lost nothing\n";
  EXPECT_GT(refused + prefixes, 20);
}

}  // namespace
}  // namespace cairn
