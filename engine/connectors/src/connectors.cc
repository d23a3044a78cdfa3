// The connector manager (cairn/connectors.h): definitions kept as side
// records (DefinitionRecord), one SseReader per URL of each running
// connector.
#include "cairn/connectors.h"

#include <curl/curl.h>

#include <atomic>
#include <cstdio>
#include <map>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "cairn/formats.h"
#include "cairn/status.h"
#include "nats_reader.h"
#include "rapidjson/document.h"
#include "sink.h"
#include "sse_reader.h"

namespace cairn::connectors {
namespace {

// Worst first: a connector's state is its worst URL's.
int Rank(std::string_view state) {
  static constexpr std::string_view kOrder[] = {"failed",    "gap",   "backing-off", "connecting",
                                                "streaming", "ended", "stopped"};
  for (int i = 0; i < static_cast<int>(std::size(kOrder)); ++i) {
    if (kOrder[i] == state) return i;
  }
  return 0;
}

class ConnectorsImpl : public Connectors {
 public:
  explicit ConnectorsImpl(Store* store) : store_(store) {}
  ~ConnectorsImpl() override { Stop(); }

  absl::Status Load() {
    CAIRN_ASSIGN_OR_RETURN(std::vector<SideRecord> defs, store_->ListSideRecords("connector/def/"));
    absl::MutexLock l(&mu_);
    for (const SideRecord& r : defs) {
      auto d = FromJson(r.value);
      if (!d.ok()) {
        return absl::DataLossError(
            absl::StrCat("stored ", r.name, " is not a definition: ", d.status().message()));
      }
      StartLocked(*d);
    }
    CAIRN_ASSIGN_OR_RETURN(std::vector<SideRecord> sinks, store_->ListSideRecords("sink/def/"));
    for (const SideRecord& r : sinks) {
      auto d = SinkFromJson(r.value);
      if (!d.ok()) {
        return absl::DataLossError(
            absl::StrCat("stored ", r.name, " is not a definition: ", d.status().message()));
      }
      auto& sink = sinks_[d->name] = std::make_unique<Sink>(store_, *d);
      sink->Start();
      sink_defs_[d->name] = *d;
    }
    return absl::OkStatus();
  }

  absl::Status Put(const ConnectorDefinition& d) override {
    CAIRN_RETURN_IF_ERROR(Check(d));
    CAIRN_ASSIGN_OR_RETURN(SourceDefinition source, store_->GetSource(d.source));
    if (d.type == "sse" && source.format != "sse-feed") {
      return absl::FailedPreconditionError(
          absl::StrCat("connector ", d.name, ": source ", d.source, " has format ", source.format,
                       "; an sse connector reads a source of format sse-feed"));
    }
    if (d.type == "nats" && (source.format == "sse-feed" || formats::SessionOnly(source.format))) {
      return absl::FailedPreconditionError(absl::StrCat(
          "connector ", d.name, ": source ", d.source, " has format ", source.format,
          "; a nats connector decodes each message as one payload (debezium, goldengate, "
          "infosphere, datapoints, canonical)"));
    }
    absl::MutexLock l(&mu_);
    if (stopped_) return absl::UnavailableError("connectors are stopping");
    running_.erase(d.name);  // stops the old one (its readers commit)
    CAIRN_RETURN_IF_ERROR(store_->PutSideRecord(DefinitionRecord(d.name), ToJson(d)));
    StartLocked(d);
    return absl::OkStatus();
  }

  absl::StatusOr<ConnectorDefinition> Get(std::string_view name) override {
    absl::MutexLock l(&mu_);
    auto it = running_.find(std::string(name));
    if (it == running_.end()) return NotFound(name);
    return it->second.def;
  }

  std::vector<ConnectorDefinition> List() override {
    absl::MutexLock l(&mu_);
    std::vector<ConnectorDefinition> out;
    for (const auto& [name, c] : running_) out.push_back(c.def);
    return out;
  }

  absl::Status Remove(std::string_view name) override {
    absl::MutexLock l(&mu_);
    auto it = running_.find(std::string(name));
    if (it == running_.end()) return NotFound(name);
    running_.erase(it);
    CAIRN_RETURN_IF_ERROR(store_->DeleteSideRecords(DefinitionRecord(name)).status());
    return store_->DeleteSideRecords(ResumePrefix(name)).status();
  }

  absl::StatusOr<ConnectorStatus> Status(std::string_view name) override {
    absl::MutexLock l(&mu_);
    auto it = running_.find(std::string(name));
    if (it == running_.end()) return NotFound(name);
    return StatusOf(it->second);
  }

  std::vector<ConnectorStatus> StatusAll() override {
    absl::MutexLock l(&mu_);
    std::vector<ConnectorStatus> out;
    for (const auto& [name, c] : running_) out.push_back(StatusOf(c));
    return out;
  }

  absl::Status PutSink(const SinkDefinition& d) override {
    CAIRN_RETURN_IF_ERROR(CheckSink(d));
    absl::MutexLock l(&mu_);
    if (stopped_) return absl::UnavailableError("sinks are stopping");
    sinks_.erase(d.name);  // stops the old one; its checkpoint stays
    CAIRN_RETURN_IF_ERROR(store_->PutSideRecord(SinkRecord(d.name), SinkToJson(d)));
    auto& sink = sinks_[d.name] = std::make_unique<Sink>(store_, d);
    sink->Start();
    sink_defs_[d.name] = d;
    return absl::OkStatus();
  }

