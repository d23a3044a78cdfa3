// R1, the black-box crash test: producers ingest through gRPC while the
// harness SIGKILLs cairnd at random times, restarts it and checks the store
// it finds against what the producers were told.
//
// Each producer p sends its own sequence of batches (1 to 500 events, half
// of them durable), batch b being a function of (seed, p, b) alone: source
// "p<p>", positions (kT0 + b, i), on a small pool of hot entities shared by
// every producer, so concurrent producers re-fold each other's late events.
// A producer remembers the first batch not yet acknowledged; after a kill
// it sends that batch again (at-least-once: landed, it comes back as
// duplicates). After every restart, with the producers stopped, the harness
// reads the store through the client library only and counts:
//
//   lost       events of an acknowledged batch that are not in the store
//   partial    batches present in part (stored or acknowledged)
//   phantom    events of batches that were never sent
//   seq gaps   holes in the change feed's seqs, or a feed that ends
//              elsewhere than the store's last seq
//   state      entities whose history or state differ from a fold of
//              exactly the events present (the reference model)
//   chains     versions (history and feed) whose before is not the
//              previous after
//   errors     failed requests while cairnd was up
//
// Every count must be 0. Usage: crash_harness [--cycles N] [--producers P]
// [--seed S] [--cycles-per-store C] (ctest: 50 cycles; make crash-long:
// 1,000).
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "cairn/client.h"
#include "model.h"
#include "server_process.h"
#include "test_util.h"

namespace cairn::crash {
namespace {

using client::Client;
using client::ClientOptions;
using model::EntityId;
using model::ModelEvent;

constexpr uint64_t kT0 = 1700000000000000;

struct Flags {
  int cycles = 50;
  int producers = 3;
  uint64_t seed = 1;
  int cycles_per_store = 10;
  int max_run_ms = 1500;
  bool drop_wal = false;  // self-test: lose the WAL at each kill
};

struct Counts {
  uint64_t acked_batches = 0;
  uint64_t acked_events = 0;
  uint64_t resent_landed = 0;  // in-flight batches that had landed before the kill
  uint64_t versions_checked = 0;
  uint64_t changes_checked = 0;
  uint64_t lost = 0;
  uint64_t partial = 0;
  uint64_t phantom = 0;
  uint64_t seq_gaps = 0;
  uint64_t state = 0;
  uint64_t chains = 0;
  uint64_t errors = 0;
  // Batches already counted as lost or partial: (store, producer, batch),
  // so a batch is counted once however many verifications see it.
  std::set<std::tuple<int, int, uint64_t>> reported;

