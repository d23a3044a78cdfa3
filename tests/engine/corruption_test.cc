// R4 (issue 12), table files: bytes flipped in a store's SST files are
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
    std::vector<std::string> tables;
    for (const auto& f : std::filesystem::directory_iterator(path)) {
      if (f.path().extension() == ".sst") tables.push_back(f.path());
    }
    ASSERT_FALSE(tables.empty());
    std::sort(tables.begin(), tables.end());  // the directory's order is not fixed
    const std::string table = tables[rng() % tables.size()];
    {
      std::fstream f(table, std::ios::in | std::ios::out | std::ios::binary);
      const auto size = static_cast<uint64_t>(std::filesystem::file_size(table));
      for (int flips = 1 + static_cast<int>(rng() % 3); flips > 0; --flips) {
        const auto at = static_cast<std::streamoff>(rng() % size);
        char c;
        f.seekg(at);
        f.read(&c, 1);
        c = static_cast<char>(c ^ (1 + rng() % 255));
        f.seekp(at);
        f.write(&c, 1);
      }
    }
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

}  // namespace
}  // namespace cairn
