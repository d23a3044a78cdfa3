// M1 (issue 12): the decode -> dedup -> apply path driven by a seeded
// generator against the reference model (model.h), seed after seed.
//
// Each seed draws 1,000 events over a handful of entities in two collections
// from three sources: mostly in order, one in eight late (up to 40 steps
// back, so late events re-fold later versions), upserts, snapshot upserts,
// merge patches and deletes, exact re-sends spelled differently (key field
// order, whitespace) and conflicting re-sends. They are written as the
// `canonical` format's JSON lines, decoded by formats::Decode and ingested in
// batches of 1-40 events of one source. Checked against the model:
//  * every event's outcome (applied, duplicate, conflict) and every batch's
//    seq range;
//  * every 250 events and at the end: each entity's Get and History (op,
//    position, source, before, after, complete, snapshot), the snapshot now,
//    as of a random past seq and as of a random past position, and the last
//    seq.
// A failure names the seed; CAIRN_MODEL_SEED=<n> runs that one alone.
//
// The seeds run in ctest shards (ModelTest/Shard.*); CAIRN_MODEL_SEEDS sets
// how many in all (default 10,000; `make test` runs the default). Stores
// live in RocksDB's in-memory environment: the test is about the fold, not
// the disk.
#include "model.h"

#include <stdlib.h>

#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cairn/formats.h"
#include "cairn/store.h"
#include "gtest/gtest.h"
#include "rocksdb/env.h"

