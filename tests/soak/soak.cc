// L1, the soak: a real cairnd under a steady load for a long time, measured
// from outside.
//
//   ingest     --rate events/s (default 2,000) in batches of 20 every 10 ms,
//              upserts and patches over --keys entities (default 100,000),
//              event time = now
//   subscribe  --subscribers subscriptions (default 8) from now on, each
//              reading every change
//   snapshot   one full snapshot per second
//   retention  --retention-seconds (default 60): the log, history and feed
//              older than that are purged while the soak runs
//
// Every 5 s it samples cairnd's resident memory (/proc/PID/status VmRSS) and
// the data directory's size. At the end it prints what it measured and
// checks (README "Durability under faults", L1):
//   memory growth from minute 2 to the end          <= 10%
//   disk growth once the window is full (retention + 1 min) <= 20%
// (growth compares peaks of the two halves of the span: both saw-tooth)
//   ingest acknowledgement p99                      <= 50 ms
//   subscriber lag p99 (event sent -> change read)  <= 1 s
//   the rate held (>= 95% of the events sent), no failed request
//   cairnd stops cleanly on SIGTERM (exit 0)
//
// Usage: soak [--minutes M] [--latencies-only | --sanitized --cairnd PATH]
// (make soak: 10 minutes, every check; make soak MINUTES=60). --sanitized is
// for a cairnd built with ASan + LSan + UBSan (make soak-asan; the harness
// itself is an ordinary build, since cairnd is what is checked), which runs
// several times slower: the figures are printed, and what is checked is that
// no request failed and cairnd stopped with exit 0 -- ASan aborts at its
// first report, and LSan and UBSan make the exit status non-zero.
#include <sys/types.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "cairn/client.h"
#include "server_process.h"
#include "test_util.h"
#include "workload.h"

namespace cairn::soak {
namespace {

using Clock = std::chrono::steady_clock;

struct Flags : Workload {
  std::string cairnd = CAIRND_PATH;
  enum class Checks { kAll, kLatencies, kErrors } checks = Checks::kAll;
};

uint64_t NowMicros() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

uint64_t RssBytes(pid_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/status"));
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoull(line.substr(6)) * 1024;
  }
  return 0;
}

uint64_t DiskBytes(const std::string& dir) {
  uint64_t total = 0;
  std::error_code ec;
  for (const auto& f : std::filesystem::recursive_directory_iterator(dir, ec)) {
    if (f.is_regular_file(ec)) total += f.file_size(ec);
  }
  return total;
}

// Latencies in microseconds, kept whole (a 10-minute soak at 2,000/s keeps
// 1.2M per subscriber: a few MB each).
class Samples {
 public:
  void Add(uint64_t v) {
    std::lock_guard<std::mutex> l(mu_);
    v_.push_back(v);
  }
  uint64_t Quantile(double q) {
    std::lock_guard<std::mutex> l(mu_);
    if (v_.empty()) return 0;
    size_t i = std::min(v_.size() - 1, static_cast<size_t>(q * v_.size()));
    std::nth_element(v_.begin(), v_.begin() + i, v_.end());
    return v_[i];
  }
  size_t size() {
    std::lock_guard<std::mutex> l(mu_);
    return v_.size();
  }

