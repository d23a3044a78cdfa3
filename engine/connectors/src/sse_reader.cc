// One URL of an `sse` connector (sse_reader.h).
//
// The loop: read the resume record; connect with Last-Event-ID; decode what
// arrives, committing a batch when it holds batch_events events or its
// first event is batch_time old (checked as data arrives and at least once
// a second); when the connection ends, commit what was read, back off
// (exponential from initial_backoff, or the stream's `retry:`, with jitter,
// capped at max_backoff; reset by a connection that delivered an event) and
// connect again. A commit is the events plus the resume record, in one
// atomic write: after a crash the store holds both or neither, and the
// events after the recorded id are read again (duplicates at worst).
#include "sse_reader.h"

#include <curl/curl.h>

#include <random>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "cairn/status.h"
#include "rapidjson/document.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"

namespace cairn::connectors {
namespace {

// How often a connected URL refreshes its resume record's last_seen when no
// event arrives, so a quiet feed is not taken for an absence.
constexpr absl::Duration kHeartbeat = absl::Seconds(30);

}  // namespace

std::string ResumeJson(std::string_view url, std::string_view id, int64_t seen) {
  rapidjson::StringBuffer buf;
  rapidjson::Writer<rapidjson::StringBuffer> w(buf);
  w.StartObject();
  w.Key("url");
  w.String(url.data(), static_cast<rapidjson::SizeType>(url.size()));
  w.Key("last_event_id");
  w.String(id.data(), static_cast<rapidjson::SizeType>(id.size()));
  w.Key("last_seen_micros");
  w.Int64(seen);
  w.EndObject();
  return std::string(buf.GetString(), buf.GetSize());
}

std::string DefinitionRecord(std::string_view name) {
  return absl::StrCat("connector/def/", AbslView(name), "/");
}
std::string ResumePrefix(std::string_view name) {
  return absl::StrCat("connector/resume/", AbslView(name), "/");
}
std::string ResumeRecord(std::string_view name, std::string_view url) {
  uint64_t h = 14695981039346656037ull;  // FNV-1a
  for (unsigned char c : url) h = (h ^ c) * 1099511628211ull;
  return absl::StrCat(ResumePrefix(name), absl::Hex(h, absl::kZeroPad16));
}

SseReader::SseReader(Store* store, ConnectorDefinition def, size_t url_index)
    : store_(store),
      def_(std::move(def)),
      index_(url_index),
      url_(def_.urls[url_index]),
      record_(ResumeRecord(def_.name, url_)) {
  status_.url = url_;
  status_.state = "connecting";
}

SseReader::~SseReader() { Stop(); }

void SseReader::Start() {
  thread_ = std::thread([this] { Run(); });
}

void SseReader::RequestStop() {
  absl::MutexLock l(&mu_);
  stopping_ = true;
  wake_.SignalAll();
}

void SseReader::Stop() {
  RequestStop();
  if (thread_.joinable()) thread_.join();
}

UrlStatus SseReader::status() const {
  absl::MutexLock l(&mu_);
  return status_;
}

void SseReader::SetState(std::string_view state) {
  absl::MutexLock l(&mu_);
  status_.state = std::string(state);
}

void SseReader::Error(std::string_view message) {
  absl::MutexLock l(&mu_);
  status_.last_error = std::string(message);
  status_.last_error_unix_micros = absl::ToUnixMicros(absl::Now());
}

void SseReader::Sleep(absl::Duration d) {
  absl::MutexLock l(&mu_);
  absl::Time until = absl::Now() + d;
  while (!stopping_ && absl::Now() < until) wake_.WaitWithDeadline(&mu_, until);
}

void SseReader::Run() {
  // The source decides how records decode (its key fields, map, schemas).
  if (auto source = store_->GetSource(def_.source); source.ok()) {
    source_ = *std::move(source);
  } else {
    Error(absl::StrCat("source ", def_.source, ": ", source.status().ToString()));
    SetState("failed");
    return;
  }
  auto rec = store_->GetSideRecord(record_);
  if (!rec.ok() && !absl::IsNotFound(rec.status())) {
    // Reading from the start instead would lose nothing, but it is not what
    // the store says: fail visibly.
    Error(absl::StrCat("read the resume point: ", rec.status().ToString()));
    SetState("failed");
    return;
  }
  if (rec.ok()) {
    rapidjson::Document doc;
    doc.Parse(rec->data(), rec->size());
    // A record of another URL (the definition changed) does not apply.
    if (doc.IsObject() && doc.HasMember("url") && doc["url"].IsString() &&
        doc["url"].GetString() == url_ && doc.HasMember("last_event_id") &&
        doc["last_event_id"].IsString() && doc.HasMember("last_seen_micros") &&
        doc["last_seen_micros"].IsInt64()) {
      committed_id_ = doc["last_event_id"].GetString();
      last_seen_micros_ = doc["last_seen_micros"].GetInt64();
      absl::MutexLock l(&mu_);
      status_.last_event_id = committed_id_;
    }
  }
  std::mt19937_64 rng(std::random_device{}() ^ index_);
  int attempt = 0;
  while (!stopping_) {
    SetState("connecting");
    End end = Connect();
    // What this connection delivered; a record refused now fails the URL
    // as one refused mid-stream does.
    if (!Commit() && end_ == End::kFailed) end = End::kFailed;
    if (end == End::kFailed) {
      Error(failure_.ToString());
      SetState("failed");
      return;
    }
    if (end == End::kEnded) {
      SetState("ended");
      return;
    }
    if (stopping_) break;
    attempt = streamed_ ? 0 : attempt + 1;
    absl::Duration base = def_.initial_backoff * (1 << std::min(attempt, 16));
    if (retry_millis_ && attempt <= 1) base = absl::Milliseconds(*retry_millis_);
    base = std::min(base, def_.max_backoff);
    absl::Duration wait = base * std::uniform_real_distribution<double>(0.5, 1.5)(rng);
    {
      absl::MutexLock l(&mu_);
      status_.state = "backing-off";
      status_.reconnects++;
    }
    Sleep(std::min(wait, def_.max_backoff));
  }
  SetState("stopped");
}

SseReader::End SseReader::Connect() {
  CURL* h = curl_easy_init();
  if (!h) {
    Error("curl_easy_init failed");
    return End::kDropped;
  }
  curl_ = h;
  decoder_ = std::make_unique<formats::SseDecoder>(source_);
  checked_status_ = streamed_ = gap_ = false;
  end_ = End::kDropped;
  failure_ = absl::OkStatus();
  last_byte_ = absl::Now();
  curl_slist* headers = nullptr;
  headers = curl_slist_append(headers, "Accept: text/event-stream");
  headers = curl_slist_append(headers, "Cache-Control: no-cache");
  for (const auto& [k, v] : def_.headers) {
    headers = curl_slist_append(headers, absl::StrCat(k, ": ", v).c_str());
  }
  if (!committed_id_.empty()) {
    headers = curl_slist_append(headers, absl::StrCat("Last-Event-ID: ", committed_id_).c_str());
  }
  curl_easy_setopt(h, CURLOPT_URL, url_.c_str());
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, &SseReader::OnData);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, this);
  curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, &SseReader::OnProgress);
  curl_easy_setopt(h, CURLOPT_XFERINFODATA, this);
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
  curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt(h, CURLOPT_MAXREDIRS, 5L);
  curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
  // Headers (credentials) never follow a redirect from https to http.
  curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR,
                   absl::StartsWith(url_, "https://") ? "https" : "http,https");
  curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
  curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
  if (!def_.ca_file.empty()) curl_easy_setopt(h, CURLOPT_CAINFO, def_.ca_file.c_str());
  CURLcode rc = curl_easy_perform(h);
  long http = 0;  // NOLINT(runtime/int)
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &http);
  curl_easy_cleanup(h);
  curl_slist_free_all(headers);
  curl_ = nullptr;
  if (end_ != End::kDropped) return end_;
  if (!checked_status_ && http != 0 && http != 200) {  // answered without a body
    Error(absl::StrCat(url_, ": HTTP ", http, http == 204 ? ", the server ended the feed" : ""));
    return http == 204 ? End::kEnded : End::kDropped;
  }
  if (!stopping_) {
    if (rc != CURLE_OK && rc != CURLE_ABORTED_BY_CALLBACK && rc != CURLE_WRITE_ERROR) {
      Error(absl::StrCat(url_, ": ", curl_easy_strerror(rc)));
    } else if (rc == CURLE_OK) {
      Error(absl::StrCat(url_, ": the server closed the stream"));
    }
  }
  return End::kDropped;
}

