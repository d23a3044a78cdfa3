// Server benchmarks, in one binary so ratios come from the same run:
//  * ingest over gRPC (1 and 100 events per message, 1 and 4 client
//    streams) against embedded Store::Ingest of the same events;
//  * end-to-end subscription latency (ingest accepted -> subscriber
//    receives) at 1k and 10k events/s with 1 and 10 subscribers, p50/p99;
//  * the same over HTTP: NDJSON ingest (POST /v1/ingest, keep-alive, 1 and
//    100 events per request, 1 and 4 connections) and Server-Sent Events
//    subscribers (GET /v1/subscribe) under the same producer.
// cairnd runs in-process on loopback; gRPC clients use the real client
// library, HTTP clients Boost.Beast.
#include <benchmark/benchmark.h>
#include <stdlib.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <boost/asio.hpp>
#include <boost/beast.hpp>
#include <chrono>
#include <filesystem>
#include <map>
#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"
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
                                           .http_listen = "127.0.0.1:0",
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
// Events per message (request) x client streams (connections): the same
// grid for gRPC and HTTP, so their rows pair up.
void IngestGrid(benchmark::internal::Benchmark* b) {
  b->ArgsProduct({{1, 100}, {1, 4}})->UseRealTime();
}
BENCHMARK(BM_GrpcIngest)->ArgNames({"events_per_msg", "streams"})->Apply(IngestGrid);

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

// The same events as canonical NDJSON lines, each naming its source.
std::string Ndjson(const std::vector<cairn::Event>& events) {
  std::string out;
  for (const cairn::Event& e : events) {
    absl::StrAppend(&out, R"({"source":")", e.source, R"(","collection":")", e.collection,
                    R"(","key":)", e.key, R"(,"op":"upsert","position":{"timestamp":)",
                    e.position.timestamp, R"(},"payload":)", e.payload, "}\n");
  }
  return out;
}

net::ip::tcp::endpoint HttpEndpoint(const ServerFixture& f) {
  return {net::ip::make_address("127.0.0.1"), static_cast<unsigned short>(f.server->http_port())};
}

// POST /v1/ingest over keep-alive connections, one request in flight on
// each (HTTP/1.1 without pipelining), against BM_GrpcIngest's figures.
void BM_HttpIngest(benchmark::State& state) {
  size_t per_request = state.range(0);
  int connections = static_cast<int>(state.range(1));
  ServerFixture f;
  net::io_context ioc;
  std::vector<std::unique_ptr<beast::tcp_stream>> conns;
  for (int c = 0; c < connections; ++c) {
    conns.push_back(std::make_unique<beast::tcp_stream>(ioc));
    conns.back()->connect(HttpEndpoint(f));
    conns.back()->socket().set_option(net::ip::tcp::no_delay(true));
  }
  std::vector<uint64_t> next(connections, 0);
  for (auto _ : state) {
    std::vector<std::thread> threads;
    for (int c = 0; c < connections; ++c) {
      threads.emplace_back([&, c] {
        beast::flat_buffer buf;
        size_t requests = kEventsPerIteration / connections / per_request;
        for (size_t r = 0; r < requests; ++r) {
          http::request<http::string_body> req{http::verb::post, "/v1/ingest", 11};
          req.set(http::field::host, "127.0.0.1");
          req.set(http::field::content_type, "application/x-ndjson");
          req.body() = Ndjson(Events(next[c], per_request, c));
          req.prepare_payload();
          next[c] += per_request;
          http::write(*conns[c], req);
          http::response<http::string_body> res;
          http::read(*conns[c], buf, res);
          if (res.result() != http::status::ok) abort();
        }
      });
    }
    for (auto& t : threads) t.join();
  }
  state.SetItemsProcessed(state.iterations() * kEventsPerIteration);
}
BENCHMARK(BM_HttpIngest)->ArgNames({"events_per_req", "connections"})->Apply(IngestGrid);

// A subscriber of every change from now on, gRPC or SSE, for the latency
// benchmark: constructed caught up; Read records each change's seq and
// arrival until `stop`.
class LatencySubscriber {
 public:
  using Arrivals = std::vector<std::pair<uint64_t, Clock::time_point>>;
  virtual ~LatencySubscriber() = default;
  virtual void Read(const std::atomic<bool>& stop, Arrivals* out) = 0;
  // Ends a Read blocked in a read (called after `stop` is set).
  virtual void Stop() {}
};

