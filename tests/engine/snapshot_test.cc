// Point-in-time snapshots (DESIGN §4) against the reference model: as of a
// seq N (the state exactly as the store knew it after commit N) and as of a
// position P (the fold of every known event at or before P), with and without
// incomplete entities; then the same after retention removed older entries
// (DESIGN §5), where every point inside the window must still be exact and
// every point before it must be OUT_OF_RANGE naming the oldest one left.
#include <algorithm>
#include <atomic>
#include <functional>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cairn/store.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "key_codec.h"
#include "model.h"
#include "records.h"
#include "retention.h"
#include "rocksdb/db.h"
#include "test_util.h"

namespace cairn {
namespace {

using model::EntityId;
using model::Model;
using model::ModelEvent;
using ::testing::HasSubstr;

constexpr uint64_t kT0 = 1700000000000000;
constexpr uint64_t kStep = 1000;  // µs between event timestamps
constexpr int kSteps = 50;

// Events in arrival order: random positions (so most arrive late), a few
// exact re-sends and conflicting re-sends of earlier identities.
struct Scenario {
  std::vector<ModelEvent> events;
  std::vector<EntityId> entities;  // sorted: the store's snapshot order
};

Scenario Generate(std::mt19937& rng, size_t n) {
  Scenario sc;
  for (const char* c : {"acct", "item"}) {
    std::vector<size_t> keys(model::Keys().size());
    for (size_t i = 0; i < keys.size(); ++i) keys[i] = i;
    std::shuffle(keys.begin(), keys.end(), rng);
    for (size_t i = 0; i < 4; ++i) sc.entities.push_back({c, keys[i]});
  }
  std::sort(sc.entities.begin(), sc.entities.end());
  while (sc.events.size() < n) {
    if (!sc.events.empty() && rng() % 10 == 0) {
      ModelEvent again = sc.events[rng() % sc.events.size()];
      again.spelling = rng();
      if (rng() % 2) {
        again.op = Op::kUpsert;  // a conflict (unless it already was this)
        again.payload = model::RandomDocument(rng);
      }
      sc.events.push_back(std::move(again));
      continue;
    }
    ModelEvent e;
    e.source = rng() % 2 ? "alpha" : "beta";
    e.entity = sc.entities[rng() % sc.entities.size()];
    e.position = {kT0 + (rng() % kSteps) * kStep, rng() % 3};
    e.Randomize(rng, /*patch_below=*/16);
    sc.events.push_back(std::move(e));
  }
  return sc;
}

// Ingests the scenario in random batches, feeding the model the same arrival
// order and checking each batch's outcomes and seq range against it.
// `commit_micros[seq]` is the clock at the batch that produced `seq`.
void IngestAll(Store& store, const Scenario& sc, std::mt19937& rng, Model* m,
               std::vector<uint64_t>* commit_micros = nullptr,
               const std::function<uint64_t(size_t batch)>& clock = nullptr) {
  size_t batch_no = 0;
  for (size_t i = 0; i < sc.events.size(); ++batch_no) {
    uint64_t now = clock ? clock(batch_no) : 0;
    size_t n = std::min<size_t>(1 + rng() % 8, sc.events.size() - i);
    uint64_t seq_before = m->last_seq();
    std::vector<Event> batch;
    std::vector<Outcome> want;
    for (size_t j = i; j < i + n; ++j) {
      batch.push_back(sc.events[j].ToEvent());
      want.push_back(m->Add(sc.events[j]));
    }
    auto r = store.Ingest(std::move(batch), {});
    ASSERT_TRUE(r.ok()) << r.status();
    for (size_t j = 0; j < n; ++j) {
      EXPECT_EQ(OutcomeName(r->outcomes[j]), std::string(OutcomeName(want[j])))
          << "event " << i + j;
    }
    if (m->last_seq() > seq_before) {
      EXPECT_EQ(r->first_seq, seq_before + 1);
      EXPECT_EQ(r->last_seq, m->last_seq());
    } else {
      EXPECT_EQ(r->first_seq, 0u);
      EXPECT_EQ(r->last_seq, 0u);
    }
    if (commit_micros) commit_micros->resize(m->last_seq() + 1, now);
    i += n;
  }
  EXPECT_EQ(store.LastSeq(), m->last_seq());
}

std::string ExpectAtSeq(const Model& m, const Scenario& sc, uint64_t n, bool include_incomplete,
                        const std::string& collection = "") {
  std::string out;
  for (const EntityId& id : sc.entities) {
    if (!collection.empty() && id.collection != collection) continue;
    model::ModelState s = m.AtSeq(id, n);
    if (s.doc && (include_incomplete || s.complete)) out += model::EntityLine(id, s, true);
  }
  return out;
}

std::string ExpectAtPosition(const Model& m, const Scenario& sc, std::optional<Position> p,
                             bool include_incomplete) {
  std::string out;
  for (const EntityId& id : sc.entities) {
    model::ModelState s = m.Fold(id, p, nullptr);
    if (s.doc && (include_incomplete || s.complete)) out += model::EntityLine(id, s, false);
  }
  return out;
}

// Every seq in [from, to] as of which the store must match the model.
void CheckSeqs(Store& store, const Model& m, const Scenario& sc, uint64_t from, uint64_t to) {
  for (uint64_t n = from; n <= to; ++n) {
    SCOPED_TRACE(absl::StrCat("as of seq ", n));
    for (bool incomplete : {true, false}) {
      EXPECT_EQ(
          model::SnapshotText(store, {.as_of_seq = n, .include_incomplete = incomplete}, true),
          ExpectAtSeq(m, sc, n, incomplete))
          << "include_incomplete=" << incomplete;
    }
    EXPECT_EQ(model::SnapshotText(store, {.as_of_seq = n, .collection = "item"}, true),
              ExpectAtSeq(m, sc, n, true, "item"));
    auto cursor = store.NewSnapshot({.as_of_seq = n});
    ASSERT_TRUE(cursor.ok()) << cursor.status();
    EXPECT_EQ((*cursor)->seq(), n);
  }
}

// Points at every event position, between them, and beyond both ends.
std::vector<Position> PositionsToCheck(const Scenario& sc, std::mt19937& rng,
                                       uint64_t from_timestamp = 0) {
  std::set<Position> points = {{kT0 + kSteps * kStep, 0}, {UINT64_MAX - 1, 0}};
  if (from_timestamp == 0) points.insert({kT0 - 1, 7});
  for (const ModelEvent& e : sc.events) points.insert(e.position);
  for (int i = 0; i < 20; ++i) {
    points.insert({kT0 + (rng() % kSteps) * kStep + rng() % 2 * (kStep / 2), rng() % 4});
  }
  std::vector<Position> out;
  for (Position p : points) {
    if (p.timestamp >= from_timestamp) out.push_back(p);
  }
  return out;
}

void CheckPositions(Store& store, const Model& m, const Scenario& sc,
                    const std::vector<Position>& points) {
  for (Position p : points) {
    SCOPED_TRACE(absl::StrCat("as of position ", model::PositionText(p)));
    for (bool incomplete : {true, false}) {
      EXPECT_EQ(model::SnapshotText(store, {.as_of_position = p, .include_incomplete = incomplete},
                                    false),
                ExpectAtPosition(m, sc, p, incomplete))
          << "include_incomplete=" << incomplete;
    }
  }
}

// Get and History of every entity, the versions limited to the window.
void CheckCurrent(Store& store, const Model& m, const Scenario& sc, uint64_t oldest_ts = 0) {
  for (const EntityId& id : sc.entities) {
    SCOPED_TRACE(absl::StrCat(id.collection, " ", id.canonical_key()));
    std::vector<model::ModelVersion> versions;
    model::ModelState s = m.Fold(id, std::nullopt, &versions);
    auto e = store.Get(id.collection, id.canonical_key());
    if (s.doc) {
      ASSERT_TRUE(e.ok()) << e.status();
      EXPECT_EQ(model::EntityLine(*e, true), model::EntityLine(id, s, true));
    } else {
      EXPECT_EQ(e.status().code(), absl::StatusCode::kNotFound) << e.status();
    }
    std::string want, got;
    for (const auto& v : versions) {
      if (v.position.timestamp >= oldest_ts) want += model::VersionLine(v);
    }
    auto h = store.History(id.collection, id.canonical_key(), {});
    ASSERT_TRUE(h.ok()) << h.status();
    for (const Version& v : *h) got += model::VersionLine(v);
    EXPECT_EQ(got, want);
  }
  EXPECT_EQ(model::SnapshotText(store, {}, true), [&] {
    std::string out;
    for (const EntityId& id : sc.entities) {
      model::ModelState s = m.Fold(id, std::nullopt, nullptr);
      if (s.doc) out += model::EntityLine(id, s, true);
    }
    return out;
  }());
}

// Opens the (closed) store at `path` as a plain RocksDB database, read-only
// unless `writable`, and calls fn(db, column families by name).
void WithRawDb(
    const std::string& path, bool writable,
    const std::function<void(rocksdb::DB*, std::map<std::string, rocksdb::ColumnFamilyHandle*>&)>&
        fn) {
  std::vector<std::string> names;
  rocksdb::Status s = rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions(), path, &names);
  ASSERT_TRUE(s.ok()) << s.ToString();
  std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
  for (const auto& name : names) {
    rocksdb::ColumnFamilyOptions cfo;
    cfo.merge_operator = internal::MergeOperatorOf(name);
    descriptors.emplace_back(name, cfo);
  }
  rocksdb::DB* raw = nullptr;
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  s = writable
          ? rocksdb::DB::Open(rocksdb::DBOptions(), path, descriptors, &handles, &raw)
          : rocksdb::DB::OpenForReadOnly(rocksdb::DBOptions(), path, descriptors, &handles, &raw);
  ASSERT_TRUE(s.ok()) << s.ToString();
  std::unique_ptr<rocksdb::DB> db(raw);
  std::map<std::string, rocksdb::ColumnFamilyHandle*> cfs;
  for (size_t i = 0; i < names.size(); ++i) cfs[names[i]] = handles[i];
  fn(db.get(), cfs);
  for (auto* h : handles) db->DestroyColumnFamilyHandle(h).PermitUncheckedError();
}

// Entries left in one column family of the (closed) store at `path`.
size_t CountEntries(const std::string& path, const std::string& cf) {
  size_t count = 0;
  WithRawDb(path, /*writable=*/false, [&](rocksdb::DB* db, auto& cfs) {
    std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(rocksdb::ReadOptions(), cfs.at(cf)));
    for (it->SeekToFirst(); it->Valid(); it->Next()) ++count;
  });
  return count;
}