size_t SseReader::OnData(char* data, size_t size, size_t n, void* self) {
  auto* r = static_cast<SseReader*>(self);
  return r->Consume(std::string_view(data, size * n)) ? size * n : 0;
}

int SseReader::OnProgress(void* self, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  auto* r = static_cast<SseReader*>(self);
  if (r->stopping_) return 1;
  if (absl::Now() - r->last_byte_ > r->def_.idle_timeout) {
    r->Error(absl::StrCat(r->url_, ": no data for ", absl::FormatDuration(r->def_.idle_timeout)));
    return 1;
  }
  if (!r->MaybeCommit()) return 1;
  if (r->checked_status_) r->Heartbeat();
  return 0;
}

bool SseReader::Consume(std::string_view chunk) {
  last_byte_ = absl::Now();
  if (!checked_status_) {
    checked_status_ = true;
    long http = 0;  // NOLINT(runtime/int)
    curl_easy_getinfo(static_cast<CURL*>(curl_), CURLINFO_RESPONSE_CODE, &http);
    if (http == 204) {  // the SSE spec: do not reconnect
      Error(absl::StrCat(url_, ": HTTP 204, the server ended the feed"));
      end_ = End::kEnded;
      return false;
    }
    if (http != 200) {
      Error(absl::StrCat(url_, ": HTTP ", http));
      return false;
    }
    // Connected: was it away longer than the feed keeps events?
    int64_t now = absl::ToUnixMicros(absl::Now());
    if (def_.retention > absl::ZeroDuration() && last_seen_micros_ > 0 &&
        absl::Microseconds(now - last_seen_micros_) > def_.retention) {
      gap_ = true;
      absl::MutexLock l(&mu_);
      status_.gaps++;
      status_.last_error = absl::StrCat(
          url_, ": away ", absl::FormatDuration(absl::Microseconds(now - last_seen_micros_)),
          ", longer than the feed's retention (", absl::FormatDuration(def_.retention),
          "): events may be missing");
      status_.last_error_unix_micros = now;
    }
    SetState(gap_ ? "gap" : "streaming");
    last_seen_write_ = absl::InfinitePast();
    Heartbeat();
  }
  // Line by line, so that under on_error skip decoding resumes after the
  // line that failed (the next event starts clean).
  std::vector<Event> events;
  while (!chunk.empty()) {
    size_t end = chunk.find('\n');
    std::string_view piece =
        chunk.substr(0, end == std::string_view::npos ? chunk.size() : end + 1);
    chunk.remove_prefix(piece.size());
    absl::Status s = decoder_->Feed(piece, &events);
    if (!s.ok()) {
      if (def_.on_error == OnError::kStop) {
        failure_ = absl::InvalidArgumentError(absl::StrCat(url_, ": ", s.message()));
        end_ = End::kFailed;
        Decoded(&events);
        return false;
      }
      {
        absl::MutexLock l(&mu_);
        status_.skipped++;
      }
      Error(absl::StrCat(url_, ": skipped: ", s.message()));
      decoder_ = std::make_unique<formats::SseDecoder>(source_);
    }
    if (auto retry = decoder_->retry_millis()) retry_millis_ = retry;
  }
  return Decoded(&events);
}

