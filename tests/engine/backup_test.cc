// Backups (cairn/backup.h): taken while producers ingest, restored into new
// directories, and compared with the live store as of the backup's seq;
// incremental copies; damaged backups refused naming the file; restore
// refusals. The crash cases (a backup or a restore killed half way) are in
// crash_test.cc (CrashPointTest.Backup*, CrashPointTest.Restore*).
#include "cairn/backup.h"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "cairn/store.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "test_util.h"

namespace cairn {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

constexpr int kProducers = 2;
constexpr int kBatches = 400;
constexpr int kBatchEvents = 250;  // 2 x 400 x 250 = 200,000 events
constexpr int kKeys = 3000;        // per producer

// Producer p's batch b: upserts, patches and deletes over p's own keys.
std::vector<Event> Batch(int p, int b) {
  std::vector<Event> out;
  for (int i = 0; i < kBatchEvents; ++i) {
    const int n = b * kBatchEvents + i;
    Event e{.source = absl::StrCat("p", p),
            .collection = n % 7 == 0 ? "orders" : "customers",
            .key = std::to_string(p * 100000 + (n * 7919) % kKeys),
            .position = {1700000000000000u + static_cast<uint64_t>(n), 0}};
    switch ((static_cast<uint32_t>(n) * 2654435761u >> 8) % 10) {
      case 0:
        e.op = Op::kDelete;
        break;
      case 1:
      case 2:
      case 3:
        e.op = Op::kPatch;
        e.payload = absl::StrCat(R"({"patched":)", n, R"(,"nested":{"by":)", p, "}}");
        break;
      default:
        e.payload = absl::StrCat(R"({"n":)", n, R"(,"p":)", p, R"(,"pad":")",
                                 std::string(40 + n % 50, 'x'), R"("})");
    }
    out.push_back(std::move(e));
  }
  return out;
}

std::string PositionText(const Position& p) { return absl::StrCat(p.timestamp, ".", p.tick); }

// Everything a reader can see of `store` as of `seq`: the snapshot, every
// entity's history and the change feed up to it.
std::string Dump(Store& store, uint64_t seq) {
  std::string out;
  std::set<std::pair<std::string, std::string>> ids;
  absl::Status s = store.Snapshot({.as_of_seq = seq}, [&](const Entity& e) {
    absl::StrAppend(&out, "entity ", e.collection, " ", e.key, " ", e.document, " ", e.complete,
                    " ", PositionText(e.position), " ", e.source, " ", e.seq, "\n");
    return true;
  });
  EXPECT_TRUE(s.ok()) << s;
  for (int p = 0; p < kProducers; ++p) {
    for (int k = 0; k < kKeys; ++k) {
      for (const char* c : {"customers", "orders"}) ids.insert({c, std::to_string(p * 100000 + k)});
    }
  }
  for (const auto& [collection, key] : ids) {
    auto h = store.History(collection, key, {.to_seq = seq});
    EXPECT_TRUE(h.ok()) << h.status();
    if (!h.ok()) continue;
    for (const Version& v : *h) {
      // A delete of an absent entity changes nothing, so it has no seq of
      // its own: its version carries the last seq before it, and one
      // written after `seq` would carry `seq` itself.
      if (v.before.empty() && v.after.empty()) continue;
      absl::StrAppend(&out, "version ", collection, " ", key, " ", OpName(v.op), " ",
                      PositionText(v.position), " ", v.source, " ", v.seq, " ", v.complete, " ",
                      v.before, " -> ", v.after, "\n");
    }
  }
  SubscribeOptions from_start;
  from_start.start = SubscribeOptions::Start::kFromSeq;
  auto sub = store.Subscribe(from_start);
  EXPECT_TRUE(sub.ok()) << sub.status();
  if (!sub.ok()) return out;
  SubscriptionItem item;
  while (true) {
    auto more = (*sub)->Next(absl::Seconds(30), &item);
    EXPECT_TRUE(more.ok() && *more) << "the change feed stopped before it caught up";
    if (!more.ok() || !*more || item.kind == SubscriptionItem::Kind::kCaughtUp) break;
    const Change& c = item.change;
    if (c.seq > seq) continue;
    absl::StrAppend(&out, "change ", c.seq, " ", c.collection, " ", c.key, " ", OpName(c.op), " ",
                    c.before, " -> ", c.after, " ", PositionText(c.position), " ", c.source, "\n");
  }
  return out;
}