TEST(SnapshotTest, AsOfSeqAndPositionMatchTheModel) {
  for (uint32_t round = 0; round < 25; ++round) {
    SCOPED_TRACE(absl::StrCat("round ", round));
    std::mt19937 rng(100 + round);
    Scenario sc = Generate(rng, 40 + rng() % 60);
    TempDir dir;
    auto store = Store::Open(dir.path(), Options{});
    ASSERT_TRUE(store.ok()) << store.status();
    Model m;
    IngestAll(**store, sc, rng, &m);
    ASSERT_FALSE(::testing::Test::HasFailure());

    CheckSeqs(**store, m, sc, 0, m.last_seq());
    CheckPositions(**store, m, sc, PositionsToCheck(sc, rng));
    CheckCurrent(**store, m, sc);
    // A point past the last commit is not a point the store knew.
    EXPECT_EQ((*store)->NewSnapshot({.as_of_seq = m.last_seq() + 1}).status().code(),
              absl::StatusCode::kOutOfRange);
    // Repeatable: more commits do not change what seq N shows.
    uint64_t n = rng() % (m.last_seq() + 1);
    std::string before = model::SnapshotText(**store, {.as_of_seq = n}, true);
    ASSERT_TRUE((*store)
                    ->Ingest({{.source = "alpha",
                               .collection = "acct",
                               .key = "3",
                               .position = {kT0, 9},
                               .payload = R"({"late":1})"},
                              {.source = "beta",
                               .collection = "item",
                               .key = "\"b2\"",
                               .position = {kT0 + kSteps * kStep, 0},
                               .op = Op::kDelete}},
                             {})
                    .ok());
    EXPECT_EQ(model::SnapshotText(**store, {.as_of_seq = n}, true), before);
    if (::testing::Test::HasFailure()) break;
  }
}

