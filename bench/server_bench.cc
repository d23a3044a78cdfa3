// Server benchmarks, in one binary so ratios come from the same run:
//  * ingest over gRPC (1 and 100 events per message, 1 and 4 client
//    streams) against embedded Store::Ingest of the same events;
//  * end-to-end subscription latency (ingest accepted -> subscriber
//    receives) at 1k and 10k events/s with 1 and 10 subscribers, p50/p99.
// cairnd runs in-process on loopback; clients use the real client library.
#include <benchmark/benchmark.h>
#include <stdlib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <map>
#include <mutex>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "bench_env.h"
#include "cairn/client.h"
#include "cairn/store.h"
#include "server.h"

namespace {

using Clock = std::chrono::steady_clock;

std::string TempDir() {
  char tmpl[] = "/tmp/cairn-bench-XXXXXX";
  return mkdtemp(tmpl);
}

std::vector<cairn::Event> Events(uint64_t first, size_t n, int stream) {
  std::vector<cairn::Event> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    uint64_t k = first + i;
    out.push_back({.source = "bench" + std::to_string(stream),
                   .collection = "account",
                   .key = std::to_string(k % 10000),
                   .position = {1'700'000'000'000'000 + k, 0},
                   .payload = R"({"acct_no":)" + std::to_string(k) +
                              R"(,"status":"ACTIVE","plan":"gold","balance":1234.56,)"
                              R"("owner":"someone@example.com","region":"eu-west-1"})"});
  }
  return out;
}

struct ServerFixture {
  std::string dir = TempDir();
  std::unique_ptr<cairn::server::Server> server;
  ServerFixture() {
    auto s = cairn::server::Server::Start({.listen = "127.0.0.1:0",
                                           .data_dir = dir + "/data",
                                           .memory_budget = cairn::bench::MemoryBudget()});
    if (!s.ok()) abort();
    server = *std::move(s);
  }
  ~ServerFixture() {
    server->Shutdown();
    std::filesystem::remove_all(dir);
  }
  std::string address() const { return "127.0.0.1:" + std::to_string(server->port()); }
};

constexpr size_t kEventsPerIteration = 2000;

// Embedded baseline: the same events, the same batch sizes.
void BM_EmbeddedIngest(benchmark::State& state) {
  size_t per_batch = state.range(0);
  std::string dir = TempDir();
  auto store = cairn::Store::Open(dir, cairn::bench::StoreOptions());
  uint64_t next = 0;
  for (auto _ : state) {
    for (size_t sent = 0; sent < kEventsPerIteration; sent += per_batch) {
      auto r = (*store)->Ingest(Events(next, per_batch, 0), {});
      if (!r.ok()) state.SkipWithError("ingest failed");
      next += per_batch;
    }
  }
  state.SetItemsProcessed(state.iterations() * kEventsPerIteration);
  store->reset();
  std::filesystem::remove_all(dir);
}
BENCHMARK(BM_EmbeddedIngest)->ArgName("events_per_batch")->Arg(1)->Arg(100)->UseRealTime();

void BM_GrpcIngest(benchmark::State& state) {
  size_t per_message = state.range(0);
  int streams = static_cast<int>(state.range(1));
  ServerFixture f;
  std::vector<std::unique_ptr<cairn::client::Client>> clients;
  std::vector<std::unique_ptr<cairn::client::IngestStream>> open;
  for (int s = 0; s < streams; ++s) {
    clients.push_back(*cairn::client::Client::Connect({.target = f.address()}));
    open.push_back(*clients.back()->OpenIngestStream(false));
  }
  std::vector<uint64_t> next(streams, 0);
  for (auto _ : state) {
    std::vector<std::thread> threads;
    for (int s = 0; s < streams; ++s) {
      threads.emplace_back([&, s] {
        auto& stream = *open[s];
        size_t messages = kEventsPerIteration / streams / per_message;
        constexpr size_t kWindow = 32;  // messages in flight per stream
        size_t sent = 0, acked = 0;
        while (acked < messages) {
          while (sent < messages && sent - acked < kWindow) {
            if (!stream.Send(Events(next[s], per_message, s), false).ok()) abort();
            next[s] += per_message;
            ++sent;
          }
          if (!stream.Receive().ok()) abort();
          ++acked;
        }
      });
    }
    for (auto& t : threads) t.join();
  }
  state.SetItemsProcessed(state.iterations() * kEventsPerIteration);
  for (auto& s : open) s->Close().IgnoreError();
}
BENCHMARK(BM_GrpcIngest)
    ->ArgNames({"events_per_msg", "streams"})
    ->Args({1, 1})
    ->Args({1, 4})
    ->Args({100, 1})
    ->Args({100, 4})
    ->UseRealTime();

// Subscription latency. A producer sends single events at `rate` per second
// over one gRPC stream without waiting for acks (a second thread receives
// them), so the rate is held whatever the round trip; it records, per seq,
// when the event was sent and when its ack arrived (accepted). Subscribers
// record when each seq reached them.
void BM_SubscriptionLatency(benchmark::State& state) {
  int rate = static_cast<int>(state.range(0));
  int subscribers = static_cast<int>(state.range(1));
  ServerFixture f;
  auto producer = *cairn::client::Client::Connect({.target = f.address()});
  std::vector<double> from_accept_us, from_send_us;
  for (auto _ : state) {
    constexpr auto kDuration = std::chrono::milliseconds(1500);
    size_t total = static_cast<size_t>(rate * 1.5);
    absl::Mutex mu;
    std::map<uint64_t, std::pair<Clock::time_point, Clock::time_point>>
        sent_at;  // seq -> send, accept
    std::vector<std::vector<std::pair<uint64_t, Clock::time_point>>> received(subscribers);
    std::vector<std::unique_ptr<cairn::client::Client>> sub_clients;
    std::vector<std::unique_ptr<cairn::client::ClientSubscription>> subs;
    for (int i = 0; i < subscribers; ++i) {
      sub_clients.push_back(*cairn::client::Client::Connect({.target = f.address()}));
      subs.push_back(*sub_clients.back()->Subscribe({}, {}));
      cairn::SubscriptionItem item;
      while (!(subs.back()->Next(absl::Seconds(5), &item).value_or(false) &&
               item.kind == cairn::SubscriptionItem::Kind::kCaughtUp)) {
      }
    }
    std::atomic<bool> stop{false};
    std::vector<std::thread> readers;
    for (int i = 0; i < subscribers; ++i) {
      readers.emplace_back([&, i] {
        cairn::SubscriptionItem item;
        while (!stop.load()) {
          auto got = subs[i]->Next(absl::Milliseconds(50), &item);
          if (got.ok() && *got && item.kind == cairn::SubscriptionItem::Kind::kChange) {
            received[i].emplace_back(item.change.seq, Clock::now());
          }
        }
      });
    }
    auto stream = *producer->OpenIngestStream(false);
    static uint64_t next = 0;
    std::vector<Clock::time_point> send_times(total);
    std::atomic<size_t> sent{0};
    std::thread acks([&] {
      for (size_t n = 0; n < total; ++n) {
        auto r = stream->Receive();  // acks come in send order
        auto accept = Clock::now();
        if (!r.ok() || r->last_seq == 0) abort();
        while (sent.load(std::memory_order_acquire) <= n) std::this_thread::yield();
        absl::MutexLock l(&mu);
        sent_at[r->last_seq] = {send_times[n], accept};
      }
    });
    auto start = Clock::now();
    for (size_t n = 0; n < total; ++n) {
      std::this_thread::sleep_until(start + kDuration * n / total);
      send_times[n] = Clock::now();
      sent.store(n + 1, std::memory_order_release);
      if (!stream->Send(Events(next++, 1, 0), false).ok()) abort();
    }
    acks.join();
    state.counters["send_seconds"] = std::chrono::duration<double>(Clock::now() - start).count();
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    stop = true;
    for (auto& t : readers) t.join();
    stream->Close().IgnoreError();
    for (const auto& per_sub : received) {
      for (const auto& [seq, at] : per_sub) {
        auto it = sent_at.find(seq);
        if (it == sent_at.end()) continue;
        from_send_us.push_back(
            std::chrono::duration<double, std::micro>(at - it->second.first).count());
        // The subscriber may see a commit before the producer's ack arrives.
        from_accept_us.push_back(std::max(
            0.0, std::chrono::duration<double, std::micro>(at - it->second.second).count()));
      }
    }
  }
  auto pct = [](std::vector<double>& v, double p) {
    if (v.empty()) return 0.0;
    std::sort(v.begin(), v.end());
    return v[std::min(v.size() - 1, static_cast<size_t>(p * v.size()))];
  };
  state.counters["p50_accept_us"] = pct(from_accept_us, 0.50);
  state.counters["p99_accept_us"] = pct(from_accept_us, 0.99);
  state.counters["p50_send_us"] = pct(from_send_us, 0.50);
  state.counters["p99_send_us"] = pct(from_send_us, 0.99);
  state.counters["samples"] = static_cast<double>(from_accept_us.size());
}
BENCHMARK(BM_SubscriptionLatency)
    ->ArgNames({"events_per_s", "subscribers"})
    ->Args({1000, 1})
    ->Args({1000, 10})
    ->Args({10000, 1})
    ->Args({10000, 10})
    ->Iterations(1)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
