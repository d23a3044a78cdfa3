// Opening a store written by an older cairn. testdata/v1-store.tar.gz was
// written by the format-1 engine (commit 7443929) running this file's
// WriteFixture with CAIRN_FIXTURE_DIR set (then its LOG, LOCK and older
// OPTIONS files removed); it holds Phase1() below. v2-store.tar.gz is the
// same, written by the format-2 engine (commit 1868171), v3-store.tar.gz
// by the format-3 engine (commit c50e96d), and v4-store.tar.gz by the
// format-4 engine (commit 14d816f), the last to key history and entity_seq
// oldest first: its upgrade rewrites both families.
// The test opens a copy with this engine (which upgrades it in place) and
// checks that it answers every query exactly as a store this engine built
// from the same events, then that both keep agreeing after Phase2() (in
// order, late and truncate events on top of the old records), and after a
// reopen.
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cairn/store.h"
#include "config.h"
#include "crash_check.h"
#include "gtest/gtest.h"
#include "retention.h"
#include "rocksdb/db.h"
#include "test_util.h"

namespace cairn {
namespace {

constexpr uint64_t kT0 = 1700000000000000;

Event E(const std::string& collection, int key, uint64_t ts, Op op, const std::string& payload,
        const std::string& source = "feed") {
  return Event{.source = source,
               .collection = collection,
               .key = absl::StrCat(key),
               .position = {kT0 + ts, 0},
               .op = op,
               .payload = payload};
}

// Batches: upserts, patches, deletes, late events, two sources, a truncate.
std::vector<std::vector<Event>> Phase1() {
  std::vector<std::vector<Event>> out;
  for (int round = 0; round < 4; ++round) {
    std::vector<Event> b;
    for (int k = 0; k < 30; ++k) {
      uint64_t ts = 1000 * (round + 1) + k;
      if (round == 0 || k % 3 == 0) {
        b.push_back(E("acct", k, ts, Op::kUpsert,
                      absl::StrCat(R"({"k":)", k, R"(,"r":)", round, R"(,"name":"n)", k, R"("})")));
      } else if (k % 3 == 1) {
        b.push_back(E("acct", k, ts, Op::kPatch, absl::StrCat(R"({"r":)", round, "}")));
      } else if (round == 2) {
        b.push_back(E("acct", k, ts, Op::kDelete, ""));
      } else {
        b.push_back(E("item", k, ts, Op::kUpsert, absl::StrCat(R"({"i":)", k, "}"), "other"));
      }
    }
    out.push_back(std::move(b));
  }
  // Late: before versions the entities already have.
  out.push_back({E("acct", 1, 1500, Op::kPatch, R"({"late":1})"),
                 E("acct", 3, 2500, Op::kUpsert, R"({"late":3})"),
                 E("acct", 4, 10, Op::kPatch, R"({"early":4})")});
  out.push_back({Event{
      .source = "other", .collection = "item", .position = {kT0 + 3500, 0}, .op = Op::kTruncate}});
  return out;
}

// On top of the old records: every kind of write again.
std::vector<std::vector<Event>> Phase2() {
  std::vector<std::vector<Event>> out;
  std::vector<Event> b;
  for (int k = 0; k < 30; ++k) {
    b.push_back(E("acct", k, 9000 + k, k % 2 ? Op::kPatch : Op::kUpsert,
                  absl::StrCat(R"({"p2":)", k, "}")));
  }
  out.push_back(std::move(b));
  out.push_back({E("acct", 5, 3200, Op::kPatch, R"({"late2":5})"),
                 E("acct", 6, 4500, Op::kUpsert, R"({"late2":6})"),
                 E("item", 7, 100, Op::kUpsert, R"({"before_truncate":7})", "other"),
                 E("acct", 8, 9100, Op::kDelete, "")});
  return out;
}

// Phase 1 again, a conflict among it, and events past it: the old store's
// events are found where that format logged them (duplicates, conflicts),
// and new ones are logged where this one does.
std::vector<std::vector<Event>> Phase3() {
  std::vector<std::vector<Event>> out = Phase1();
  out[0][3].payload = R"({"conflict":3})";
  out.push_back({E("acct", 2, 9500, Op::kUpsert, R"({"p3":2})")});
  out.push_back(out.back());
  return out;
}

void IngestAll(Store& store, const std::vector<std::vector<Event>>& batches) {
  for (const auto& b : batches) {
    auto r = store.Ingest(b, {});
    ASSERT_TRUE(r.ok()) << r.status();
  }
}

// Every answer the store gives about the events' entities, as text.
std::string Observe(Store& store) {
  std::string out = absl::StrCat("last_seq ", store.LastSeq(), "\n");
  auto entity = [](const Entity& e) {
    return absl::StrCat(e.collection, " ", e.key, " ", e.document, " complete=", e.complete, " at ",
                        e.position.timestamp, ".", e.position.tick, "/", e.source, " seq=", e.seq,
                        "\n");
  };
  std::vector<SnapshotOptions> views = {{}, {.include_incomplete = false}};
  for (uint64_t seq = 0; seq <= store.LastSeq(); seq += 7) views.push_back({.as_of_seq = seq});
  for (uint64_t ts : {0, 1010, 2020, 3000, 3600, 4100, 9050}) {
    views.push_back({.as_of_position = Position{kT0 + ts, 0}});
  }
  for (const SnapshotOptions& v : views) {
    absl::StrAppend(&out, "snapshot seq=", v.as_of_seq.value_or(0),
                    " ts=", v.as_of_position ? v.as_of_position->timestamp : 0, "\n");
    auto s = store.Snapshot(v, [&](const Entity& e) {
      out += entity(e);
      return true;
    });
    if (!s.ok()) absl::StrAppend(&out, "error ", s.ToString(), "\n");
  }
  for (const char* collection : {"acct", "item"}) {
    for (int k = 0; k < 30; ++k) {
      auto h = store.History(collection, absl::StrCat(k), {});
      if (!h.ok()) {
        absl::StrAppend(&out, "history error ", h.status().ToString(), "\n");
        continue;
      }
      for (const Version& v : *h) {
        absl::StrAppend(&out, collection, " ", k, " ", OpName(v.op), " at ", v.position.timestamp,
                        "/", v.source, " seq=", v.seq, " complete=", v.complete,
                        " before=", v.before, " after=", v.after, "\n");
      }
    }
  }
  for (const auto& [name, s] : store.Stats().sources) {
    absl::StrAppend(&out, name, " accepted=", s.accepted, " duplicates=", s.duplicates, "\n");
  }
  return out;
}

// Writes the fixture when CAIRN_FIXTURE_DIR names an empty directory.
TEST(UpgradeTest, WriteFixture) {
  const char* dir = getenv("CAIRN_FIXTURE_DIR");
  if (dir == nullptr) GTEST_SKIP() << "set CAIRN_FIXTURE_DIR to write the fixture";
  auto store = Store::Open(dir, Options{});
  ASSERT_TRUE(store.ok()) << store.status();
  // Most of it in SST files, the rest in the WAL.
  std::vector<std::vector<Event>> batches = Phase1();
  IngestAll(**store, {batches.begin(), batches.begin() + 4});
  ASSERT_TRUE((*store)->CompactNow().ok());
  IngestAll(**store, {batches.begin() + 4, batches.end()});
}

// A store written by an older format (testdata/v<N>-store.tar.gz) answers as
// one this engine built from the same events, before and after more of every
// kind of write, a compaction and a reopen.
// With `killed_upgrades`, that many processes first open the old store and
// are killed at `crash_point` (by default just before the upgrade is
// recorded): the upgrade is then done by the next open.
void CheckUpgrade(const std::string& name, int killed_upgrades = 0,
                  const std::string& crash_point = "upgrade.before_record") {
  TempDir dir;
  std::string fixture = absl::StrCat(CAIRN_TESTDATA_DIR, "/", name, ".tar.gz");
  ASSERT_EQ(system(absl::StrCat("tar -xzf ", fixture, " -C ", dir.path()).c_str()), 0);
  std::string old_path = dir.Sub(name);
  ASSERT_TRUE(std::filesystem::exists(old_path + "/CURRENT"));
  for (int i = 0; i < killed_upgrades; ++i) {
    pid_t pid = crash_check::StartChild("open", old_path, dir.Sub("acks"), 0, crash_point);
    ASSERT_GE(pid, 0) << "fork failed";
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
        << "open " << i << " was not killed at the upgrade: exit " << WEXITSTATUS(status);
  }

  TempDir fresh_dir;
  auto fresh = Store::Open(fresh_dir.path(), Options{});
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  IngestAll(**fresh, Phase1());
  {
    auto old = Store::Open(old_path, Options{});
    ASSERT_TRUE(old.ok()) << old.status();
    ASSERT_EQ(Observe(**old), Observe(**fresh));
    IngestAll(**old, Phase2());
    IngestAll(**fresh, Phase2());
    ASSERT_EQ(Observe(**old), Observe(**fresh));
    ASSERT_TRUE((*old)->CompactNow().ok());
    EXPECT_EQ(Observe(**old), Observe(**fresh));
  }
  auto reopened = Store::Open(old_path, Options{});
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  EXPECT_EQ(Observe(**reopened), Observe(**fresh));
  // Everything again: as many duplicates and conflicts in both.
  std::vector<std::vector<Event>> again = Phase3();
  for (size_t i = 0; i < again.size(); ++i) {
    SCOPED_TRACE(absl::StrCat("phase 3 batch ", i));
    auto a = (*reopened)->Ingest(again[i], {});
    auto b = (*fresh)->Ingest(again[i], {});
    ASSERT_TRUE(a.ok() && b.ok()) << a.status() << " " << b.status();
    EXPECT_EQ(a->applied, b->applied);
    EXPECT_EQ(a->duplicates, b->duplicates);
    EXPECT_EQ(a->conflicts, b->conflicts);
  }
  EXPECT_EQ(Observe(**reopened), Observe(**fresh));
  EXPECT_GT((*fresh)->Stats().sources.at("feed").duplicates, 90u);
}

TEST(UpgradeTest, AFormatOneStoreAnswersAsOneBuiltByThisEngine) { CheckUpgrade("v1-store"); }

// testdata/v2-store.tar.gz: written the same way by the format-2 engine
// (commit 1868171). Its events are in the log family.
TEST(UpgradeTest, AFormatTwoStoreAnswersAsOneBuiltByThisEngine) { CheckUpgrade("v2-store"); }

// testdata/v3-store.tar.gz: written the same way by the format-3 engine.
TEST(UpgradeTest, AFormatThreeStoreAnswersAsOneBuiltByThisEngine) { CheckUpgrade("v3-store"); }

// testdata/v4-store.tar.gz: written the same way by the format-4 engine.
TEST(UpgradeTest, AFormatFourStoreAnswersAsOneBuiltByThisEngine) { CheckUpgrade("v4-store"); }

TEST(UpgradeTest, AnUpgradeKilledBeforeItIsRecordedIsDoneByTheNextOpen) {
  CheckUpgrade("v2-store", /*killed_upgrades=*/20);
}

// Records in the families of an unopened store, by family name.
std::map<std::string, size_t> CountRecords(const std::string& path) {
  std::map<std::string, size_t> out;
  std::vector<std::string> names;
  EXPECT_TRUE(rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions(), path, &names).ok());
  std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
  for (const std::string& n : names) {
    rocksdb::ColumnFamilyOptions cfo;
    cfo.merge_operator = internal::MergeOperatorOf(n);
    descriptors.emplace_back(n, cfo);
  }
  rocksdb::DB* raw = nullptr;
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  EXPECT_TRUE(
      rocksdb::DB::OpenForReadOnly(rocksdb::DBOptions(), path, descriptors, &handles, &raw).ok());
  if (raw == nullptr) return out;
  std::unique_ptr<rocksdb::DB> db(raw);
  for (size_t i = 0; i < names.size(); ++i) {
    std::unique_ptr<rocksdb::Iterator> it(db->NewIterator({}, handles[i]));
    for (it->SeekToFirst(); it->Valid(); it->Next()) ++out[names[i]];
    it.reset();
    db->DestroyColumnFamilyHandle(handles[i]).PermitUncheckedError();
  }
  return out;
}

// The rewrite of the oldest-first families is resumable: each open killed
// after a chunk (crash point upgrade.chunk) leaves the chunks done so far,
// and the next one goes on after them. So the opens are killed exactly as
// many times as there are chunks -- one that started over would never get
// past the first -- and the store then answers as one this engine built.
TEST(UpgradeTest, AnUpgradeKilledWhileRewritingResumesWhereItStopped) {
  TempDir dir;
  ASSERT_EQ(system(absl::StrCat("tar -xzf ", CAIRN_TESTDATA_DIR, "/v4-store.tar.gz -C ", dir.path())
                       .c_str()),
            0);
  const std::string path = dir.Sub("v4-store");
  std::map<std::string, size_t> before = CountRecords(path);
  size_t chunks = 0;
  for (const char* legacy : {internal::kLegacyHistory, internal::kLegacyEntitySeq}) {
    ASSERT_GT(before[legacy], 0u) << legacy;
    chunks +=
        (before[legacy] + internal::kUpgradeChunkRecords - 1) / internal::kUpgradeChunkRecords;
  }
  ASSERT_GE(chunks, 3u);
  size_t kills = 0;
  while (kills <= chunks) {
    pid_t pid = crash_check::StartChild("open", path, dir.Sub("acks"), 0, "upgrade.chunk");
    ASSERT_GE(pid, 0) << "fork failed";
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    if (WIFEXITED(status)) {
      ASSERT_EQ(WEXITSTATUS(status), 0) << "the open after " << kills << " kills failed";
      break;
    }
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    ++kills;
  }
  EXPECT_EQ(kills, chunks);
  // Upgraded: the old families are gone, each record is in its new one.
  std::map<std::string, size_t> after = CountRecords(path);
  EXPECT_EQ(after.count(internal::kLegacyHistory), 0u);
  EXPECT_EQ(after.count(internal::kLegacyEntitySeq), 0u);
  EXPECT_EQ(after[internal::CfName(internal::kHistory)], before[internal::kLegacyHistory]);
  EXPECT_EQ(after[internal::CfName(internal::kEntitySeq)], before[internal::kLegacyEntitySeq]);
  // And it answers as a store built by this engine (CheckUpgrade's checks,
  // on a fresh copy killed the same way twice).
  CheckUpgrade("v4-store", /*killed_upgrades=*/2, "upgrade.chunk");
}

}  // namespace
}  // namespace cairn