TEST(SnapshotTest, RetentionByCommitCountKeepsTheWindowExact) {
  for (uint32_t round = 0; round < 4; ++round) {
    SCOPED_TRACE(absl::StrCat("round ", round));
    std::mt19937 rng(200 + round);
    Scenario sc = Generate(rng, 200);
    TempDir dir;
    Model m;
    {
      auto store = Store::Open(dir.path(), Options{});
      ASSERT_TRUE(store.ok()) << store.status();
      IngestAll(**store, sc, rng, &m);
    }
    const uint64_t last = m.last_seq();
    ASSERT_GT(last, 30u);
    const uint64_t keep = 10 + rng() % (last - 20);
    const uint64_t oldest = last - keep + 1;
    {
      auto store = Store::Open(dir.path(), Options{.retention = {.max_commits = keep}});
      ASSERT_TRUE(store.ok()) << store.status();
      ASSERT_TRUE((*store)->CompactNow().ok());
      EXPECT_EQ((*store)->Stats().oldest_seq, oldest);

      CheckSeqs(**store, m, sc, oldest, last);
      // No time window: every position is still answerable, exactly.
      CheckPositions(**store, m, sc, PositionsToCheck(sc, rng));
      CheckCurrent(**store, m, sc);
      for (uint64_t n : {oldest - 1, uint64_t{0}}) {
        auto old = (*store)->NewSnapshot({.as_of_seq = n});
        EXPECT_EQ(old.status().code(), absl::StatusCode::kOutOfRange) << n;
        EXPECT_THAT(std::string(old.status().message()),
                    HasSubstr(absl::StrCat("oldest available seq is ", oldest)));
      }
    }
    // The window was kept by what is on disk, not by data nobody removed.
    EXPECT_EQ(CountEntries(dir.path(), "changes"), keep);
    if (::testing::Test::HasFailure()) break;
  }
}

