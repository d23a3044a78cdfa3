// The connector manager (cairn/connectors.h): definitions kept as side
// records (DefinitionRecord), one SseReader per URL of each running
// connector.
#include "cairn/connectors.h"

#include <curl/curl.h>

#include <map>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "cairn/status.h"
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
    return absl::OkStatus();
  }

  absl::Status Put(const ConnectorDefinition& d) override {
    CAIRN_RETURN_IF_ERROR(Check(d));
    CAIRN_ASSIGN_OR_RETURN(SourceDefinition source, store_->GetSource(d.source));
    if (source.format != "sse-feed") {
      return absl::FailedPreconditionError(
          absl::StrCat("connector ", d.name, ": source ", d.source, " has format ", source.format,
                       "; an sse connector reads a source of format sse-feed"));
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

  void Stop() override {
    absl::MutexLock l(&mu_);
    stopped_ = true;
    for (auto& [name, c] : running_) {
      for (auto& r : c.readers) r->Stop();
    }
  }

 private:
  struct Running {
    ConnectorDefinition def;
    std::vector<std::unique_ptr<SseReader>> readers;
  };

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
    for (size_t i = 0; i < d.urls.size(); ++i) {
      c.readers.push_back(std::make_unique<SseReader>(store_, d, i));
      c.readers.back()->Start();
    }
  }

  Store* const store_;
  absl::Mutex mu_;
  std::map<std::string, Running> running_ ABSL_GUARDED_BY(mu_);
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
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