 private:
  std::mutex mu_;
  std::vector<uint64_t> v_;
};

absl::StatusOr<std::unique_ptr<client::Client>> Connect(int port) {
  client::ClientOptions o;
  o.target = absl::StrCat("127.0.0.1:", port);
  return client::Client::Connect(o);
}

int Run(const Flags& flags) {
  TempDir dir;
  const std::string data = dir.Sub("store");
  e2e::ServerProcess server(data, {"--retention-seconds", std::to_string(flags.retention_seconds)},
                            flags.cairnd);
  if (server.port() == 0) {
    std::printf("FAILED: cairnd did not start\n");
    return 1;
  }
  const auto start = Clock::now();
  const auto end = start + std::chrono::milliseconds(static_cast<int64_t>(flags.minutes * 60000));
  std::atomic<bool> done{false};
  std::atomic<uint64_t> failures{0}, sent{0}, snapshots{0}, snapshot_entities{0};
  Samples acks, lags;

  // Subscribers: each reads every change from now on.
  std::vector<std::thread> threads;
  for (int s = 0; s < flags.subscribers; ++s) {
    threads.emplace_back([&, s] {
      auto c = Connect(server.port());
      if (!c.ok()) {
        failures++;
        return;
      }
      auto sub = (*c)->Subscribe({}, {});
      if (!sub.ok()) {
        std::fprintf(stderr, "subscriber %d: %s\n", s, sub.status().ToString().c_str());
        failures++;
        return;
      }
      while (!done) {
        SubscriptionItem item;
        auto got = (*sub)->Next(absl::Milliseconds(200), &item);
        if (!got.ok()) {
          std::fprintf(stderr, "subscriber %d: %s\n", s, got.status().ToString().c_str());
          failures++;
          return;
        }
        if (*got && item.kind == SubscriptionItem::Kind::kChange) {
          uint64_t now = NowMicros(), at = item.change.position.timestamp;
          lags.Add(now > at ? now - at : 0);
        }
      }
      (*sub)->Cancel();
    });
  }
  // One snapshot per second.
  threads.emplace_back([&] {
    auto c = Connect(server.port());
    if (!c.ok()) {
      failures++;
      return;
    }
    for (auto next = Clock::now(); !done; next += std::chrono::seconds(1)) {
      std::this_thread::sleep_until(next);
      uint64_t n = 0;
      absl::Status s = (*c)->Snapshot({}, [&](const Entity&) { return ++n, true; });
      if (!s.ok()) {
        std::fprintf(stderr, "snapshot: %s\n", s.ToString().c_str());
        failures++;
      }
      snapshots++;
      snapshot_entities += n;
    }
  });
  // The producer: 20 events every 10 ms at 2,000/s.
  threads.emplace_back([&] {
    auto c = Connect(server.port());
    if (!c.ok()) {
      failures++;
      return;
    }
    std::mt19937 rng(1);
    const int per_batch = std::max(1, flags.rate / 100);
    uint64_t tick = 0;
    for (auto next = Clock::now(); Clock::now() < end; next += std::chrono::milliseconds(10)) {
      std::this_thread::sleep_until(next);
      std::vector<Event> events;
      uint64_t now = NowMicros();
      for (int i = 0; i < per_batch; ++i) {
        uint32_t key = rng() % flags.keys;
        bool patch = rng() % 3 == 0;
        events.push_back(
            Event{.source = "soak",
                  .collection = "accounts",
                  .key = std::to_string(key),
                  .position = {now, tick++},
                  .op = patch ? Op::kPatch : Op::kUpsert,
                  .payload = patch ? absl::StrCat(R"({"balance":)", rng() % 100000, "}")
                                   : absl::StrCat(R"({"id":)", key, R"(,"plan":"gold","balance":)",
                                                  rng() % 100000, R"(,"note":")",
                                                  std::string(100 + rng() % 100, 'n'), R"("})")});
      }
      auto t0 = Clock::now();
      auto r = (*c)->Ingest(std::move(events), false);
      acks.Add(std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0).count());
      if (!r.ok()) {
        std::fprintf(stderr, "ingest: %s\n", r.status().ToString().c_str());
        failures++;
        continue;
      }
      sent += per_batch;
    }
  });

  // Samples every 5 s.
  struct Sample {
    double minute;
    uint64_t rss, disk;
  };
  std::vector<Sample> samples;
  for (auto next = start; Clock::now() < end; next += std::chrono::seconds(5)) {
    std::this_thread::sleep_until(next);
    double minute = std::chrono::duration<double>(Clock::now() - start).count() / 60;
    samples.push_back({minute, RssBytes(server.pid()), DiskBytes(data)});
    std::printf("%5.2f min: rss %6.1f MiB, disk %6.1f MiB, %lu events sent\n", minute,
                samples.back().rss / 1048576.0, samples.back().disk / 1048576.0, sent.load());
    std::fflush(stdout);
  }
  std::this_thread::sleep_for(std::chrono::seconds(2));  // the last changes reach subscribers
  done = true;
  for (auto& t : threads) t.join();
  const int exit_status = server.Kill(SIGTERM);

