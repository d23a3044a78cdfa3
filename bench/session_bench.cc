// Sessions at scale: a replace session of N records, and an atomic session
// of N events (what `cairn ingest --atomic` uses), staged in chunks and
// committed, reporting throughput and peak RSS (VmHWM) before and during the
// commit. The commit folds the session in bounded chunks spilled to SST
// files, so its peak memory must not grow with N.
#include <benchmark/benchmark.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "cairn/store.h"

namespace {

// Peak and current resident set size in MiB, from /proc/self/status.
double ProcStatusMiB(const char* field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field, 0) == 0) return std::stod(line.substr(std::string(field).size())) / 1024;
  }
  return 0;
}

// Resets the peak so each phase measures its own (Linux: write 5 to clear_refs).
void ResetPeak() { std::ofstream("/proc/self/clear_refs") << "5"; }

// Commits session `id` of `records` records, each producing one change.
void MeasureCommit(benchmark::State& state, cairn::Store& store, const std::string& id,
                   int64_t records) {
  double rss_before = ProcStatusMiB("VmRSS:");
  ResetPeak();
  auto start = std::chrono::steady_clock::now();
  auto r = store.CloseSession(id, true);
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (!r.ok() || r->last_seq - r->first_seq + 1 != static_cast<uint64_t>(records)) {
    state.SkipWithError("commit failed");
  }
  state.counters["commit_s"] = seconds;
  state.counters["commit_records_per_s"] = records / seconds;
  state.counters["rss_before_commit_MiB"] = rss_before;
  state.counters["peak_rss_during_commit_MiB"] = ProcStatusMiB("VmHWM:");
}

void BM_ReplaceSession(benchmark::State& state) {
  const int64_t records = state.range(0);
  const std::string filler(100, 'x');
  for (auto _ : state) {
    char tmpl[] = "/tmp/cairn-session-bench-XXXXXX";
    std::string dir = mkdtemp(tmpl);
    // A small block cache and no budget (the layout the README figures were
    // measured with), so what the commit itself holds is what shows.
    auto store = cairn::Store::Open(dir, {.memory_budget = 0, .block_cache_bytes = 32 << 20});
    if (!store.ok() || !(*store)->PutSource({.name = "contrib", .format = "bitbroker"}).ok()) {
      state.SkipWithError("open failed");
      return;
    }
    auto id = (*store)->OpenSession("contrib", "things", cairn::SessionMode::kReplace);
    for (int64_t chunk = 0; chunk < records; chunk += 10000) {
      std::vector<cairn::SessionRecord> batch;
      for (int64_t i = chunk; i < std::min(records, chunk + 10000); ++i) {
        batch.push_back({.key = "\"T" + std::to_string(i) + "\"",
                         .document = R"({"id":)" + std::to_string(i) + R"(,"name":"thing","f":")" +
                                     filler + "\"}"});
      }
      if (!(*store)->SessionUpsert(*id, std::move(batch)).ok()) state.SkipWithError("upsert");
    }
    MeasureCommit(state, **store, *id, records);
    store->reset();
    std::filesystem::remove_all(dir);
  }
}
BENCHMARK(BM_ReplaceSession)
    ->ArgName("records")
    ->Arg(100000)
    ->Arg(1000000)
    ->Iterations(1)
    ->Unit(benchmark::kSecond)
    ->UseRealTime();

// An atomic session of N canonical upserts of distinct entities, posted in
// position order with the keys in no order (as a CDC file is), so the commit's
// walk (entity order) and its log (source, position order) disagree and the
// log is sorted through the staging family.
void BM_AtomicSession(benchmark::State& state) {
  const int64_t events = state.range(0);
  const std::string filler(100, 'x');
  for (auto _ : state) {
    char tmpl[] = "/tmp/cairn-session-bench-XXXXXX";
    std::string dir = mkdtemp(tmpl);
    auto store = cairn::Store::Open(dir, {.memory_budget = 0, .block_cache_bytes = 32 << 20});
    if (!store.ok() || !(*store)->PutSource({.name = "feed", .format = "canonical"}).ok()) {
      state.SkipWithError("open failed");
      return;
    }
    auto id = (*store)->OpenSession("feed", "", cairn::SessionMode::kAtomic);
    for (int64_t chunk = 0; chunk < events; chunk += 10000) {
      std::vector<cairn::Event> batch;
      for (int64_t i = chunk; i < std::min(events, chunk + 10000); ++i) {
        // A multiplicative permutation of [0, events): keys in no order.
        uint64_t key = (static_cast<uint64_t>(i) * 2654435761u) % static_cast<uint64_t>(events);
        batch.push_back({.source = "feed",
                         .collection = "things",
                         .key = "\"T" + std::to_string(key) + "\"",
                         .position = {1700000000000000 + static_cast<uint64_t>(i), 0},
                         .payload = R"({"id":)" + std::to_string(key) + R"(,"name":"thing","f":")" +
                                    filler + "\"}"});
      }
      if (!(*store)->SessionIngest(*id, std::move(batch)).ok()) state.SkipWithError("post");
    }
    MeasureCommit(state, **store, *id, events);
    store->reset();
    std::filesystem::remove_all(dir);
  }
}
BENCHMARK(BM_AtomicSession)
    ->ArgName("events")
    ->Arg(100000)
    ->Arg(1000000)
    ->Iterations(1)
    ->Unit(benchmark::kSecond)
    ->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
