// The two destinations (destination.h): an HTTP webhook (libcurl) and NATS
// JetStream (libnats).
#include <curl/curl.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "cairn/status.h"
#include "destination.h"
#include "nats_client.h"

namespace cairn::connectors {
namespace {

constexpr size_t kMaxResponse = 1000;

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

// POSTs a JSON array of the messages (omnia-datapoints: its one message).
class HttpDestination : public Destination {
 public:
  explicit HttpDestination(SinkDefinition d) : d_(std::move(d)) {}

  SendResult Send(const std::vector<Message>& messages, const std::atomic<bool>* abort) override {
    if (messages.empty()) return {.kind = SendResult::Kind::kDelivered};
    std::string body;
    if (d_.shape == "omnia-datapoints") {
      body = messages[0].body;
    } else {
      body = "[";
      for (size_t i = 0; i < messages.size(); ++i) {
        if (i) body += ",";
        body += messages[i].body;
      }
      body += "]";
    }
    return Post(body, abort);
  }

 private:
  SendResult Post(const std::string& body, const std::atomic<bool>* abort) {
    SendResult r;
    CURL* h = curl_easy_init();
    if (!h) {
      r.error = "curl_easy_init failed";
      return r;
    }
    curl_slist* headers = curl_slist_append(nullptr, "Content-Type: application/json");
    headers = curl_slist_append(headers, absl::StrCat("X-Cairn-Sink: ", d_.name).c_str());
    for (const auto& [k, v] : d_.headers) {
      headers = curl_slist_append(headers, absl::StrCat(k, ": ", v).c_str());
    }
    curl_easy_setopt(h, CURLOPT_URL, d_.url.c_str());
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body.data());
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, &Collect);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &r.response);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS,
                     static_cast<long>(  // NOLINT(runtime/int)
                         absl::ToInt64Milliseconds(d_.timeout)));
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, &Abort);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, abort);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
    if (!d_.ca_file.empty()) curl_easy_setopt(h, CURLOPT_CAINFO, d_.ca_file.c_str());
    CURLcode rc = curl_easy_perform(h);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r.http);
    curl_easy_cleanup(h);
    curl_slist_free_all(headers);
    if (rc != CURLE_OK) {
      r.error = absl::StrCat(d_.url, ": ", curl_easy_strerror(rc));
      return r;
    }
    if (r.http >= 200 && r.http < 300) {
      r.kind = SendResult::Kind::kDelivered;
    } else {
      r.error = absl::StrCat(d_.url, ": HTTP ", r.http);
      bool retry = r.http == 408 || r.http == 429 || r.http >= 500 || r.http < 400;
      r.kind = retry ? SendResult::Kind::kRetry : SendResult::Kind::kRejected;
    }
    return r;
  }

  const SinkDefinition d_;
};

// JetStream's "message size exceeds maximum allowed": the one refusal that
// sending again cannot cure.
constexpr int kJsMessageTooLarge = 10054;

// Publishes each message asynchronously with its Nats-Msg-Id, then waits
// for every acknowledgment (at most the sink's timeout). An error or a
// missing ack sends the batch again; JetStream's duplicate window drops
// what it already stored.
class NatsDestination : public Destination {
 public:
  explicit NatsDestination(SinkDefinition d) : d_(std::move(d)) {
    servers_ = absl::StrSplit(d_.url, ',');
  }

  SendResult Send(const std::vector<Message>& messages, const std::atomic<bool>*) override {
    SendResult r;
    if (messages.empty()) return {.kind = SendResult::Kind::kDelivered};
    if (!client_) {
      jsOptions jo;
      jsOptions_Init(&jo);
      jo.Wait = absl::ToInt64Milliseconds(d_.timeout);
      jo.PublishAsync.MaxPending = 4096;
      jo.PublishAsync.ErrHandler = &NatsDestination::OnError;
      jo.PublishAsync.ErrHandlerClosure = this;
      auto client = std::make_unique<NatsClient>();
      if (absl::Status s =
              client->Connect(servers_, d_.ca_file, absl::StrCat("cairn sink ", d_.name), &jo);
          !s.ok()) {
        r.error = std::string(s.message());
        return r;
      }
      client_ = std::move(client);
    }
    {
      absl::MutexLock l(&mu_);
      errors_ = 0;
      too_large_ = false;
      last_error_.clear();
    }
    for (const Message& m : messages) {
      natsMsg* msg = nullptr;
      natsStatus s = natsMsg_Create(&msg, m.subject.c_str(), nullptr, m.body.data(),
                                    static_cast<int>(m.body.size()));
      if (s == NATS_OK) s = natsMsgHeader_Set(msg, "Nats-Msg-Id", m.id.c_str());
      if (s == NATS_OK) s = js_PublishMsgAsync(client_->js(), &msg, nullptr);
      natsMsg_Destroy(msg);  // no-op when the library took it
      if (s != NATS_OK) {
        r.error = absl::StrCat(d_.url, ": publish ", m.id, " to ", m.subject, ": ", NatsError(s));
        if (s == NATS_MAX_PAYLOAD || s == NATS_INVALID_SUBJECT) {
          r.kind = SendResult::Kind::kRejected;
          r.response = NatsError(s);
        }
        Drain();
        return r;
      }
    }
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = absl::ToInt64Milliseconds(d_.timeout);
    natsStatus s = js_PublishAsyncComplete(client_->js(), &po);
    if (s != NATS_OK) {
      r.error = absl::StrCat(d_.url, ": waiting for JetStream's acknowledgments: ", NatsError(s));
      Drain();
      return r;
    }
    absl::MutexLock l(&mu_);
    if (errors_ > 0) {
      r.error = absl::StrCat(d_.url, ": ", errors_, " of ", messages.size(),
                             " messages refused: ", last_error_);
      if (too_large_) {
        r.kind = SendResult::Kind::kRejected;
        r.response = last_error_;
      }
      return r;
    }
    r.kind = SendResult::Kind::kDelivered;
    return r;
  }

 private:
  // Forgets the publishes still waiting for an ack: the batch is sent again.
  void Drain() {
    natsMsgList pending{};
    if (js_PublishAsyncGetPendingList(&pending, client_->js()) == NATS_OK) {
      natsMsgList_Destroy(&pending);
    }
  }

  static void OnError(jsCtx*, jsPubAckErr* pae, void* self) {
    auto* d = static_cast<NatsDestination*>(self);
    absl::MutexLock l(&d->mu_);
    d->errors_++;
    if (static_cast<int>(pae->ErrCode) == kJsMessageTooLarge) d->too_large_ = true;
    d->last_error_ = pae->ErrText ? pae->ErrText : natsStatus_GetText(pae->Err);
  }

  const SinkDefinition d_;
  std::vector<std::string> servers_;
  absl::Mutex mu_;
  int errors_ ABSL_GUARDED_BY(mu_) = 0;
  bool too_large_ ABSL_GUARDED_BY(mu_) = false;
  std::string last_error_ ABSL_GUARDED_BY(mu_);
  // Last: closed first, so no ack handler runs on what is gone.
  std::unique_ptr<NatsClient> client_;
};

}  // namespace

std::unique_ptr<Destination> MakeDestination(const SinkDefinition& d) {
  if (d.type == "nats") return std::make_unique<NatsDestination>(d);
  return std::make_unique<HttpDestination>(d);
}

}  // namespace cairn::connectors