TEST(SnapshotTest, RetentionByAgeKeepsTheWindowExact) {
  constexpr uint64_t kMaxAge = 20 * kStep;
  for (uint32_t round = 0; round < 4; ++round) {
    SCOPED_TRACE(absl::StrCat("round ", round));
    std::mt19937 rng(300 + round);
    Scenario sc = Generate(rng, 200);
    TempDir dir;
    Model m;
    std::vector<uint64_t> commit_micros;
    std::atomic<uint64_t> now{kT0};  // the window starts before every event
    Options options{.retention = {.max_age = absl::Microseconds(kMaxAge)},
                    .retention_interval = absl::Hours(24),  // only CompactNow
                    .now_micros = [&now] { return now.load(); }};
    auto store = Store::Open(dir.path(), options);
    ASSERT_TRUE(store.ok()) << store.status();
    // Commits spread over the same span as the event timestamps.
    IngestAll(**store, sc, rng, &m, &commit_micros, [&](size_t batch) {
      now = kT0 + batch * 2 * kStep;
      return now.load();
    });
    const uint64_t last = m.last_seq();
    // A cutoff inside both spans; on a timestamp in even rounds.
    const uint64_t cutoff = kT0 + (15 + rng() % 10) * kStep + (round % 2) * kStep / 2;
    uint64_t oldest_seq = 1;
    while (oldest_seq <= last && commit_micros[oldest_seq] < cutoff) ++oldest_seq;
    ASSERT_LT(oldest_seq, last);
    ASSERT_GT(oldest_seq, 1u);
    now = cutoff + kMaxAge;
    ASSERT_TRUE((*store)->CompactNow().ok());
    StoreStats stats = (*store)->Stats();
    EXPECT_EQ(stats.oldest_position.timestamp, cutoff);
    EXPECT_EQ(stats.oldest_seq, oldest_seq);

    CheckSeqs(**store, m, sc, oldest_seq, last);
    CheckPositions(**store, m, sc, PositionsToCheck(sc, rng, cutoff));
    CheckCurrent(**store, m, sc, cutoff);

    auto old_seq = (*store)->NewSnapshot({.as_of_seq = oldest_seq - 1});
    EXPECT_EQ(old_seq.status().code(), absl::StatusCode::kOutOfRange);
    EXPECT_THAT(std::string(old_seq.status().message()),
                HasSubstr(absl::StrCat("oldest available seq is ", oldest_seq)));
    for (Position p : {Position{cutoff - 1, 0}, Position{kT0, 0}}) {
      auto old_pos = (*store)->NewSnapshot({.as_of_position = p});
      EXPECT_EQ(old_pos.status().code(), absl::StatusCode::kOutOfRange);
      EXPECT_THAT(std::string(old_pos.status().message()),
                  HasSubstr(absl::StrCat("oldest available timestamp is ", cutoff)));
    }
    auto old_history = (*store)->History("acct", "3", {.from_position = Position{kT0, 0}});
    EXPECT_EQ(old_history.status().code(), absl::StatusCode::kOutOfRange);
    // Every point older than the window is refused the same way: named, with
    // the oldest seq or timestamp still available.
    EXPECT_EQ(old_history.status().message(),
              absl::StrCat("from_position timestamp ", kT0,
                           " is older than the retention window; oldest available timestamp is ",
                           cutoff));
    auto old_history_seq = (*store)->History("acct", "3", {.from_seq = oldest_seq - 1});
    EXPECT_EQ(
        old_history_seq.status().message(),
        absl::StrCat("from_seq ", oldest_seq - 1,
                     " is older than the retention window; oldest available seq is ", oldest_seq));
    SubscribeOptions from_old{.start = SubscribeOptions::Start::kFromSeq, .from_seq = 0};
    auto old_sub = (*store)->Subscribe(from_old);
    EXPECT_EQ(old_sub.status().code(), absl::StatusCode::kOutOfRange);
    EXPECT_EQ(
        old_sub.status().message(),
        absl::StrCat("from_seq 0 is older than the retention window; oldest available seq is ",
                     oldest_seq));
    Event late{
        .source = "s", .collection = "acct", .key = "3", .position = {kT0, 0}, .payload = "{}"};
    auto old_event = (*store)->Ingest({late}, {});
    EXPECT_EQ(old_event.status().code(), absl::StatusCode::kOutOfRange);
    EXPECT_EQ(old_event.status().message(),
              absl::StrCat("event 0: position timestamp ", kT0,
                           " is older than the retention window; oldest available timestamp is ",
                           cutoff));
    // Every event inside the window is still logged: sent again, each is a
    // duplicate (or a conflict with what was logged first), as the model says.
    {
      Model again = m;
      std::vector<Event> batch;
      std::vector<Outcome> want;
      for (const ModelEvent& e : sc.events) {
        if (e.position.timestamp < cutoff) continue;
        batch.push_back(e.ToEvent());
        want.push_back(again.Add(e));
      }
      auto r = (*store)->Ingest(std::move(batch), {});
      ASSERT_TRUE(r.ok()) << r.status();
      EXPECT_EQ(r->applied, 0u);
      for (size_t j = 0; j < want.size(); ++j) {
        EXPECT_EQ(OutcomeName(r->outcomes[j]), std::string(OutcomeName(want[j]))) << "event " << j;
      }
    }
    store->reset();

    // What lies before the window is gone from disk. The log family holds
    // only truncates (there are none here): an event is logged by its
    // history version (format 3).
    size_t versions = 0;
    for (const EntityId& id : sc.entities) {
      std::vector<model::ModelVersion> vs;
      m.Fold(id, std::nullopt, &vs);
      versions += vs.size();
    }
    EXPECT_EQ(CountEntries(dir.path(), "log"), 0u);
    EXPECT_EQ(CountEntries(dir.path(), "changes"), last - oldest_seq + 1);
    EXPECT_LT(CountEntries(dir.path(), internal::CfName(internal::kHistory)), versions);
    if (::testing::Test::HasFailure()) break;
  }
}