namespace cairn {
namespace {

using model::EntityId;
using model::Json;
using model::kCollections;
using model::Model;
using model::ModelEvent;

constexpr uint64_t kT0 = 1700000000000000;
constexpr int kEvents = 1000;
constexpr int kCheckEvery = 250;
constexpr int kShards = 8;
const char* const kSources[] = {"alpha", "beta", "gamma"};

uint64_t SeedCount() {
  const char* n = getenv("CAIRN_MODEL_SEEDS");
  return n ? strtoull(n, nullptr, 10) : 10000;
}

// Everything the store answers about the model's entities, as text: Get,
// History, and snapshots now, as of `seq` and as of `pos`.
std::string Observe(Store& store, const std::vector<EntityId>& ids, uint64_t seq, Position pos) {
  std::string out;
  for (const EntityId& id : ids) {
    auto e = store.Get(id.collection, id.canonical_key());
    out += e.ok() ? "get " + model::EntityLine(*e, true)
                  : absl::StrCat("get ", id.collection, " ", id.canonical_key(), ": ",
                                 absl::IsNotFound(e.status()) ? "absent" : e.status().ToString(),
                                 "\n");
    auto h = store.History(id.collection, id.canonical_key(), {});
    if (!h.ok()) {
      out += "history: " + h.status().ToString() + "\n";
      continue;
    }
    for (const Version& v : *h) out += model::VersionLine(v);
  }
  out += "now\n" + model::SnapshotText(store, {}, true);
  out +=
      absl::StrCat("as of seq ", seq, "\n") + model::SnapshotText(store, {.as_of_seq = seq}, false);
  out += "as of " + model::PositionText(pos) + "\n" +
         model::SnapshotText(store, {.as_of_position = pos}, false);
  return out;
}

// What the model says the same queries answer.
std::string Expect(const Model& m, const std::vector<EntityId>& ids, uint64_t seq, Position pos) {
  std::string out;
  std::string now, at_seq, at_pos;
  for (const EntityId& id : ids) {
    std::vector<model::ModelVersion> versions;
    model::ModelState s = m.Fold(id, std::nullopt, &versions);
    out += s.doc ? "get " + model::EntityLine(id, s, true)
                 : absl::StrCat("get ", id.collection, " ", id.canonical_key(), ": absent\n");
    for (const model::ModelVersion& v : versions) out += model::VersionLine(v);
    if (s.doc) now += model::EntityLine(id, s, true);
    model::ModelState q = m.AtSeq(id, seq);
    if (q.doc) at_seq += model::EntityLine(id, q, false);
    model::ModelState p = m.Fold(id, pos, nullptr);
    if (p.doc) at_pos += model::EntityLine(id, p, false);
  }
  return out + "now\n" + now + absl::StrCat("as of seq ", seq, "\n") + at_seq + "as of " +
         model::PositionText(pos) + "\n" + at_pos;
}

// One seed: false (with gtest failures naming it) when the store and the
// model disagree.
bool RunSeed(uint32_t seed, rocksdb::Env* env) {
  SCOPED_TRACE(absl::StrCat("seed ", seed, " (CAIRN_MODEL_SEED=", seed, " reruns it alone)"));
  std::mt19937 rng(seed);
  const std::string path = absl::StrCat("/model-", seed);
  Options options;
  options.env = env;
  options.memory_budget = 0;
  auto opened = Store::Open(path, options);
  EXPECT_TRUE(opened.ok()) << opened.status();
  if (!opened.ok()) return false;
  Store& store = **opened;
  std::map<std::string, SourceDefinition> sources;
  for (const char* s : kSources) {
    sources[s] = SourceDefinition{.name = s, .format = "canonical"};
    EXPECT_TRUE(store.PutSource(sources[s]).ok());
  }

  std::vector<EntityId> ids;
  for (const char* c : kCollections) {
    for (size_t k = 0; k < model::Keys().size(); ++k) {
      if (rng() % 3 == 0) ids.push_back({c, k});
    }
  }
  if (ids.empty()) ids.push_back({kCollections[0], 0});
  std::sort(ids.begin(), ids.end());

  Model m;
  std::vector<ModelEvent> sent;  // every identity sent, for re-sends
  uint64_t step = 1;             // positions advance by one step an event
  int done = 0;
  int next_check = kCheckEvery;
  while (done < kEvents) {
    const std::string source = kSources[rng() % 3];
    const int n = std::min<int>(1 + static_cast<int>(rng() % 40), kEvents - done);
    std::vector<ModelEvent> batch;
    for (int i = 0; i < n; ++i) {
      ModelEvent e;
      uint32_t kind = rng() % 100;
      std::vector<size_t> mine;
      if (kind < 12) {
        for (size_t j = 0; j < sent.size(); ++j) {
          if (sent[j].source == source) mine.push_back(j);
        }
      }
      if (!mine.empty()) {
        e = sent[mine[rng() % mine.size()]];
        if (kind < 8) {
          // The same event spelled another way: a duplicate.
          e.spelling = rng();
          e.spaced = !e.spaced;
        } else {
          // Same identity, other content: a conflict.
          e.op = Op::kUpsert;
          e.payload = model::RandomDocument(rng);
          e.payload.Set("conflict", Json::Number(std::to_string(rng() % 1000)));
        }
      } else {
        e.source = source;
        e.entity = ids[rng() % ids.size()];
        uint64_t at = ++step;
        if (rng() % 8 == 0) at -= std::min<uint64_t>(at - 1, 1 + rng() % 40);  // late
        e.position = {kT0 + at * 1000, rng() % 2};
        e.Randomize(rng, /*patch_below=*/14);
      }
      batch.push_back(std::move(e));
    }
    std::string payload;
    for (const ModelEvent& e : batch) payload += model::CanonicalLine(e, rng) + "\n";
    auto decoded = formats::Decode(sources[source], payload);
    EXPECT_TRUE(decoded.ok()) << decoded.status() << "\n" << payload;
    if (!decoded.ok()) return false;
    auto r = store.Ingest(*std::move(decoded), {});
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok()) return false;

    const uint64_t seq_before = m.last_seq();
    for (size_t i = 0; i < batch.size(); ++i) {
      Outcome want = m.Add(batch[i]);
      EXPECT_EQ(r->outcomes[i], want)
          << "event " << done + static_cast<int>(i) << ": " << model::CanonicalLine(batch[i], rng);
      if (want == Outcome::kApplied) sent.push_back(batch[i]);
    }
    if (m.last_seq() > seq_before) {
      EXPECT_EQ(r->first_seq, seq_before + 1);
      EXPECT_EQ(r->last_seq, m.last_seq());
    }
    done += n;
    if (::testing::Test::HasFailure()) return false;

    if (done >= next_check) {
      next_check += kCheckEvery;
      EXPECT_EQ(store.LastSeq(), m.last_seq());
      const uint64_t seq = rng() % (m.last_seq() + 1);
      const Position pos{kT0 + (rng() % (step + 2)) * 1000, rng() % 2};
      EXPECT_EQ(Observe(store, ids, seq, pos), Expect(m, ids, seq, pos))
          << "after " << done << " events";
      if (::testing::Test::HasFailure()) return false;
    }
  }
  opened->reset();
  return true;
}

class ModelTest : public ::testing::TestWithParam<int> {};

TEST_P(ModelTest, Shard) {
  std::unique_ptr<rocksdb::Env> env(rocksdb::NewMemEnv(rocksdb::Env::Default()));
  if (const char* one = getenv("CAIRN_MODEL_SEED")) {
    if (GetParam() == 0) RunSeed(static_cast<uint32_t>(strtoul(one, nullptr, 10)), env.get());
    return;
  }
  const uint64_t seeds = SeedCount();
  uint64_t ran = 0;
  for (uint64_t seed = static_cast<uint64_t>(GetParam()); seed < seeds; seed += kShards) {
    // A fresh environment every so often, so that the dropped stores' files
    // do not pile up in memory.
    if (ran % 100 == 99) env.reset(rocksdb::NewMemEnv(rocksdb::Env::Default()));
    if (!RunSeed(static_cast<uint32_t>(seed), env.get())) return;
    ++ran;
  }
  std::cerr << "shard " << GetParam() << ": " << ran << " seeds x " << kEvents
            << " events agree with the model\n";
}

INSTANTIATE_TEST_SUITE_P(Seeds, ModelTest, ::testing::Range(0, kShards));

}  // namespace
}  // namespace cairn
