// Connector and sink benchmarks against a real nats-server (started here,
// with JetStream, on a free loopback port), in one binary so the ratios come
// from one run:
//  * BM_GrpcIngestDebezium: N Debezium messages through gRPC ingest (the
//    raw payloads, 100 per message, 32 messages in flight), the baseline;
//  * BM_ConnectorFromNats: the same N messages from a JetStream stream
//    through a nats connector (its default batch of 1,000) until all are
//    committed; goal >= 0.7x the baseline;
//  * BM_SinkToNats: N committed changes delivered by a nats sink to a
//    JetStream stream (changes/s, batch 100);
//  * BM_SinkLatency: single changes committed at 1,000/s; the time from the
//    commit to the sink's checkpoint passing it (JetStream acknowledged):
//    p50 and p99 in counters.
// cairnd runs in-process; the connector and the sink are managed through the
// client library, as an operator would.
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <nats/nats.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "bench_env.h"
#include "cairn/client.h"
#include "server.h"

namespace {

using Clock = std::chrono::steady_clock;
constexpr size_t kMessages = 20000;

std::string TempDir() {
  char tmpl[] = "/tmp/cairn-bench-XXXXXX";
  return mkdtemp(tmpl);
}

// One Debezium change event (about the size of server_bench's events).
std::string Debezium(uint64_t i) {
  return absl::StrCat(
      R"({"before":null,"after":{"acct_no":)", i % 10000,
      R"(,"status":"ACTIVE","plan":"gold","balance":1234.56,"owner":"someone@example.com",)"
      R"("region":"eu-west-1","n":)",
      i, R"(},"source":{"schema":"billing","table":"account","ts_ms":1700000000000,"lsn":)", i,
      R"(},"op":"u","ts_ms":1700000000000})");
}

class NatsServer {
 public:
  NatsServer() : dir_(TempDir()) {
    port_ = 14222 + static_cast<int>(getpid() % 1000);
    std::string port = std::to_string(port_), store = dir_ + "/store";
    const char* argv[] = {"nats-server", "-js", "-a",          "127.0.0.1", "-p",
                          port.c_str(),  "-sd", store.c_str(), nullptr};
    pid_ = fork();
    if (pid_ == 0) {
      // Ends with the benchmark, however it ends; quiet.
      prctl(PR_SET_PDEATHSIG, SIGTERM);
      int null = open("/dev/null", O_WRONLY);
      dup2(null, 1);
      dup2(null, 2);
      execvp("nats-server", const_cast<char**>(argv));
      _exit(127);
    }
    if (pid_ < 0) {
      pid_ = 0;
      return;
    }
    for (int i = 0; i < 200 && !nc_; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
      if (natsConnection_ConnectTo(&nc_, url().c_str()) != NATS_OK) nc_ = nullptr;
    }
    if (nc_) natsConnection_JetStream(&js_, nc_, nullptr);
  }
  ~NatsServer() {
    if (js_) jsCtx_Destroy(js_);
    if (nc_) natsConnection_Destroy(nc_);
    if (pid_) {
      kill(pid_, SIGTERM);
      waitpid(pid_, nullptr, 0);
    }
    std::filesystem::remove_all(dir_);
  }
  bool ok() const { return js_ != nullptr; }
  std::string url() const { return "nats://127.0.0.1:" + std::to_string(port_); }
  jsCtx* js() const { return js_; }

  bool AddStream(const std::string& name, const std::string& subject) {
    jsStreamConfig cfg;
    jsStreamConfig_Init(&cfg);
    cfg.Name = name.c_str();
    const char* subjects[] = {subject.c_str()};
    cfg.Subjects = subjects;
    cfg.SubjectsLen = 1;
    cfg.Storage = js_FileStorage;
    jsStreamInfo* si = nullptr;
    jsErrCode jerr;
    natsStatus s = js_AddStream(&si, js_, &cfg, nullptr, &jerr);
    if (si) jsStreamInfo_Destroy(si);
    return s == NATS_OK;
  }
  bool Publish(const std::string& subject, size_t n) {
    for (size_t i = 0; i < n; ++i) {
      std::string data = Debezium(i);
      if (js_PublishAsync(js_, subject.c_str(), data.data(), static_cast<int>(data.size()),
                          nullptr) != NATS_OK) {
        return false;
      }
    }
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = 60000;
    return js_PublishAsyncComplete(js_, &po) == NATS_OK;
  }
  uint64_t StreamMessages(const std::string& name) {
    jsStreamInfo* si = nullptr;
    jsErrCode jerr;
    if (js_GetStreamInfo(&si, js_, name.c_str(), nullptr, &jerr) != NATS_OK) return 0;
    uint64_t n = si->State.Msgs;
    jsStreamInfo_Destroy(si);
    return n;
  }

