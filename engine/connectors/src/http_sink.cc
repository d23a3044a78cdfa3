// An `http` sink (http_sink.h) and the message shapes (RenderChange).
#include "http_sink.h"

#include <curl/curl.h>

#include <cstdio>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "cairn/status.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"

namespace cairn::connectors {
namespace {

constexpr size_t kMaxResponse = 1000;

using Writer = rapidjson::Writer<rapidjson::StringBuffer>;

void Str(Writer& w, const char* k, std::string_view v) {
  w.Key(k);
  w.String(v.data(), static_cast<rapidjson::SizeType>(v.size()));
}

// A stored document or key (JSON text) as a JSON value; empty is null.
void Json(Writer& w, const char* k, std::string_view json) {
  w.Key(k);
  if (json.empty()) {
    w.Null();
  } else {
    w.RawValue(json.data(), json.size(), rapidjson::kObjectType);
  }
}

std::string Iso(uint64_t micros) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ",
                          absl::FromUnixMicros(static_cast<int64_t>(micros)), absl::UTCTimeZone());
}

void PositionOf(Writer& w, const Change& c) {
  w.Key("position");
  w.StartObject();
  w.Key("timestamp");
  w.Uint64(c.position.timestamp);
  w.Key("tick");
  w.Uint64(c.position.tick);
  w.EndObject();
}

void Provenance(Writer& w, std::string_view sink, const Change& c) {
  w.StartObject();
  Str(w, "sink", sink);
  Str(w, "source", c.source);
  PositionOf(w, c);
  w.Key("seq");
  w.Uint64(c.seq);
  w.EndObject();
}

}  // namespace

std::string RenderChange(std::string_view shape, std::string_view sink, const Change& c) {
  rapidjson::StringBuffer buf;
  Writer w(buf);
  w.StartObject();
  if (shape == "debezium") {
    // Debezium's envelope: op c/u/d, before, after, a source block (here
    // cairn's provenance), ts_ms (when cairn sent it).
    Str(w, "op", c.before.empty() ? "c" : c.after.empty() ? "d" : "u");
    Json(w, "before", c.before);
    Json(w, "after", c.after);
    w.Key("source");
    w.StartObject();
    Str(w, "connector", "cairn");
    Str(w, "name", sink);
    Str(w, "collection", c.collection);
    Json(w, "key", c.key);
    Str(w, "cairn_source", c.source);
    w.Key("ts_us");
    w.Uint64(c.position.timestamp);
    w.Key("tick");
    w.Uint64(c.position.tick);
    w.Key("seq");
    w.Uint64(c.seq);
    w.EndObject();
    w.Key("ts_ms");
    w.Int64(absl::ToUnixMillis(absl::Now()));
  } else if (shape == "mia-projection-update") {
    // Mia-Platform Fast Data's Projection Update, with the triggering event's
    // provenance where Mia has __internal__kafkaInfo.
    Str(w, "operationType", c.before.empty() ? "INSERT" : c.after.empty() ? "DELETE" : "UPDATE");
    Str(w, "operationTimestamp", Iso(c.position.timestamp));
    Str(w, "projectionName", c.collection);
    Str(w, "documentId", c.key);
    Json(w, "key", c.key);
    Json(w, "before", c.before);
    Json(w, "after", c.after);
    w.Key("__internal__cairnInfo");
    Provenance(w, sink, c);
  } else {  // cairn: the change record
    Str(w, "id", absl::StrCat(AbslView(sink), "-", c.seq));
    w.Key("seq");
    w.Uint64(c.seq);
    Str(w, "collection", c.collection);
    Json(w, "key", c.key);
    Str(w, "op", OpName(c.op));
    Json(w, "before", c.before);
    Json(w, "after", c.after);
    PositionOf(w, c);
    Str(w, "source", c.source);
  }
  w.EndObject();
  return std::string(buf.GetString(), buf.GetSize());
}

std::string SinkRecord(std::string_view name) {
  return absl::StrCat("sink/def/", AbslView(name), "/");
}
std::string SinkPosRecord(std::string_view name) {
  return absl::StrCat("sink/pos/", AbslView(name), "/");
}
std::string DeadLetterPrefix(std::string_view name) {
  return absl::StrCat("sink/dead/", AbslView(name), "/");
}

namespace {

size_t Collect(char* data, size_t size, size_t n, void* out) {
  auto* s = static_cast<std::string*>(out);
  size_t len = size * n;
  if (s->size() < kMaxResponse) s->append(data, std::min(len, kMaxResponse - s->size()));
  return len;
}

int Abort(void* flag, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  auto* stop = static_cast<const std::atomic<bool>*>(flag);
  return stop && stop->load() ? 1 : 0;
}

}  // namespace