// The first line where two dumps differ (gtest's own diff of two large
// strings needs memory quadratic in their lines).
void ExpectSameDump(const std::string& restored, const std::string& live) {
  std::vector<std::string> a = absl::StrSplit(restored, '\n'), b = absl::StrSplit(live, '\n');
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    if (a[i] != b[i]) {
      ADD_FAILURE() << "line " << i << " differs:\n restored: " << a[i] << "\n live:     " << b[i];
      return;
    }
  }
  EXPECT_EQ(a.size(), b.size()) << "lines in the restored and the live dump";
}

void FlipByte(const std::string& path, uint64_t offset) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(static_cast<std::streamoff>(offset));
  char c = 0;
  f.read(&c, 1);
  c = static_cast<char>(c ^ 0x5a);
  f.seekp(static_cast<std::streamoff>(offset));
  f.write(&c, 1);
}

// The backup's table files (RocksDB's BackupEngine keeps them, shared
// between backups, under shared_checksum/).
std::vector<std::string> BackupTables(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (e.path().extension() == ".sst") out.push_back(e.path().string());
  }
  return out;
}

// Backups taken while two producers ingest 200,000 events hold exactly the
// store as of their seq: each restores into a new directory, opens at that
// seq, and its snapshot, histories and change feed equal the live store's as
// of it. Sources and checkpoints come with it.
TEST(BackupTest, BackupsDuringIngestRestoreToTheirSeq) {
  TempDir dir;
  auto store = Store::Open(dir.Sub("live"), Options{});
  ASSERT_TRUE(store.ok()) << store.status();
  Store& live = **store;
  ASSERT_TRUE(live.PutSource({.name = "feed", .format = "debezium"}).ok());

  std::atomic<int> failures{0}, finished{0};
  std::vector<std::thread> producers;
  for (int p = 0; p < kProducers; ++p) {
    producers.emplace_back([&, p] {
      for (int b = 0; b < kBatches; ++b) {
        if (!live.Ingest(Batch(p, b), {}).ok()) failures++;
      }
      finished++;
    });
  }
  std::vector<BackupInfo> taken;
  for (uint64_t at : {20000u, 120000u}) {
    while (live.LastSeq() < at && finished == 0) absl::SleepFor(absl::Milliseconds(5));
    if (at == 120000u) {
      ASSERT_TRUE(live.PutCheckpoint("etl", live.LastSeq()).ok());
    }
    auto b = live.Backup(dir.Sub("backups"));
    ASSERT_TRUE(b.ok()) << b.status();
    taken.push_back(*b);
  }
  const uint64_t during = live.LastSeq();
  for (auto& t : producers) t.join();
  ASSERT_EQ(failures, 0);
  // The backups were taken while ingest went on, not after it.
  EXPECT_LT(taken[1].seq, live.LastSeq());
  EXPECT_LE(taken[1].seq, during);
  EXPECT_GE(taken[0].seq, 20000u);
  EXPECT_EQ(taken[0].id, 1u);
  EXPECT_EQ(taken[1].id, 2u);

  StoreStats stats = live.Stats();
  EXPECT_EQ(stats.backups.count, 2u);
  EXPECT_EQ(stats.backups.errors, 0u);
  EXPECT_EQ(stats.backups.last_id, 2u);
  EXPECT_EQ(stats.backups.last_seq, taken[1].seq);

  auto listed = backup::List(dir.Sub("backups"));
  ASSERT_TRUE(listed.ok()) << listed.status();
  ASSERT_EQ(listed->size(), 2u);
  for (size_t i = 0; i < taken.size(); ++i) {
    SCOPED_TRACE(absl::StrCat("backup ", taken[i].id, " at seq ", taken[i].seq));
    EXPECT_EQ((*listed)[i].id, taken[i].id);
    EXPECT_EQ((*listed)[i].seq, taken[i].seq);
    EXPECT_EQ((*listed)[i].format_version, taken[i].format_version);
    EXPECT_GT((*listed)[i].format_version, 0u);
    EXPECT_FALSE((*listed)[i].cairn_version.empty());
    auto verified = backup::Verify(dir.Sub("backups"), taken[i].id);
    ASSERT_TRUE(verified.ok()) << verified.status();

    const std::string target = dir.Sub(absl::StrCat("restored", i));
    auto restored = backup::Restore(dir.Sub("backups"), target, taken[i].id);
    ASSERT_TRUE(restored.ok()) << restored.status();
    EXPECT_EQ(restored->seq, taken[i].seq);
    EXPECT_FALSE(fs::exists(target + ".restoring"));
    auto r = Store::Open(target, Options{});
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ((*r)->LastSeq(), taken[i].seq);
    ExpectSameDump(Dump(**r, taken[i].seq), Dump(live, taken[i].seq));
    EXPECT_TRUE((*r)->GetSource("feed").ok());
    if (i == 1) {
      auto c = (*r)->GetCheckpoint("etl");
      ASSERT_TRUE(c.ok()) << c.status();
      EXPECT_EQ(*c, *live.GetCheckpoint("etl"));
    }
    // A subscriber that had read past the backup is told, not served a gap.
    SubscribeOptions ahead;
    ahead.start = SubscribeOptions::Start::kFromSeq;
    ahead.from_seq = taken[i].seq + 1;
    auto sub = (*r)->Subscribe(ahead);
    EXPECT_EQ(sub.status().code(), absl::StatusCode::kOutOfRange) << sub.status();
    // The restored store takes new events after the backup's seq.
    auto more = (*r)->Ingest(Batch(0, kBatches), {});
    ASSERT_TRUE(more.ok()) << more.status();
    EXPECT_EQ(more->first_seq, taken[i].seq + 1);
  }
}