class GrpcSubscriber : public LatencySubscriber {
 public:
  explicit GrpcSubscriber(const ServerFixture& f)
      : client_(*cairn::client::Client::Connect({.target = f.address()})),
        sub_(*client_->Subscribe({}, {})) {
    cairn::SubscriptionItem item;
    while (!(sub_->Next(absl::Seconds(5), &item).value_or(false) &&
             item.kind == cairn::SubscriptionItem::Kind::kCaughtUp)) {
    }
  }
  void Read(const std::atomic<bool>& stop, Arrivals* out) override {
    cairn::SubscriptionItem item;
    while (!stop.load()) {
      auto got = sub_->Next(absl::Milliseconds(50), &item);
      if (got.ok() && *got && item.kind == cairn::SubscriptionItem::Kind::kChange) {
        out->emplace_back(item.change.seq, Clock::now());
      }
    }
  }

 private:
  std::unique_ptr<cairn::client::Client> client_;
  std::unique_ptr<cairn::client::ClientSubscription> sub_;
};

// GET /v1/subscribe read with Beast's parser; each event's `id:` (its seq)
// is taken when its chunk arrives.
class SseSubscriber : public LatencySubscriber {
 public:
  explicit SseSubscriber(const ServerFixture& f) {
    socket_.connect(HttpEndpoint(f));
    socket_.set_option(net::ip::tcp::no_delay(true));
    http::request<http::empty_body> req{http::verb::get, "/v1/subscribe?from=now", 11};
    req.set(http::field::host, "127.0.0.1");
    http::write(socket_, req);
    parser_.body_limit(boost::none);
    http::read_header(socket_, buf_, parser_);
    if (parser_.get().result() != http::status::ok) abort();
    ReadEvents("caught_up", nullptr);
  }
  void Read(const std::atomic<bool>& stop, Arrivals* out) override { ReadEvents(nullptr, out); }
  void Stop() override { ::shutdown(socket_.native_handle(), SHUT_RDWR); }

 private:
  // Until an event of type `until`, or the stream's end.
  void ReadEvents(const char* until, Arrivals* out) {
    char chunk[64 << 10];
    for (;;) {
      parser_.get().body().data = chunk;
      parser_.get().body().size = sizeof(chunk);
      beast::error_code ec;
      http::read_some(socket_, buf_, parser_, ec);
      if (ec == http::error::need_buffer) ec = {};
      if (ec) return;
      auto now = Clock::now();
      text_.append(chunk, sizeof(chunk) - parser_.get().body().size);
      for (size_t end; (end = text_.find("\n\n")) != std::string::npos; text_.erase(0, end + 2)) {
        std::string_view event(text_.data(), end);
        if (until && event.find(absl::StrCat("event: ", until)) != std::string_view::npos) {
          text_.erase(0, end + 2);
          return;
        }
        if (out && event.substr(0, 4) == "id: " &&
            event.find("\nevent: change\n") != std::string_view::npos) {
          out->emplace_back(std::strtoull(event.data() + 4, nullptr, 10), now);
        }
      }
    }
  }

  net::io_context ioc_;
  net::ip::tcp::socket socket_{ioc_};
  beast::flat_buffer buf_;
  http::response_parser<http::buffer_body> parser_;
  std::string text_;
};

// Subscription latency. A producer sends single events at `rate` per second
// over one gRPC stream without waiting for acks (a second thread receives
// them), so the rate is held whatever the round trip; it records, per seq,
// when the event was sent and when its ack arrived (accepted). Subscribers
// record when each seq reached them.
// Subscribers are gRPC streams (protocol 0) or SSE streams (1).
void BM_SubscriptionLatency(benchmark::State& state) {
  int rate = static_cast<int>(state.range(0));
  int subscribers = static_cast<int>(state.range(1));
  bool sse = state.range(2) == 1;
  ServerFixture f;
  auto producer = *cairn::client::Client::Connect({.target = f.address()});
  std::vector<double> from_accept_us, from_send_us;
  for (auto _ : state) {
    constexpr auto kDuration = std::chrono::milliseconds(1500);
    size_t total = static_cast<size_t>(rate * 1.5);
    absl::Mutex mu;
    std::map<uint64_t, std::pair<Clock::time_point, Clock::time_point>>
        sent_at;  // seq -> send, accept
    std::vector<LatencySubscriber::Arrivals> received(subscribers);
    std::vector<std::unique_ptr<LatencySubscriber>> subs;
    for (int i = 0; i < subscribers; ++i) {
      if (sse) {
        subs.push_back(std::make_unique<SseSubscriber>(f));
      } else {
        subs.push_back(std::make_unique<GrpcSubscriber>(f));
      }
    }
    std::atomic<bool> stop{false};
    std::vector<std::thread> readers;
    for (int i = 0; i < subscribers; ++i) {
      readers.emplace_back([&, i] { subs[i]->Read(stop, &received[i]); });
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
    for (auto& sub : subs) sub->Stop();
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
    ->ArgNames({"events_per_s", "subscribers", "sse"})
    ->ArgsProduct({{1000, 10000}, {1, 10}, {0, 1}})
    ->Iterations(1)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