PostResult Post(const SinkDefinition& d, const std::string& body, const std::atomic<bool>* abort) {
  PostResult r;
  CURL* h = curl_easy_init();
  if (!h) {
    r.error = "curl_easy_init failed";
    return r;
  }
  curl_slist* headers = curl_slist_append(nullptr, "Content-Type: application/json");
  headers = curl_slist_append(headers, absl::StrCat("X-Cairn-Sink: ", d.name).c_str());
  for (const auto& [k, v] : d.headers) {
    headers = curl_slist_append(headers, absl::StrCat(k, ": ", v).c_str());
  }
  curl_easy_setopt(h, CURLOPT_URL, d.url.c_str());
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(h, CURLOPT_POSTFIELDS, body.data());
  curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, &Collect);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &r.response);
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS,
                   static_cast<long>(  // NOLINT(runtime/int)
                       absl::ToInt64Milliseconds(d.timeout)));
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
  curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, &Abort);
  curl_easy_setopt(h, CURLOPT_XFERINFODATA, abort);
  curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
  curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
  if (!d.ca_file.empty()) curl_easy_setopt(h, CURLOPT_CAINFO, d.ca_file.c_str());
  CURLcode rc = curl_easy_perform(h);
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r.http);
  curl_easy_cleanup(h);
  curl_slist_free_all(headers);
  if (rc != CURLE_OK) {
    r.error = absl::StrCat(d.url, ": ", curl_easy_strerror(rc));
    return r;
  }
  if (r.http >= 200 && r.http < 300) {
    r.kind = PostResult::Kind::kDelivered;
  } else {
    r.error = absl::StrCat(d.url, ": HTTP ", r.http);
    bool retry = r.http == 408 || r.http == 429 || r.http >= 500 || r.http < 400;
    r.kind = retry ? PostResult::Kind::kRetry : PostResult::Kind::kRejected;
  }
  return r;
}

HttpSink::HttpSink(Store* store, SinkDefinition def) : store_(store), def_(std::move(def)) {
  status_.name = def_.name;
  status_.state = "delivering";
  status_.checkpoint_seq = def_.from_seq;
}

HttpSink::~HttpSink() { Stop(); }

void HttpSink::Start() {
  thread_ = std::thread([this] { Run(); });
}

void HttpSink::RequestStop() {
  absl::MutexLock l(&mu_);
  stopping_ = true;
  wake_.SignalAll();
}

void HttpSink::Stop() {
  RequestStop();
  if (thread_.joinable()) thread_.join();
}

SinkStatus HttpSink::status() const {
  absl::MutexLock l(&mu_);
  SinkStatus s = status_;
  uint64_t last = store_->LastSeq();
  s.lag_seqs = last > s.checkpoint_seq ? last - s.checkpoint_seq : 0;
  s.lag_seconds = caught_up_ ? 0 : absl::ToDoubleSeconds(absl::Now() - caught_up_at_);
  if (auto dead = store_->ListSideRecords(DeadLetterPrefix(def_.name)); dead.ok()) {
    s.dead_letters = dead->size();
  }
  return s;
}

void HttpSink::Error(std::string_view message) {
  absl::MutexLock l(&mu_);
  status_.last_error = std::string(message);
  status_.last_error_unix_micros = absl::ToUnixMicros(absl::Now());
}

void HttpSink::Sleep(absl::Duration d) {
  absl::MutexLock l(&mu_);
  absl::Time until = absl::Now() + d;
  while (!stopping_ && absl::Now() < until) wake_.WaitWithDeadline(&mu_, until);
}

void HttpSink::Advance(uint64_t seq) {
  absl::Status s = store_->PutSideRecord(SinkPosRecord(def_.name), absl::StrCat(seq));
  if (!s.ok()) Error(absl::StrCat("record the checkpoint: ", s.ToString()));
  absl::MutexLock l(&mu_);
  status_.checkpoint_seq = seq;
}