  absl::StatusOr<SinkDefinition> GetSink(std::string_view name) override {
    absl::MutexLock l(&mu_);
    CAIRN_RETURN_IF_ERROR(FindSink(name));
    return sink_defs_[std::string(name)];
  }

  std::vector<SinkDefinition> ListSinks() override {
    absl::MutexLock l(&mu_);
    std::vector<SinkDefinition> out;
    for (const auto& [name, d] : sink_defs_) out.push_back(d);
    return out;
  }

  absl::Status RemoveSink(std::string_view name) override {
    absl::MutexLock l(&mu_);
    CAIRN_RETURN_IF_ERROR(FindSink(name));
    sinks_.erase(std::string(name));
    sink_defs_.erase(std::string(name));
    for (const std::string& prefix :
         {SinkRecord(name), SinkPosRecord(name), DeadLetterPrefix(name)}) {
      CAIRN_RETURN_IF_ERROR(store_->DeleteSideRecords(prefix).status());
    }
    return absl::OkStatus();
  }

  absl::StatusOr<SinkStatus> GetSinkStatus(std::string_view name) override {
    absl::MutexLock l(&mu_);
    CAIRN_RETURN_IF_ERROR(FindSink(name));
    return sinks_[std::string(name)]->status();
  }

  std::vector<SinkStatus> SinkStatusAll() override {
    absl::MutexLock l(&mu_);
    std::vector<SinkStatus> out;
    for (const auto& [name, s] : sinks_) out.push_back(s->status());
    return out;
  }

  absl::StatusOr<std::vector<DeadLetter>> ListDeadLetters(std::string_view name) override {
    {
      absl::MutexLock l(&mu_);
      CAIRN_RETURN_IF_ERROR(FindSink(name));
    }
    return ReadDeadLetters(store_, name);
  }

  absl::StatusOr<size_t> ReplayDeadLetters(std::string_view name) override {
    SinkDefinition d;
    {
      absl::MutexLock l(&mu_);
      CAIRN_RETURN_IF_ERROR(FindSink(name));
      d = sink_defs_[std::string(name)];
    }
    absl::MutexLock one_at_a_time(&replay_mu_);
    auto replayed = connectors::ReplayDeadLetters(store_, d, &stopping_);
    if (replayed.ok()) {
      absl::MutexLock l(&mu_);
      if (auto it = sinks_.find(std::string(name)); it != sinks_.end()) {
        it->second->ForgetDeadLetters(*replayed);
      }
    }
    return replayed;
  }

  void Stop() override {
    stopping_ = true;
    absl::MutexLock l(&mu_);
    stopped_ = true;
    // All asked first, then waited for: they end together.
    for (auto& [name, c] : running_) {
      for (auto& r : c.readers) r->RequestStop();
    }
    for (auto& [name, s] : sinks_) s->RequestStop();
    for (auto& [name, c] : running_) {
      for (auto& r : c.readers) r->Stop();
    }
    for (auto& [name, s] : sinks_) s->Stop();
  }

 private:
  struct Running {
    ConnectorDefinition def;
    std::vector<std::unique_ptr<Reader>> readers;
  };

  absl::Status FindSink(std::string_view name) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (sinks_.count(std::string(name))) return absl::OkStatus();
    return absl::NotFoundError(absl::StrCat("no sink \"", Excerpt(name), "\""));
  }

  static absl::Status NotFound(std::string_view name) {
    return absl::NotFoundError(absl::StrCat("no connector \"", Excerpt(name), "\""));
  }

  static ConnectorStatus StatusOf(const Running& c) {
    ConnectorStatus s{.name = c.def.name, .state = "stopped"};
    int worst = Rank(s.state);
    for (const auto& r : c.readers) {
      s.urls.push_back(r->status());
      if (int rank = Rank(s.urls.back().state); rank < worst) {
        worst = rank;
        s.state = s.urls.back().state;
      }
    }
    return s;
  }

  void StartLocked(const ConnectorDefinition& d) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    Running& c = running_[d.name];
    c.def = d;
    if (d.type == "nats") {
      c.readers.push_back(std::make_unique<NatsReader>(store_, d));
    } else {
      for (size_t i = 0; i < d.urls.size(); ++i) {
        c.readers.push_back(std::make_unique<SseReader>(store_, d, i));
      }
    }
    for (auto& r : c.readers) r->Start();
  }

  Store* const store_;
  absl::Mutex mu_;
  std::map<std::string, Running> running_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::unique_ptr<Sink>> sinks_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, SinkDefinition> sink_defs_ ABSL_GUARDED_BY(mu_);
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
  std::atomic<bool> stopping_{false};  // ends a replay under way
  absl::Mutex replay_mu_;              // one replay at a time
};

}  // namespace

absl::StatusOr<std::unique_ptr<Connectors>> Connectors::Start(Store* store) {
  static std::once_flag curl_init;
  std::call_once(curl_init, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  auto c = std::make_unique<ConnectorsImpl>(store);
  CAIRN_RETURN_IF_ERROR(c->Load());
  return c;
}

}  // namespace cairn::connectors