// A deleted entity whose delete has left the window, but whose state is kept
// (the delete was committed inside the window), is written again: the expired
// tombstone version that retention dropped must not come back as the new
// version's predecessor, nor its entity_seq entry.
TEST(SnapshotTest, ExpiredTombstoneIsNotRevivedByALaterEvent) {
  constexpr uint64_t kMaxAge = 100 * kStep;
  TempDir dir;
  std::atomic<uint64_t> now{kT0};
  Options options{.retention = {.max_age = absl::Microseconds(kMaxAge)},
                  .retention_interval = absl::Hours(24),  // only CompactNow
                  .now_micros = [&now] { return now.load(); }};
  auto opened = Store::Open(dir.path(), options);
  ASSERT_TRUE(opened.ok()) << opened.status();
  Store& store = **opened;
  auto ingest = [&](uint64_t at, Op op, std::string payload) {
    auto r = store.Ingest({Event{.source = "s",
                                 .collection = "acct",
                                 .key = "1",
                                 .position = {kT0 + at * kStep, 0},
                                 .op = op,
                                 .payload = std::move(payload)}},
                          {});
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(r->applied, 1u);
  };
  ingest(1, Op::kUpsert, R"({"v":1})");
  now = kT0 + 10 * kStep;  // committed after the cutoff below, positioned before it
  ingest(2, Op::kDelete, "");
  const uint64_t cutoff = kT0 + 5 * kStep;
  now = cutoff + kMaxAge;
  ASSERT_TRUE(store.CompactNow().ok());
  ASSERT_EQ(store.Stats().oldest_position.timestamp, cutoff);
  auto before = store.History("acct", "1", {});
  ASSERT_TRUE(before.ok()) << before.status();
  EXPECT_TRUE(before->empty()) << "both versions lie before the window";

  ingest(200, Op::kUpsert, R"({"v":2})");
  ASSERT_TRUE(store.CompactNow().ok());
  auto after = store.History("acct", "1", {});
  ASSERT_TRUE(after.ok()) << after.status();
  ASSERT_EQ(after->size(), 1u);
  EXPECT_EQ((*after)[0].position.timestamp, kT0 + 200 * kStep);
  EXPECT_EQ((*after)[0].after, R"({"v":2})");
  auto current = store.Get("acct", "1");
  ASSERT_TRUE(current.ok()) << current.status();
  EXPECT_EQ(current->document, R"({"v":2})");
  opened->reset();
  // On disk: only the new version; of entity_seq, the delete (seq 2, inside
  // the window by its commit) and the new upsert.
  EXPECT_EQ(CountEntries(dir.path(), internal::CfName(internal::kHistory)), 1u);
  EXPECT_EQ(CountEntries(dir.path(), internal::CfName(internal::kEntitySeq)), 2u);
}