bool SseReader::Decoded(std::vector<Event>* events) {
  for (Event& e : *events) {
    if (pending_.empty()) first_pending_ = absl::Now();
    if (!e.event_id.empty()) pending_id_ = e.event_id;
    pending_.push_back(std::move(e));
    if (pending_.size() >= def_.batch_events && !Commit()) return false;
  }
  events->clear();
  return MaybeCommit();
}

bool SseReader::MaybeCommit() {
  if (pending_.empty() || absl::Now() - first_pending_ < def_.batch_time) return true;
  return Commit();
}

void SseReader::Heartbeat() {
  absl::Time now = absl::Now();
  if (now - last_seen_write_ < kHeartbeat) return;
  last_seen_write_ = now;
  last_seen_micros_ = absl::ToUnixMicros(now);
  absl::Status s =
      store_->PutSideRecord(record_, ResumeJson(url_, committed_id_, last_seen_micros_));
  if (!s.ok()) Error(absl::StrCat("record the resume point: ", s.ToString()));
}

bool SseReader::Commit() {
  if (pending_.empty()) return true;
  std::string id = pending_id_.empty() ? committed_id_ : pending_id_;
  int64_t now = absl::ToUnixMicros(absl::Now());
  IngestOptions o{.durable = def_.durable};
  o.side_records.push_back({record_, ResumeJson(url_, id, now)});
  Position last = pending_.back().position;
  size_t n = pending_.size();
  std::vector<Event> events = std::move(pending_);
  pending_.clear();
  auto r = store_->Ingest(events, o);
  uint64_t skipped = 0;
  if (!r.ok() && Refused(r.status()) && def_.on_error == OnError::kSkip) {
    // One at a time: the events the store rejects are skipped, the rest
    // applied; then the resume point.
    Error(absl::StrCat(url_, ": skipped: ", r.status().message()));
    IngestResult sum;
    absl::Status failed;
    for (Event& e : events) {
      auto one = store_->Ingest({e}, {.durable = def_.durable});
      if (one.ok()) {
        sum.applied += one->applied;
        sum.duplicates += one->duplicates;
        sum.conflicts += one->conflicts;
      } else if (Refused(one.status())) {
        ++skipped;
      } else {
        failed = one.status();
        break;
      }
    }
    if (failed.ok()) failed = store_->PutSideRecord(record_, ResumeJson(url_, id, now));
    r = failed.ok() ? absl::StatusOr<IngestResult>(sum) : absl::StatusOr<IngestResult>(failed);
  }
  if (!r.ok()) {
    if (Refused(r.status())) {
      failure_ = absl::Status(r.status().code(), absl::StrCat(url_, ": ", r.status().message()));
      end_ = End::kFailed;
    } else {
      // The store could not take it now (a full disk, ...): read it again.
      Error(absl::StrCat(url_, ": commit: ", r.status().ToString()));
    }
    pending_id_.clear();
    return false;
  }
  committed_id_ = id;
  pending_id_.clear();
  last_seen_micros_ = now;
  last_seen_write_ = absl::Now();
  streamed_ = true;
  absl::MutexLock l(&mu_);
  status_.last_event_id = id;
  status_.last_position = last;
  status_.last_commit_unix_micros = now;
  status_.events += n - skipped;
  status_.applied += r->applied;
  status_.duplicates += r->duplicates;
  status_.skipped += skipped;
  return true;
}

}  // namespace cairn::connectors
