// L1 for the embedded store: the soak's workload driven in-process, so that
// it can run under ThreadSanitizer (make soak-tsan), which cannot check a
// cairnd under load (README "Durability under faults": Debian's gRPC is not
// built with TSan). Every thread the engine has is busy at once: two
// producers at --rate events/s over --keys entities, --subscribers
// subscribers reading every change from the head, a snapshot a second,
// retention purging a --retention-seconds window (horizon every second), a
// compaction and a backup a minute.
//
// Checked: no call failed; each subscriber read changes in strictly
// increasing seq order, without a gap, up to the last commit; every backup
// was taken. A TSan report ends the process (halt_on_error) with exit 66.
//
// Usage: engine_soak [--minutes M] (ctest runs 15 seconds of it).
#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "cairn/store.h"
#include "test_util.h"
#include "workload.h"

namespace cairn::soak {
namespace {

uint64_t NowMicros() { return absl::ToUnixMicros(absl::Now()); }

int Run(const Workload& flags) {
  TempDir dir;
  Options options;
  options.retention.max_age = absl::Seconds(flags.retention_seconds);
  options.retention_interval = absl::Seconds(1);
  auto opened = Store::Open(dir.Sub("store"), options);
  if (!opened.ok()) {
    std::printf("FAILED: open: %s\n", std::string(opened.status().message()).c_str());
    return 1;
  }
  Store& store = **opened;
  const absl::Time end = absl::Now() + absl::Seconds(flags.minutes * 60);
  std::atomic<bool> done{false};
  std::atomic<uint64_t> failures{0}, sent{0}, snapshots{0}, backups{0}, compactions{0};
  std::vector<std::atomic<uint64_t>> read(flags.subscribers);
  auto fail = [&](const std::string& what, const absl::Status& s) {
    if (failures++ < 10) std::printf("%s: %s\n", what.c_str(), s.ToString().c_str());
  };
  std::vector<std::thread> threads;

  // Subscribers first, from the head: each must see every change after it.
  std::vector<std::unique_ptr<Subscription>> subs;
  for (int i = 0; i < flags.subscribers; ++i) {
    auto sub = store.Subscribe(SubscribeOptions{});
    if (!sub.ok()) {
      fail("subscribe", sub.status());
      return 1;
    }
    subs.push_back(std::move(*sub));
  }
  for (int i = 0; i < flags.subscribers; ++i) {
    threads.emplace_back([&, i] {
      uint64_t last = 0;
      SubscriptionItem item;
      while (true) {
        auto more = subs[i]->Next(absl::Milliseconds(100), &item);
        if (!more.ok()) {
          fail(absl::StrCat("subscriber ", i), more.status());
          return;
        }
        if (!*more) {
          if (done && last >= store.LastSeq()) return;
          continue;
        }
        if (item.kind != SubscriptionItem::Kind::kChange) continue;
        if (last != 0 && item.change.seq != last + 1) {
          fail(absl::StrCat("subscriber ", i),
               absl::InternalError(absl::StrCat("seq ", item.change.seq, " after ", last)));
          return;
        }
        last = item.change.seq;
        read[i]++;
      }
    });
  }

  // Producers: batches of 20 every 20 ms each (2 x 1,000/s at the default
  // rate), positions from the wall clock so that retention by age purges.
  const int producers = 2;
  const int batch = 20;
  const auto period = std::chrono::microseconds(1000000LL * batch * producers / flags.rate);
  for (int p = 0; p < producers; ++p) {
    threads.emplace_back([&, p] {
      std::mt19937 rng(p + 1);
      uint64_t tick = 0;
      auto next = std::chrono::steady_clock::now();
      while (absl::Now() < end) {
        std::vector<Event> events;
        for (int i = 0; i < batch; ++i) {
          const uint32_t k = rng() % static_cast<uint32_t>(flags.keys);
          Event e{.source = absl::StrCat("p", p),
                  .collection = k % 5 == 0 ? "orders" : "customers",
                  .key = std::to_string(k),
                  .position = {NowMicros(), tick++}};
          if (rng() % 4 == 0) {
            e.op = Op::kPatch;
            e.payload = absl::StrCat(R"({"seen":)", tick, "}");
          } else {
            e.payload = absl::StrCat(R"({"k":)", k, R"(,"p":)", p, R"(,"pad":")",
                                     std::string(100 + rng() % 100, 'x'), R"("})");
          }
          events.push_back(std::move(e));
        }
        auto r = store.Ingest(std::move(events), {});
        if (!r.ok()) fail("ingest", r.status());
        sent += batch;
        next += period;
        std::this_thread::sleep_until(next);
      }
    });
  }

  // Snapshots, one a second; a compaction and a backup a minute.
  threads.emplace_back([&] {
    while (absl::Now() < end) {
      uint64_t n = 0;
      absl::Status s = store.Snapshot({}, [&](const Entity&) {
        ++n;
        return true;
      });
      if (!s.ok()) fail("snapshot", s);
      snapshots++;
      absl::SleepFor(absl::Seconds(1));
    }
  });
  threads.emplace_back([&] {
    absl::Time next = absl::Now() + absl::Seconds(10);
    while (absl::Now() < end) {
      if (absl::Now() < next) {
        absl::SleepFor(absl::Milliseconds(100));
        continue;
      }
      next += absl::Minutes(1);
      if (absl::Status s = store.CompactNow(); !s.ok()) fail("compact", s);
      compactions++;
      auto b = store.Backup(dir.Sub("backups"));
      if (!b.ok()) fail("backup", b.status());
      backups++;
    }
  });

  while (absl::Now() < end) absl::SleepFor(absl::Milliseconds(200));
  // Producers and the periodic threads stop at `end`; subscribers once they
  // have read up to the last commit.
  done = true;
  for (auto& t : threads) t.join();

  const uint64_t last = store.LastSeq();
  uint64_t least = UINT64_MAX;
  for (auto& r : read) least = std::min<uint64_t>(least, r);
  std::printf(
      "engine soak: %.1f min, %lu events sent, last seq %lu, %d subscribers read at least %lu "
      "changes each, %lu snapshots, %lu compactions, %lu backups, oldest seq %lu\n",
      flags.minutes, static_cast<unsigned long>(sent.load()), static_cast<unsigned long>(last),
      flags.subscribers, static_cast<unsigned long>(least),
      static_cast<unsigned long>(snapshots.load()), static_cast<unsigned long>(compactions.load()),
      static_cast<unsigned long>(backups.load()),
      static_cast<unsigned long>(store.Stats().oldest_seq));
  if (failures != 0 || sent == 0 || least == 0) {
    std::printf("FAILED: %lu failed calls\n", static_cast<unsigned long>(failures.load()));
    return 1;
  }
  std::printf("PASSED\n");
  return 0;
}

}  // namespace
}  // namespace cairn::soak

int main(int argc, char** argv) {
  cairn::soak::Workload flags;
  CLI::App app{"L1 for the embedded store (in-process, for ThreadSanitizer)"};
  cairn::soak::AddWorkloadFlags(app, flags, /*min_subscribers=*/1);
  CLI11_PARSE(app, argc, argv);
  return cairn::soak::Run(flags);
}