// A scan as of a seq keeps reading what it started on while retention moves
// on: the change records that hold superseded entries' documents may be
// compacted away meanwhile (compaction filters ignore snapshots), and the
// cursor must still find them.
TEST(SnapshotTest, AScanAsOfASeqOutlivesTheHorizonMovingPastIt) {
  TempDir dir;
  auto store = Store::Open(dir.path(), Options{.retention = {.max_commits = 50}});
  ASSERT_TRUE(store.ok()) << store.status();
  auto up = [](int key, uint64_t at) {
    return Event{.source = "s",
                 .collection = "acct",
                 .key = absl::StrCat(key),
                 .position = {kT0 + at * kStep, 0},
                 .payload = absl::StrCat(R"({"at":)", at, "}")};
  };
  uint64_t at = 0;
  for (int round = 0; round < 2; ++round) {
    for (int k = 0; k < 40; ++k) ASSERT_TRUE((*store)->Ingest({up(k, ++at)}, {}).ok());
  }
  ASSERT_TRUE((*store)->CompactNow().ok());
  // As of seq 60, each entity's entry there is superseded by its change in
  // round 2 (seqs 41-80) or current: every superseded one needs a change.
  auto cursor = (*store)->NewSnapshot({.as_of_seq = 60, .collection = "acct"});
  ASSERT_TRUE(cursor.ok()) << cursor.status();
  for (int k = 0; k < 200; ++k) ASSERT_TRUE((*store)->Ingest({up(k % 40, ++at)}, {}).ok());
  ASSERT_TRUE((*store)->CompactNow().ok());  // the horizon passes 60; changes 41-80 go
  size_t n = 0;
  while (true) {
    auto more = (*cursor)->Next();
    ASSERT_TRUE(more.ok()) << more.status();
    if (!*more) break;
    ++n;
  }
  EXPECT_EQ(n, 40u);
}