  uint64_t Failures() const {
    return lost + partial + phantom + seq_gaps + state + chains + errors;
  }
};

// Batch b of producer p.
std::vector<ModelEvent> MakeBatch(uint64_t seed, int p, uint64_t b) {
  std::seed_seq ss{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32),
                   static_cast<uint32_t>(p), static_cast<uint32_t>(b),
                   static_cast<uint32_t>(b >> 32)};
  std::mt19937 rng(ss);
  uint32_t r = rng() % 100;
  size_t n = r < 60 ? 1 + rng() % 20 : r < 90 ? 21 + rng() % 180 : 201 + rng() % 300;
  std::vector<ModelEvent> out(n);
  for (size_t i = 0; i < n; ++i) {
    ModelEvent& e = out[i];
    e.source = absl::StrCat("p", p);
    e.entity = {model::kCollections[rng() % 2], rng() % model::Keys().size()};
    e.position = {kT0 + b, i};
    e.Randomize(rng, 17);
  }
  return out;
}

bool Durable(uint64_t seed, int p, uint64_t b) { return ((seed + p + b) * 2654435761u >> 7) & 1; }

// What one producer knows: the first batch it has no acknowledgement for.
struct Producer {
  uint64_t next = 0;
};

absl::StatusOr<std::unique_ptr<Client>> Connect(int port, int attempts) {
  ClientOptions o;
  o.target = absl::StrCat("127.0.0.1:", port);
  o.max_attempts = attempts;
  o.call_timeout = absl::Seconds(30);
  return Client::Connect(o);
}

// Sends batches until cairnd goes away. Runs on its own thread.
void Produce(const Flags& flags, int port, int p, Producer* state, const std::atomic<bool>* killed,
             std::atomic<uint64_t>* errors, Counts* counts) {
  auto c = Connect(port, 1);
  if (!c.ok()) {
    std::fprintf(stderr, "p%d: connect: %s\n", p, c.status().ToString().c_str());
    errors->fetch_add(1);
    return;
  }
  while (true) {
    std::vector<ModelEvent> batch = MakeBatch(flags.seed, p, state->next);
    std::vector<Event> events;
    for (const ModelEvent& e : batch) events.push_back(e.ToEvent());
    std::vector<client::RecordError> record_errors;
    auto r = (*c)->Ingest(std::move(events), Durable(flags.seed, p, state->next), &record_errors);
    if (!r.ok()) {
      if (!killed->load()) {
        std::fprintf(stderr, "p%d batch %lu: %s\n", p, state->next, r.status().ToString().c_str());
        errors->fetch_add(1);
      }
      return;
    }
    // Acknowledged: all of it applied, or (a batch sent again after a kill
    // that it had survived) all of it a duplicate.
    uint64_t n = batch.size();
    if (r->duplicates == n && r->applied == 0) {
      ++counts->resent_landed;
    } else if (r->applied != n || r->duplicates != 0 || r->conflicts != 0) {
      std::fprintf(stderr, "p%d batch %lu: acknowledged %lu applied, %lu duplicates of %lu\n", p,
                   state->next, r->applied, r->duplicates, n);
      ++counts->partial;
    }
    ++counts->acked_batches;
    counts->acked_events += n;
    ++state->next;
  }
}

std::string Lines(const std::vector<Version>& vs) {
  std::string out;
  for (const Version& v : vs) out += model::VersionLine(v);
  return out;
}

// Reads the whole store through the client and counts what is wrong.
void Verify(const Flags& flags, int port, int store, const std::vector<Producer>& producers,
            Counts* counts) {
  auto c = Connect(port, 10);
  if (!c.ok()) {
    std::fprintf(stderr, "verify: connect: %s\n", c.status().ToString().c_str());
    ++counts->errors;
    return;
  }
  Client& client = **c;

  // Every version of every entity, and which batch each came from.
  std::map<EntityId, std::vector<Version>> histories;
  std::map<std::pair<int, uint64_t>, std::set<std::pair<EntityId, uint64_t>>> seen;
  for (const EntityId& id : model::AllEntities()) {
    auto h = client.History(id.collection, id.canonical_key(), {});
    if (!h.ok()) {
      std::fprintf(stderr, "verify: history: %s\n", h.status().ToString().c_str());
      ++counts->errors;
      return;
    }
    for (size_t i = 0; i < h->size(); ++i) {
      const Version& v = (*h)[i];
      const std::string& prev = i == 0 ? std::string() : (*h)[i - 1].after;
      if (v.before != prev) ++counts->chains;
      int p = -1;
      if (v.source.size() > 1 && v.source[0] == 'p') p = std::atoi(v.source.c_str() + 1);
      if (p < 0 || p >= flags.producers || v.position.timestamp < kT0) {
        ++counts->phantom;
        continue;
      }
      seen[{p, v.position.timestamp - kT0}].insert({id, v.position.tick});
    }
    counts->versions_checked += h->size();
    histories[id] = std::move(*h);
  }

  // Batch by batch: acknowledged ones whole, the one in flight whole or
  // absent, none after it; the model folds exactly what is present.
  model::Model m;
  for (int p = 0; p < flags.producers; ++p) {
    for (uint64_t b = 0; b <= producers[p].next; ++b) {
      std::vector<ModelEvent> batch = MakeBatch(flags.seed, p, b);
      std::set<std::pair<EntityId, uint64_t>> want;
      for (const ModelEvent& e : batch) want.insert({e.entity, e.position.tick});
      auto it = seen.find({p, b});
      std::set<std::pair<EntityId, uint64_t>> got;
      if (it != seen.end()) {
        got = std::move(it->second);
        seen.erase(it);
      }
      bool acked = b < producers[p].next;
      if (got != want && (acked || !got.empty()) && counts->reported.insert({store, p, b}).second) {
        size_t missing = 0;
        for (const auto& w : want) missing += !got.count(w);
        if (acked) counts->lost += missing;
        if (!got.empty()) ++counts->partial;
        std::fprintf(stderr, "p%d batch %lu (%s): %zu of %zu events present\n", p, b,
                     acked ? "acknowledged" : "in flight", got.size(), want.size());
      }
      if (got.empty()) continue;
      for (const ModelEvent& e : batch) m.Load(e);
    }
  }
  for (const auto& [batch, events] : seen) {
    std::fprintf(stderr, "p%d batch %lu: never sent, %zu events present\n", batch.first,
                 batch.second, events.size());
    counts->phantom += events.size();
  }

  // History and state are the fold of exactly those events.
  std::map<std::pair<std::string, std::string>, std::string> current;
  for (const EntityId& id : model::AllEntities()) {
    std::vector<model::ModelVersion> versions;
    model::ModelState s = m.Fold(id, std::nullopt, &versions);
    std::string want;
    for (const auto& v : versions) want += model::VersionLine(v);
    std::string got = Lines(histories[id]);
    auto e = client.Get(id.collection, id.canonical_key());
    std::string state_want = s.doc ? model::EntityLine(id, s, false) : "absent\n";
    std::string state_got = e.ok() ? model::EntityLine(*e, false)
                            : e.status().code() == absl::StatusCode::kNotFound
                                ? "absent\n"
                                : e.status().ToString();
    if (got != want || state_got != state_want) {
      ++counts->state;
      std::fprintf(stderr, "%s %s differs\n  history:\n%s  model:\n%s  state: %s  model: %s",
                   id.collection.c_str(), id.canonical_key().c_str(), got.c_str(), want.c_str(),
                   state_got.c_str(), state_want.c_str());
    }
    current[{id.collection, id.canonical_key()}] = e.ok() ? e->document : "";
  }

  // The change feed from the start: seqs 1, 2, ... up to the store's last
  // seq, each change's before the entity's previous after, ending at the
  // current state.
  auto stats = client.Stats();
  if (!stats.ok()) {
    ++counts->errors;
    return;
  }
  uint64_t last_seq = stats->store.last_seq;
  client::SubscribeStart start;
  start.kind = client::SubscribeStart::Kind::kFromSeq;
  start.from_seq = 0;
  auto sub = client.Subscribe({}, start);
  if (!sub.ok()) {
    std::fprintf(stderr, "verify: subscribe: %s\n", sub.status().ToString().c_str());
    ++counts->errors;
    return;
  }
  std::map<std::pair<std::string, std::string>, std::string> feed;
  uint64_t expect = 1;
  while (true) {
    SubscriptionItem item;
    auto got = (*sub)->Next(absl::Seconds(30), &item);
    if (!got.ok() || !*got) {
      std::fprintf(stderr, "verify: feed stopped at seq %lu: %s\n", expect,
                   got.ok() ? "timeout" : got.status().ToString().c_str());
      ++counts->errors;
      break;
    }
    if (item.kind == SubscriptionItem::Kind::kCaughtUp) {
      if (item.seq != last_seq || expect != last_seq + 1) {
        std::fprintf(stderr, "verify: feed caught up at %lu after seq %lu, last seq %lu\n",
                     item.seq, expect - 1, last_seq);
        ++counts->seq_gaps;
      }
      break;
    }
    if (item.kind != SubscriptionItem::Kind::kChange) continue;
    const Change& ch = item.change;
    if (ch.seq != expect) {
      std::fprintf(stderr, "verify: feed seq %lu where %lu was next\n", ch.seq, expect);
      ++counts->seq_gaps;
    }
    expect = ch.seq + 1;
    std::string& prev = feed[{ch.collection, ch.key}];
    if (ch.before != prev) ++counts->chains;
    prev = ch.after;
    ++counts->changes_checked;
  }
  (*sub)->Cancel();
  for (const auto& [id, doc] : current) {
    auto it = feed.find(id);
    if ((it == feed.end() ? std::string() : it->second) != doc) {
      std::fprintf(stderr, "verify: feed of %s %s ends elsewhere than its state\n",
                   id.first.c_str(), id.second.c_str());
      ++counts->state;
    }
  }
}

int Run(const Flags& flags) {
  std::mt19937_64 rng(flags.seed);
  TempDir dir;
  Counts counts;
  std::vector<Producer> producers(flags.producers);
  std::unique_ptr<e2e::ServerProcess> server;
  int store = 0;
  std::string data_dir;
  auto started = std::chrono::steady_clock::now();
  for (int cycle = 0; cycle < flags.cycles; ++cycle) {
    if (cycle % flags.cycles_per_store == 0) {
      // A fresh store now and then keeps each verification's reading short.
      server.reset();
      producers.assign(flags.producers, Producer{});
      data_dir = dir.Sub(absl::StrCat("store", ++store));
      server = std::make_unique<e2e::ServerProcess>(data_dir);
    }
    // Ingest for a while -- sometimes only just after the start -- then kill.
    std::atomic<bool> killed{false};
    std::atomic<uint64_t> errors{0};
    std::vector<Counts> per(flags.producers);
    std::vector<std::thread> threads;
    for (int p = 0; p < flags.producers; ++p) {
      threads.emplace_back(Produce, std::cref(flags), server->port(), p, &producers[p], &killed,
                           &errors, &per[p]);
    }
    int run_ms = rng() % 5 == 0 ? rng() % 50 : 50 + rng() % flags.max_run_ms;
    std::this_thread::sleep_for(std::chrono::milliseconds(run_ms));
    killed = true;
    server->Kill(SIGKILL);
    for (auto& t : threads) t.join();
    if (flags.drop_wal) {
      // What a store that acknowledged before its log was written would
      // lose: the harness must see it (ctest crash.black_box_detects_loss).
      for (const auto& f : std::filesystem::directory_iterator(data_dir)) {
        if (f.path().extension() == ".log") std::filesystem::remove(f.path());
      }
    }
    counts.errors += errors.load();
    for (const Counts& c : per) {
      counts.acked_batches += c.acked_batches;
      counts.acked_events += c.acked_events;
      counts.resent_landed += c.resent_landed;
      counts.partial += c.partial;
    }
    server->Start();
    uint64_t before = counts.Failures();
    Verify(flags, server->port(), store, producers, &counts);
    std::printf("cycle %d (store %d, ran %d ms): %lu batches / %lu events acknowledged so far%s\n",
                cycle, store, run_ms, counts.acked_batches, counts.acked_events,
                counts.Failures() > before ? "  FAILED" : "");
    std::fflush(stdout);
  }
  server.reset();
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  std::printf(
      "\n%d cycles in %.0f s (seed %lu, %d producers)\n"
      "  acknowledged: %lu batches, %lu events (%lu in-flight batches had landed)\n"
      "  checked: %lu versions, %lu changes\n"
      "  acknowledged events lost %lu, partial batches %lu, phantom events %lu, seq gaps %lu,\n"
      "  entities differing from a replay %lu, broken chains %lu, request errors %lu\n",
      flags.cycles, secs, flags.seed, flags.producers, counts.acked_batches, counts.acked_events,
      counts.resent_landed, counts.versions_checked, counts.changes_checked, counts.lost,
      counts.partial, counts.phantom, counts.seq_gaps, counts.state, counts.chains, counts.errors);
  if (counts.acked_events == 0) {
    std::printf("FAILED: nothing was acknowledged, nothing was tested\n");
    return 1;
  }
  std::printf(counts.Failures() == 0 ? "PASSED\n" : "FAILED\n");
  return counts.Failures() == 0 ? 0 : 1;
}

}  // namespace
}  // namespace cairn::crash

int main(int argc, char** argv) {
  cairn::crash::Flags flags;
  CLI::App app{"R1 black-box crash test: SIGKILL cairnd under gRPC ingest, verify"};
  app.add_option("--cycles", flags.cycles, "kill/restart cycles")->check(CLI::PositiveNumber);
  app.add_option("--producers", flags.producers, "concurrent producers")->check(CLI::Range(1, 16));
  app.add_option("--seed", flags.seed, "seed of batches and kill times");
  app.add_option("--cycles-per-store", flags.cycles_per_store, "cycles before a fresh store")
      ->check(CLI::PositiveNumber);
  app.add_option("--max-run-ms", flags.max_run_ms, "longest ingest before a kill")
      ->check(CLI::PositiveNumber);
  app.add_flag("--drop-wal", flags.drop_wal,
               "self-test: delete the store's WAL at each kill; the run must fail");
  CLI11_PARSE(app, argc, argv);
  return cairn::crash::Run(flags);
}
