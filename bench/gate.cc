// cairn_gate: the deterministic workload of the instruction-count gate.
//
//   valgrind --tool=callgrind --instr-atstart=no cairn_gate ingest|snapshot DIR
//
// Instruments only the measured region (callgrind client requests; outside
// valgrind they do nothing) so that opening the store and generating events
// are not counted. ingest: 4,000 upserts of ~200-byte documents over 1,000
// entities in batches of 100, non-durable. snapshot: the same store, then
// one snapshot of its 1,000 entities. tests/bench/gate.py divides the
// instruction count by events or entities and compares it with
// bench/baseline.json. Wall time is noisy on shared machines; instruction
// counts are not.

#include <valgrind/callgrind.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "cairn/store.h"

namespace {

constexpr int kEntities = 1000;
constexpr int kEvents = 4000;
constexpr int kBatch = 100;

std::vector<cairn::Event> Batch(int first) {
  std::vector<cairn::Event> out;
  for (int i = first; i < first + kBatch; ++i) {
    int entity = (i * 7919) % kEntities;  // a fixed permutation: no RNG
    char key[40], doc[320];
    snprintf(key, sizeof key, "\"k%023d\"", entity);
    int n = snprintf(doc, sizeof doc,
                     "{\"id\":%s,\"version\":%d,\"name\":\"customer-%08d\",\"status\":\"active\","
                     "\"balance\":%d,\"city\":\"Trondheim\",\"tags\":[\"a\",\"b\"],\"note\":\"",
                     key, i, entity, (entity * 31 + i) % 100000);
    std::string d(doc, n);
    d.append(196 > d.size() ? 196 - d.size() : 0, 'x');
    d += "\"}";
    cairn::Event e;
    e.source = "gate";
    e.collection = "bench";
    e.key = key;
    e.position = {1'600'000'000'000'000ull + static_cast<uint64_t>(i), 0};
    e.payload = std::move(d);
    out.push_back(std::move(e));
  }
  return out;
}

int Fail(const std::string& what) {
  std::cerr << "cairn_gate: " << what << "\n";
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3 || (strcmp(argv[1], "ingest") != 0 && strcmp(argv[1], "snapshot") != 0)) {
    std::cerr << "usage: cairn_gate ingest|snapshot DIR\n";
    return 2;
  }
  const bool ingest = strcmp(argv[1], "ingest") == 0;
  std::filesystem::remove_all(argv[2]);
  auto store = cairn::Store::Open(argv[2], {});
  if (!store.ok()) return Fail(store.status().ToString());
  std::vector<std::vector<cairn::Event>> batches;
  for (int i = 0; i < kEvents; i += kBatch) batches.push_back(Batch(i));

  if (ingest) CALLGRIND_START_INSTRUMENTATION;
  for (auto& b : batches) {
    auto r = (*store)->Ingest(std::move(b), {});
    if (!r.ok()) return Fail(r.status().ToString());
  }
  if (ingest) CALLGRIND_STOP_INSTRUMENTATION;

  uint64_t rows = 0;
  if (!ingest) CALLGRIND_START_INSTRUMENTATION;
  auto s = (*store)->Snapshot({}, [&](const cairn::Entity&) {
    ++rows;
    return true;
  });
  if (!ingest) CALLGRIND_STOP_INSTRUMENTATION;
  if (!s.ok()) return Fail(s.ToString());
  if (rows != kEntities) return Fail("snapshot returned " + std::to_string(rows) + " entities");
  printf("{\"events\":%d,\"entities\":%d}\n", kEvents, kEntities);
  store->reset();
  std::filesystem::remove_all(argv[2]);
  return 0;
}
