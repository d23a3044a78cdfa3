// What the crash tests share (crash_test.cc: SIGKILL; power_loss_test.cc:
// unsynced writes dropped): a sequence of batches that is a function of the
// batch number alone, and the check that a reopened store holds a whole
// prefix of it and exactly its fold.
#ifndef CAIRN_TESTS_ENGINE_CRASH_CHECK_H_
#define CAIRN_TESTS_ENGINE_CRASH_CHECK_H_

#include <sys/types.h>

#include <algorithm>
#include <map>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cairn/store.h"
#include "gtest/gtest.h"
#include "model.h"

namespace cairn::crash_check {

using model::EntityId;
using model::Json;
using model::ModelEvent;

constexpr uint64_t kT0 = 1700000000000000;
constexpr size_t kBatchEvents = 6;  // K: events per batch, distinct entities

// Batch `b`: K events on K distinct entities, at positions (kT0 + b, i), each
// carrying the batch id. A function of `b` alone, so the parent can rebuild
// every batch the child may have written.
inline std::vector<ModelEvent> MakeBatch(uint64_t b) {
  std::mt19937 rng(static_cast<uint32_t>(b * 7919 + 1));
  std::vector<EntityId> pool = model::AllEntities();
  std::shuffle(pool.begin(), pool.end(), rng);
  std::vector<ModelEvent> out;
  for (size_t i = 0; i < kBatchEvents; ++i) {
    ModelEvent e;
    e.source = "crash";
    e.entity = pool[i];
    e.position = {kT0 + b, i};
    uint32_t r = rng() % 10;
    if (r < 5) {
      e.op = Op::kUpsert;
      e.payload = Json::Object()
                      .Set("batch", Json::Number(std::to_string(b)))
                      .Set("i", Json::Number(std::to_string(i)))
                      .Set("pad", Json::String(std::string(64 + rng() % 64, 'p')));
    } else if (r < 9) {
      e.op = Op::kPatch;
      Json nested = Json::Object().Set("by", Json::Number(std::to_string(b)));
      e.payload = Json::Object().Set("batch", Json::Number(std::to_string(b))).Set("n", nested);
    } else {
      e.op = Op::kDelete;
    }
    e.spelling = rng();
    out.push_back(std::move(e));
  }
  return out;
}

using model::AllEntities;

inline std::vector<Event> BatchEvents(uint64_t b) {
  std::vector<Event> out;
  for (const ModelEvent& e : MakeBatch(b)) out.push_back(e.ToEvent());
  return out;
}

// The store's current state of `id` is the model's `s`.
inline void ExpectCurrent(Store& store, const EntityId& id, const model::ModelState& s) {
  auto e = store.Get(id.collection, id.canonical_key());
  if (s.doc) {
    EXPECT_TRUE(e.ok()) << e.status();
    if (e.ok()) {
      EXPECT_EQ(model::EntityLine(*e, true), model::EntityLine(id, s, true));
    }
  } else {
    EXPECT_EQ(e.status().code(), absl::StatusCode::kNotFound) << e.status();
  }
}

// Reopens the store and checks that it holds batches 0..n-1 whole and
// nothing else, that its state, history, seqs and counters are exactly their
// fold, and that the newest one is in the log (sent again, it is all
// duplicates). Returns n. What was acknowledged is the caller's to check.
// `seq_after`, when given, gets the last seq after each of the n batches.
inline uint64_t VerifyWholeBatches(const std::string& store_path,
                                   std::vector<uint64_t>* seq_after = nullptr) {
  auto store = Store::Open(store_path, Options{});
  EXPECT_TRUE(store.ok()) << store.status();
  if (!store.ok()) return 0;

  // Which events are visible, by batch (the position's timestamp).
  std::map<uint64_t, std::set<std::pair<EntityId, uint64_t>>> seen;
  std::map<EntityId, std::vector<Version>> histories;
  for (const EntityId& id : AllEntities()) {
    auto h = (*store)->History(id.collection, id.canonical_key(), {});
    EXPECT_TRUE(h.ok()) << h.status();
    if (!h.ok()) return 0;
    for (const Version& v : *h) {
      EXPECT_GE(v.position.timestamp, kT0);
      seen[v.position.timestamp - kT0].insert({id, v.position.tick});
    }
    histories[id] = *h;
  }
  uint64_t present = seen.empty() ? 0 : seen.rbegin()->first + 1;
  for (uint64_t b = 0; b < present; ++b) {
    SCOPED_TRACE(absl::StrCat("batch ", b));
    // All of the batch or nothing -- and batches are sequential in the child,
    // so every batch before the newest one present must be there in full.
    std::set<std::pair<EntityId, uint64_t>> want;
    for (const ModelEvent& e : MakeBatch(b)) want.insert({e.entity, e.position.tick});
    EXPECT_EQ(seen[b], want);
  }
  // State, history, seqs and counters are the fold of exactly those batches.
  model::Model m;
  for (uint64_t b = 0; b < present; ++b) {
    for (const ModelEvent& e : MakeBatch(b)) EXPECT_EQ(m.Add(e), Outcome::kApplied);
    if (seq_after) seq_after->push_back(m.last_seq());
  }
  for (const EntityId& id : AllEntities()) {
    SCOPED_TRACE(absl::StrCat(id.collection, " ", id.canonical_key()));
    std::vector<model::ModelVersion> versions;
    model::ModelState s = m.Fold(id, std::nullopt, &versions);
    std::string want, got;
    for (const auto& v : versions) want += model::VersionLine(v);
    for (const Version& v : histories[id]) got += model::VersionLine(v);
    EXPECT_EQ(got, want);
    ExpectCurrent(**store, id, s);
  }
  EXPECT_EQ((*store)->LastSeq(), m.last_seq());
  StoreStats stats = (*store)->Stats();
  EXPECT_EQ(stats.last_seq, m.last_seq());
  EXPECT_EQ(stats.sources["crash"].accepted, present * kBatchEvents);
  // The log holds the newest batch whole too: re-sent, every event of it is
  // a duplicate and nothing changes. (The child checks that the next batch
  // is not in the log: it requires all of it to be applied.)
  if (present > 0) {
    std::vector<Event> again;
    for (const ModelEvent& e : MakeBatch(present - 1)) again.push_back(e.ToEvent());
    auto r = (*store)->Ingest(std::move(again), {});
    EXPECT_TRUE(r.ok()) << r.status();
    if (r.ok()) {
      EXPECT_EQ(r->duplicates, kBatchEvents);
    }
    EXPECT_EQ((*store)->LastSeq(), m.last_seq());
  }
  return present;
}

// Starts a child process (fork, then exec of engine_test) that does the work
// of `mode` (crash_test.cc: "ingest", "checkpoint", "retention", "session",
// "open") on the store at `store_path`, from batch or session `first` on,
// recording what was acknowledged in `acks_path`; with `crash_point` set
// (engine/src/crash_point.h: "<name>[:<skip>]") it kills itself there.
pid_t StartChild(const std::string& mode, const std::string& store_path,
                 const std::string& acks_path, uint64_t first, const std::string& crash_point);

}  // namespace cairn::crash_check

#endif  // CAIRN_TESTS_ENGINE_CRASH_CHECK_H_