void HttpSink::Run() {
  uint64_t pos = def_.from_seq;
  if (auto rec = store_->GetSideRecord(SinkPosRecord(def_.name)); rec.ok()) {
    uint64_t v = 0;
    if (absl::SimpleAtoi(*rec, &v)) pos = v;
  }
  {
    absl::MutexLock l(&mu_);
    status_.checkpoint_seq = pos;
  }
  absl::Duration backoff = def_.initial_backoff;
  while (!stopping_) {
    SubscribeOptions o{
        .filter = def_.filter, .start = SubscribeOptions::Start::kFromSeq, .from_seq = pos};
    auto sub = store_->Subscribe(o);
    if (!sub.ok()) {
      Error(sub.status().ToString());
      if (absl::IsOutOfRange(sub.status())) {
        // Changes it has not delivered are gone: it stops, and says so.
        absl::MutexLock l(&mu_);
        status_.state = "out_of_range";
        return;
      }
      Sleep(backoff);
      backoff = std::min(backoff * 2, def_.max_backoff);
      continue;
    }
    std::vector<Change> batch;
    absl::Time last_advance = absl::InfinitePast();
    while (!stopping_) {
      SubscriptionItem item;
      auto got =
          (*sub)->Next(batch.empty() ? absl::Milliseconds(200) : absl::Milliseconds(20), &item);
      if (!got.ok()) {
        Error(got.status().ToString());
        if (absl::IsOutOfRange(got.status())) {
          absl::MutexLock l(&mu_);
          status_.state = "out_of_range";
          return;
        }
        break;  // subscribe again from the checkpoint
      }
      if (*got && item.kind == SubscriptionItem::Kind::kChange) {
        batch.push_back(std::move(item.change));
        if (batch.size() < def_.batch_changes) continue;
      }
      if (batch.empty()) {
        // Nothing to send: every change up to the subscription's position
        // that the filter takes was delivered, so the checkpoint moves there
        // (at most once a second: a synced write), and a sink of a quiet
        // collection does not fall behind the retention horizon.
        if (uint64_t at = (*sub)->position();
            at > pos && absl::Now() - last_advance >= absl::Seconds(1)) {
          Advance(at);
          pos = at;
          last_advance = absl::Now();
        }
        if (!*got || item.kind == SubscriptionItem::Kind::kCaughtUp) {
          absl::MutexLock l(&mu_);
          if (!caught_up_) caught_up_at_ = absl::Now();
          caught_up_ = true;
          status_.state = "caught-up";
        }
        continue;
      }
      {
        absl::MutexLock l(&mu_);
        if (caught_up_) caught_up_at_ = absl::Now();
        caught_up_ = false;
        status_.state = "delivering";
      }
      if (!Deliver(batch)) return;  // stopping: the batch is sent again next time
      pos = batch.back().seq;
      batch.clear();
    }
  }
  absl::MutexLock l(&mu_);
  status_.state = "stopped";
}

bool HttpSink::Deliver(const std::vector<Change>& batch) {
  std::string body = "[";
  for (size_t i = 0; i < batch.size(); ++i) {
    if (i) body += ",";
    body += RenderChange(def_.shape, def_.name, batch[i]);
  }
  body += "]";
  absl::Duration backoff = def_.initial_backoff;
  while (!stopping_) {
    PostResult r = Post(def_, body, &stopping_);
    if (r.kind == PostResult::Kind::kDelivered) {
      Advance(batch.back().seq);
      absl::MutexLock l(&mu_);
      status_.delivered += batch.size();
      if (status_.state == "backing-off") status_.state = "delivering";
      return true;
    }
    if (r.kind == PostResult::Kind::kRejected) {
      if (batch.size() > 1) {  // find the messages it refuses, one at a time
        for (const Change& c : batch) {
          if (!Deliver({c})) return false;
        }
        return true;
      }
      Error(absl::StrCat(r.error, ": message of seq ", batch[0].seq, " kept as a dead letter"));
      char seq[24];
      std::snprintf(seq, sizeof(seq), "%020llu", static_cast<unsigned long long>(batch[0].seq));
      std::string message = RenderChange(def_.shape, def_.name, batch[0]);
      absl::Status s;
      for (bool with_message : {true, false}) {
        rapidjson::StringBuffer buf;
        Writer w(buf);
        w.StartObject();
        w.Key("seq");
        w.Uint64(batch[0].seq);
        w.Key("http_status");
        w.Int64(r.http);
        Str(w, "response", r.response);
        if (with_message) {
          Str(w, "message", message);
        } else {  // past a side record's bound: the letter says so
          w.Key("message_bytes_omitted");
          w.Uint64(message.size());
        }
        w.Key("unix_micros");
        w.Int64(absl::ToUnixMicros(absl::Now()));
        w.EndObject();
        s = store_->PutSideRecord(absl::StrCat(DeadLetterPrefix(def_.name), seq),
                                  std::string_view(buf.GetString(), buf.GetSize()));
        if (!absl::IsInvalidArgument(s)) break;
      }
      if (!s.ok()) {  // not kept: not skipped either
        Error(absl::StrCat("keep a dead letter: ", s.ToString()));
        Sleep(backoff);
        continue;
      }
      Advance(batch[0].seq);
      return true;
    }
    Error(r.error);
    {
      absl::MutexLock l(&mu_);
      status_.retries++;
      status_.state = "backing-off";
    }
    Sleep(backoff);
    backoff = std::min(backoff * 2, def_.max_backoff);
  }
  return false;
}

}  // namespace cairn::connectors