// A second backup, after 10% more events, copies only the tables that are
// new since the first.
TEST(BackupTest, BackupsAreIncremental) {
  TempDir dir;
  auto store = Store::Open(dir.Sub("live"), Options{});
  ASSERT_TRUE(store.ok()) << store.status();
  for (int b = 0; b < 200; ++b) ASSERT_TRUE((*store)->Ingest(Batch(0, b), {}).ok());
  ASSERT_TRUE((*store)->CompactNow().ok());  // the log in tables
  auto first = (*store)->Backup(dir.Sub("backups"));
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->copied_bytes, first->size_bytes);
  EXPECT_GT(first->size_bytes, 1u << 20);

  EXPECT_EQ(first->seq, (*store)->LastSeq());
  for (int b = 0; b < 20; ++b) ASSERT_TRUE((*store)->Ingest(Batch(1, b), {}).ok());
  auto second = (*store)->Backup(dir.Sub("backups"));
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_GT(second->seq, first->seq);
  EXPECT_EQ(second->seq, (*store)->LastSeq());
  EXPECT_GE(second->size_bytes, first->size_bytes);
  std::printf("first backup %lu bytes; after 10%% more events the second copied %lu of %lu\n",
              static_cast<unsigned long>(first->size_bytes),
              static_cast<unsigned long>(second->copied_bytes),
              static_cast<unsigned long>(second->size_bytes));
  // The new events' share of the store is about a tenth; what is copied is
  // them (flushed by the backup) and the manifest, not the first's tables.
  EXPECT_LT(second->copied_bytes, first->size_bytes / 5)
      << "the second backup copied " << second->copied_bytes << " of " << second->size_bytes;

  // Pruning keeps the newest; the files the pruned one shared stay.
  auto pruned = backup::Prune(dir.Sub("backups"), 1);
  ASSERT_TRUE(pruned.ok()) << pruned.status();
  EXPECT_EQ(*pruned, (std::vector<uint32_t>{first->id}));
  auto listed = backup::List(dir.Sub("backups"));
  ASSERT_TRUE(listed.ok());
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ((*listed)[0].id, second->id);
  EXPECT_TRUE(backup::Verify(dir.Sub("backups")).ok());
  EXPECT_EQ(backup::Prune(dir.Sub("backups"), 0).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// A flipped byte in a backed-up table: Verify and Restore say DATA_LOSS and
// name the file; nothing is restored.
TEST(BackupTest, DamagedBackupIsRefusedNamingTheFile) {
  TempDir dir;
  auto store = Store::Open(dir.Sub("live"), Options{});
  ASSERT_TRUE(store.ok()) << store.status();
  for (int b = 0; b < 40; ++b) ASSERT_TRUE((*store)->Ingest(Batch(0, b), {}).ok());
  auto taken = (*store)->Backup(dir.Sub("backups"));
  ASSERT_TRUE(taken.ok()) << taken.status();
  ASSERT_TRUE(backup::Verify(dir.Sub("backups")).ok());

  std::vector<std::string> tables = BackupTables(dir.Sub("backups"));
  ASSERT_FALSE(tables.empty());
  std::string victim = tables[0];
  for (const auto& t : tables) {
    if (fs::file_size(t) > fs::file_size(victim)) victim = t;
  }
  FlipByte(victim, fs::file_size(victim) / 2);
  const std::string name = fs::path(victim).filename().string();

  auto verified = backup::Verify(dir.Sub("backups"));
  EXPECT_EQ(verified.status().code(), absl::StatusCode::kDataLoss) << verified.status();
  EXPECT_THAT(std::string(verified.status().message()), HasSubstr(name));

  const std::string target = dir.Sub("restored");
  auto restored = backup::Restore(dir.Sub("backups"), target);
  EXPECT_EQ(restored.status().code(), absl::StatusCode::kDataLoss) << restored.status();
  EXPECT_THAT(std::string(restored.status().message()), HasSubstr(name));
  EXPECT_FALSE(fs::exists(target));
  EXPECT_FALSE(fs::exists(target + ".restoring"));
}

TEST(BackupTest, RestoreRefusesWhatItCannotDo) {
  TempDir dir;
  EXPECT_EQ(backup::List(dir.Sub("none")).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(backup::Restore(dir.Sub("none"), dir.Sub("t")).status().code(),
            absl::StatusCode::kNotFound);
  auto store = Store::Open(dir.Sub("live"), Options{});
  ASSERT_TRUE(store.ok()) << store.status();
  ASSERT_TRUE((*store)->Ingest(Batch(0, 0), {}).ok());
  ASSERT_TRUE((*store)->Backup(dir.Sub("backups")).ok());

  // Not over a store (or anything else).
  auto over = backup::Restore(dir.Sub("backups"), dir.Sub("live"));
  EXPECT_EQ(over.status().code(), absl::StatusCode::kFailedPrecondition) << over.status();
  EXPECT_THAT(std::string(over.status().message()), HasSubstr("not empty"));
  // No such backup.
  auto missing = backup::Restore(dir.Sub("backups"), dir.Sub("t"), 7);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound) << missing.status();
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("no backup 7"));
  // An empty directory is a fine target (given with a trailing slash: the
  // restore still goes through empty.restoring beside it).
  fs::create_directories(dir.Sub("empty"));
  auto into_empty = backup::Restore(dir.Sub("backups"), dir.Sub("empty/"));
  ASSERT_TRUE(into_empty.ok()) << into_empty.status();
  auto r = Store::Open(dir.Sub("empty"), Options{});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ((*r)->LastSeq(), (*store)->LastSeq());
}