 private:
  std::string dir_;
  pid_t pid_ = 0;
  int port_ = 0;
  natsConnection* nc_ = nullptr;
  jsCtx* js_ = nullptr;
};

NatsServer& Nats() {
  static NatsServer server;  // stopped at exit
  return server;
}

struct ServerFixture {
  std::string dir = TempDir();
  std::unique_ptr<cairn::server::Server> server;
  std::unique_ptr<cairn::client::Client> client;
  ServerFixture() {
    auto s = cairn::server::Server::Start({.listen = "127.0.0.1:0",
                                           .data_dir = dir + "/data",
                                           .memory_budget = cairn::bench::MemoryBudget()});
    if (!s.ok()) abort();
    server = *std::move(s);
    client =
        *cairn::client::Client::Connect({.target = "127.0.0.1:" + std::to_string(server->port())});
    if (!client
             ->PutSource(
                 {.name = "pg", .format = "debezium", .key_fields = {{"account", {"acct_no"}}}})
             .ok()) {
      abort();
    }
  }
  ~ServerFixture() {
    client.reset();
    server->Shutdown();
    std::filesystem::remove_all(dir);
  }
};

void BM_GrpcIngestDebezium(benchmark::State& state) {
  ServerFixture f;
  auto stream = *f.client->OpenIngestStream(true);
  constexpr size_t kPerMessage = 100, kWindow = 32;
  uint64_t next = 0;
  for (auto _ : state) {
    state.PauseTiming();
    // New events each time (a re-sent one would be a cheap duplicate).
    std::vector<std::string> payloads;
    for (size_t m = 0; m < kMessages / kPerMessage; ++m) {
      std::string p;
      for (size_t i = 0; i < kPerMessage; ++i) absl::StrAppend(&p, Debezium(next++), "\n");
      payloads.push_back(std::move(p));
    }
    state.ResumeTiming();
    size_t sent = 0, acked = 0;
    while (acked < payloads.size()) {
      while (sent < payloads.size() && sent - acked < kWindow) {
        if (!stream->SendPayload("pg", payloads[sent], false).ok()) abort();
        ++sent;
      }
      if (!stream->Receive().ok()) abort();
      ++acked;
    }
  }
  state.SetItemsProcessed(state.iterations() * kMessages);
  stream->Close().IgnoreError();
}
BENCHMARK(BM_GrpcIngestDebezium)->UseRealTime()->Unit(benchmark::kMillisecond)->Iterations(3);

void BM_ConnectorFromNats(benchmark::State& state) {
  if (!Nats().ok()) {
    state.SkipWithError("nats-server did not start (is it installed?)");
    return;
  }
  int run = 0;
  for (auto _ : state) {
    state.PauseTiming();
    auto fixture = std::make_unique<ServerFixture>();
    ServerFixture& f = *fixture;
    std::string stream = absl::StrCat("IN", run), subject = absl::StrCat("in", run, ".account");
    ++run;
    if (!Nats().AddStream(stream, subject) || !Nats().Publish(subject, kMessages)) {
      state.SkipWithError("publishing to JetStream failed");
      return;
    }
    state.ResumeTiming();
    if (!f.client
             ->PutConnector({.name = "in",
                             .type = "nats",
                             .source = "pg",
                             .urls = {Nats().url()},
                             .stream = stream})
             .ok()) {
      state.SkipWithError("PutConnector failed");
      return;
    }
    for (;;) {
      auto st = f.client->ConnectorStatus("in");
      if (st.ok() && !st->empty() && st->front().urls.front().events >= kMessages) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    state.PauseTiming();
    fixture.reset();
    state.ResumeTiming();
  }
  state.SetItemsProcessed(state.iterations() * kMessages);
}
BENCHMARK(BM_ConnectorFromNats)->UseRealTime()->Unit(benchmark::kMillisecond)->Iterations(3);

void BM_SinkToNats(benchmark::State& state) {
  if (!Nats().ok()) {
    state.SkipWithError("nats-server did not start (is it installed?)");
    return;
  }
  ServerFixture f;
  std::string payload;
  for (size_t i = 0; i < kMessages; ++i) absl::StrAppend(&payload, Debezium(i), "\n");
  auto r = f.client->IngestPayload("pg", payload, false);
  if (!r.ok()) abort();
  uint64_t last = r->last_seq;
  int run = 0;
  for (auto _ : state) {
    state.PauseTiming();
    std::string stream = absl::StrCat("OUT", run), name = absl::StrCat("out", run);
    if (!Nats().AddStream(stream, absl::StrCat("out", run, ".>"))) abort();
    ++run;
    state.ResumeTiming();
    cairn::connectors::SinkDefinition d{.name = name,
                                        .type = "nats",
                                        .url = Nats().url(),
                                        .subject = name + ".{collection}",
                                        .from_seq = 0};
    if (!f.client->PutSink(d, false).ok()) abort();
    for (;;) {
      auto st = f.client->SinkStatus(name);
      if (st.ok() && !st->empty() && st->front().checkpoint_seq >= last) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    state.PauseTiming();
    if (Nats().StreamMessages(stream) != kMessages) state.SkipWithError("messages missing");
    f.client->RemoveSink(name).IgnoreError();
    state.ResumeTiming();
  }
  state.SetItemsProcessed(state.iterations() * kMessages);
}
BENCHMARK(BM_SinkToNats)->UseRealTime()->Unit(benchmark::kMillisecond)->Iterations(3);

void BM_SinkLatency(benchmark::State& state) {
  if (!Nats().ok()) {
    state.SkipWithError("nats-server did not start (is it installed?)");
    return;
  }
  ServerFixture f;
  if (!Nats().AddStream("LAT", "lat.>")) abort();
  cairn::connectors::SinkDefinition d{
      .name = "lat", .type = "nats", .url = Nats().url(), .subject = "lat.{collection}"};
  if (!f.client->PutSink(d, true).ok()) abort();
  constexpr int kRate = 1000, kChanges = 3000;
  std::vector<double> micros;
  uint64_t i = 1'000'000;
  for (auto _ : state) {
    std::vector<std::pair<uint64_t, Clock::time_point>> committed;
    std::atomic<bool> done{false};
    std::vector<std::pair<uint64_t, Clock::time_point>> seen;
    std::thread watcher([&] {
      while (!done) {
        auto st = f.client->SinkStatus("lat");
        if (st.ok() && !st->empty()) seen.emplace_back(st->front().checkpoint_seq, Clock::now());
        std::this_thread::sleep_for(std::chrono::microseconds(200));
      }
    });
    auto start = Clock::now();
    for (int n = 0; n < kChanges; ++n) {
      std::this_thread::sleep_until(start + std::chrono::microseconds(n * 1'000'000 / kRate));
      auto r = f.client->IngestPayload("pg", Debezium(i++), false);
      if (!r.ok()) abort();
      committed.emplace_back(r->last_seq, Clock::now());
    }
    for (;;) {
      auto st = f.client->SinkStatus("lat");
      if (st.ok() && st->front().checkpoint_seq >= committed.back().first) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    done = true;
    watcher.join();
    size_t j = 0;
    for (const auto& [seq, at] : committed) {
      while (j < seen.size() && seen[j].first < seq) ++j;
      if (j == seen.size()) break;
      micros.push_back(
          std::max(0.0, std::chrono::duration<double, std::micro>(seen[j].second - at).count()));
    }
  }
  std::sort(micros.begin(), micros.end());
  if (!micros.empty()) {
    state.counters["p50_ms"] = micros[micros.size() / 2] / 1000;
    state.counters["p99_ms"] = micros[micros.size() * 99 / 100] / 1000;
  }
  state.SetItemsProcessed(state.iterations() * kChanges);
}
BENCHMARK(BM_SinkLatency)->UseRealTime()->Unit(benchmark::kMillisecond)->Iterations(1);

}  // namespace

BENCHMARK_MAIN();