// History and entity_seq are keyed newest first (format 5), so retention
// meets a record's successor before the record and needs no link: an
// in-order event writes nothing into its live predecessor version or the
// previous entity_seq entry. Only a tombstone -- which retention drops when
// it sees no successor -- gets its successor as a link, a merge operand;
// read back, the link is set and nothing else of the record changed.
TEST(SnapshotTest, OnlyATombstoneGetsALinkToItsSuccessor) {
  TempDir dir;
  auto ev = [](uint64_t at, Op op, std::string payload) {
    return Event{.source = "s",
                 .collection = "acct",
                 .key = "1",
                 .position = {kT0 + at * kStep, 0},
                 .op = op,
                 .payload = std::move(payload)};
  };
  {
    auto store = Store::Open(dir.path(), {});
    ASSERT_TRUE(store.ok()) << store.status();
    for (const Event& e : {ev(1, Op::kUpsert, R"({"v":1})"), ev(2, Op::kUpsert, R"({"v":2})"),
                           ev(3, Op::kDelete, ""), ev(4, Op::kUpsert, R"({"v":4})")}) {
      ASSERT_TRUE((*store)->Ingest({e}, {}).ok());
    }
  }
  const std::string entity = keys::EntityPrefix("acct", *keys::EncodeKey("1"));
  WithRawDb(dir.path(), /*writable=*/false, [&](rocksdb::DB* db, auto& cf) {
    rocksdb::ColumnFamilyHandle* history = cf[internal::CfName(internal::kHistory)];
    rocksdb::ColumnFamilyHandle* entity_seq = cf[internal::CfName(internal::kEntitySeq)];
    auto operands = [&](rocksdb::ColumnFamilyHandle* h, const std::string& key) {
      rocksdb::PinnableSlice values[4];
      int n = 0;
      rocksdb::GetMergeOperandsOptions opts;
      opts.expected_max_number_of_operands = 4;
      EXPECT_TRUE(db->GetMergeOperands({}, h, key, values, &opts, &n).ok());
      return n;
    };
    // The live predecessor: its version only, no link.
    const std::string live = keys::HistoryKey(entity, {kT0 + kStep, 0}, "s");
    EXPECT_EQ(operands(history, live), 1);
    std::string v;
    ASSERT_TRUE(db->Get({}, history, live, &v).ok());
    auto pred = records::DecodeVersion(v);
    ASSERT_TRUE(pred.ok()) << pred.status();
    EXPECT_EQ(pred->next_timestamp, records::kNone);
    EXPECT_EQ(pred->after, R"({"v":1})");
    EXPECT_EQ(operands(entity_seq, keys::EntitySeqKey(entity, 1)), 1);
    ASSERT_TRUE(db->Get({}, entity_seq, keys::EntitySeqKey(entity, 1), &v).ok());
    auto prev = records::DecodeEntitySeq(v);
    ASSERT_TRUE(prev.ok()) << prev.status();
    EXPECT_EQ(prev->superseded_seq, records::kNone);
    // Its document is the before-image of change 2, not a copy.
    EXPECT_TRUE(prev->by_reference && prev->exists);
    EXPECT_FALSE(prev->doc.has_value());
    EXPECT_EQ(prev->position.timestamp, kT0 + kStep);

    // The tombstone (the delete at 3) and its entry (seq 3): linked to the
    // upsert at 4 (seq 4).
    const std::string tombstone = keys::HistoryKey(entity, {kT0 + 3 * kStep, 0}, "s");
    EXPECT_EQ(operands(history, tombstone), 2);  // the version, and its link
    ASSERT_TRUE(db->Get({}, history, tombstone, &v).ok());
    auto t = records::DecodeVersion(v);
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_EQ(t->next_timestamp, kT0 + 4 * kStep);
    EXPECT_FALSE(t->after.has_value());
    EXPECT_EQ(t->seq, 3u);
    EXPECT_EQ(operands(entity_seq, keys::EntitySeqKey(entity, 3)), 2);
    ASSERT_TRUE(db->Get({}, entity_seq, keys::EntitySeqKey(entity, 3), &v).ok());
    auto deleted = records::DecodeEntitySeq(v);
    ASSERT_TRUE(deleted.ok()) << deleted.status();
    EXPECT_EQ(deleted->superseded_seq, 4u);
    EXPECT_TRUE(deleted->deleted());

    // Newest first: the entity's first history key is its newest version.
    std::unique_ptr<rocksdb::Iterator> it(db->NewIterator({}, history));
    it->Seek(entity);
    ASSERT_TRUE(it->Valid());
    EXPECT_EQ(it->key().ToString(), keys::HistoryKey(entity, {kT0 + 4 * kStep, 0}, "s"));
  });
}

}  // namespace
}  // namespace cairn