  // What it measured.
  auto at = [&](double minute) {
    for (const Sample& s : samples) {
      if (s.minute >= minute) return s;
    }
    return samples.back();
  };
  // RSS and disk saw-tooth (allocator, memtable flushes, the compactions
  // that purge the window), so growth compares peaks: the highest sample of
  // the second half of the measured span against the highest of its first
  // half. Memory is measured from minute 2, disk from a full window.
  const Sample last = samples.back();
  const Sample two = at(2);
  const Sample full = at(flags.retention_seconds / 60.0 + 1);
  auto peaks = [&](double from, auto field) {
    double mid = (from + last.minute) / 2;
    uint64_t first = 0, second = 0;
    for (const Sample& s : samples) {
      if (s.minute >= from && s.minute < mid) first = std::max(first, field(s));
      if (s.minute >= mid) second = std::max(second, field(s));
    }
    return std::make_pair(first, second);
  };
  auto [rss_first, rss_second] = peaks(two.minute, [](const Sample& s) { return s.rss; });
  auto [disk_first, disk_second] = peaks(full.minute, [](const Sample& s) { return s.disk; });
  auto growth = [](uint64_t a, uint64_t b) { return a ? 100.0 * (double(b) - double(a)) / a : 0; };
  double rss_growth = growth(rss_first, rss_second);
  double disk_growth = growth(disk_first, disk_second);
  uint64_t rss_max = 0;
  for (const Sample& s : samples) rss_max = std::max(rss_max, s.rss);
  double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  const uint64_t expected = static_cast<uint64_t>(flags.rate * flags.minutes * 60);
  std::printf(
      "\nsoak: %.1f min, %lu events sent (%.0f/s), %d subscribers, %lu snapshots (%.0f entities "
      "each on average), retention %d s\n"
      "  ingest ack: p50 %.1f ms, p99 %.1f ms, max %.1f ms\n"
      "  subscriber lag: p50 %.1f ms, p99 %.1f ms (%zu changes read)\n"
      "  cairnd rss peak: %.1f MiB from minute 2 to mid-way, %.1f MiB after (%+.1f%%), max %.1f "
      "MiB\n"
      "  disk peak: %.1f MiB from a full window (%.1f min) to mid-way, %.1f MiB after (%+.1f%%)\n"
      "  failed requests: %lu\n"
      "  cairnd exit status on SIGTERM: %d\n",
      seconds / 60, sent.load(), sent.load() / seconds, flags.subscribers, snapshots.load(),
      snapshots ? double(snapshot_entities) / snapshots : 0.0, flags.retention_seconds,
      acks.Quantile(0.5) / 1e3, acks.Quantile(0.99) / 1e3, acks.Quantile(1.0) / 1e3,
      lags.Quantile(0.5) / 1e3, lags.Quantile(0.99) / 1e3, lags.size(), rss_first / 1048576.0,
      rss_second / 1048576.0, rss_growth, rss_max / 1048576.0, disk_first / 1048576.0, full.minute,
      disk_second / 1048576.0, disk_growth, failures.load(), exit_status);
  std::vector<std::string> failed;
  if (failures) failed.push_back("failed requests");
  if (exit_status != 0) {
    failed.push_back("cairnd did not stop cleanly (with a sanitizer: its report is above)");
  }
  if (flags.checks != Flags::Checks::kErrors) {
    if (sent < expected * 95 / 100) failed.push_back("the rate did not hold");
    if (acks.Quantile(0.99) > 50000) failed.push_back("ingest ack p99 > 50 ms");
    if (lags.Quantile(0.99) > 1000000) failed.push_back("subscriber lag p99 > 1 s");
  }
  if (flags.checks == Flags::Checks::kAll) {
    if (rss_growth > 10) failed.push_back("memory grew more than 10% after minute 2");
    if (disk_growth > 20) failed.push_back("disk grew more than 20% once the window was full");
  }
  for (const std::string& f : failed) std::printf("FAILED: %s\n", f.c_str());
  if (failed.empty()) std::printf("PASSED\n");
  return failed.empty() ? 0 : 1;
}

}  // namespace
}  // namespace cairn::soak

int main(int argc, char** argv) {
  cairn::soak::Flags flags;
  bool latencies_only = false, sanitized = false;
  CLI::App app{"L1 soak: a real cairnd under steady ingest, subscribers, snapshots, retention"};
  cairn::soak::AddWorkloadFlags(app, flags, /*min_subscribers=*/0);
  app.add_flag("--latencies-only", latencies_only,
               "check latencies, rate and errors, not memory and disk growth (short runs)");
  app.add_flag("--sanitized", sanitized,
               "cairnd is a sanitizer build: check errors and a clean stop, print the rest")
      ->excludes("--latencies-only");
  app.add_option("--cairnd", flags.cairnd, "the cairnd to run (default: this build's)")
      ->check(CLI::ExistingFile);
  CLI11_PARSE(app, argc, argv);
  using Checks = cairn::soak::Flags::Checks;
  flags.checks = sanitized ? Checks::kErrors : latencies_only ? Checks::kLatencies : Checks::kAll;
  return cairn::soak::Run(flags);
}