// A session open when the backup is taken comes with it: the restored store
// can commit it, and the source's counters are there.
TEST(BackupTest, OpenSessionsAndCountersComeWithTheBackup) {
  TempDir dir;
  auto store = Store::Open(dir.Sub("live"), Options{});
  ASSERT_TRUE(store.ok()) << store.status();
  ASSERT_TRUE((*store)->PutSource({.name = "contrib", .format = "bitbroker"}).ok());
  ASSERT_TRUE((*store)->Ingest(Batch(0, 0), {}).ok());
  auto id = (*store)->OpenSession("contrib", "countries", SessionMode::kAccrue);
  ASSERT_TRUE(id.ok()) << id.status();
  std::vector<SessionRecord> records;
  for (int k = 0; k < 3; ++k) {
    records.push_back({absl::StrCat(R"("c)", k, R"(")"), absl::StrCat(R"({"k":)", k, "}")});
  }
  ASSERT_TRUE((*store)->SessionUpsert(*id, records).ok());
  auto taken = (*store)->Backup(dir.Sub("backups"));
  ASSERT_TRUE(taken.ok()) << taken.status();
  ASSERT_TRUE(backup::Restore(dir.Sub("backups"), dir.Sub("restored")).ok());
  auto r = Store::Open(dir.Sub("restored"), Options{});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ((*r)->Stats().sources.at("p0").accepted, (*store)->Stats().sources.at("p0").accepted);
  auto closed = (*r)->CloseSession(*id, /*commit=*/true);
  ASSERT_TRUE(closed.ok()) << closed.status();
  EXPECT_EQ(closed->applied, 3u);
  EXPECT_EQ(closed->first_seq, taken->seq + 1);
  auto c1 = (*r)->Get("countries", R"("c1")");
  ASSERT_TRUE(c1.ok()) << c1.status();
  EXPECT_EQ(c1->document, R"({"k":1})");
}

// A restore cut short leaves <target>.restoring; the store will not open
// at <target> until the restore is done again (or the leftover removed).
TEST(BackupTest, StoreOpenRefusesBesideAnUnfinishedRestore) {
  TempDir dir;
  fs::create_directories(dir.Sub("store.restoring"));
  auto refused = Store::Open(dir.Sub("store"), Options{});
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition) << refused.status();
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("store.restoring"));
  auto also = Store::Open(dir.Sub("store/"), Options{});
  EXPECT_EQ(also.status().code(), absl::StatusCode::kFailedPrecondition) << also.status();
}

}  // namespace
}  // namespace cairn
