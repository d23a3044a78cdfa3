// A `nats` connector (nats_reader.h).
//
// The loop: connect; create the durable pull consumer (or find it: its ack
// floor is where a restarted connector goes on); fetch up to batch_events
// messages, waiting at most batch_time; decode each in the source's format
// (the collection from the subject map when a pattern matches). A second
// thread takes the decoded batches in order (at most kQueue ahead), commits
// each one's events in one atomic write with the resume record (the last
// stream sequence, for status), then acknowledges its messages. A crash between the
// commit and the acks makes JetStream deliver them again after AckWait, and
// the store counts them as duplicates: the ack floor never passes what cairn
// committed. A store that cannot take the batch now (a full disk, ...)
// gets it again: the messages are nak'ed, the connector backs off.
#include "nats_reader.h"

#include <algorithm>
#include <optional>
#include <random>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "cairn/formats.h"
#include "cairn/status.h"
#include "rapidjson/document.h"
#include "sse_reader.h"

namespace cairn::connectors {
namespace {

constexpr int64_t kAckWaitSeconds = 30;
// Batches decoded ahead of the commits.
constexpr size_t kQueue = 2;

}  // namespace

NatsReader::NatsReader(Store* store, ConnectorDefinition def)
    : store_(store),
      def_(std::move(def)),
      consumer_(ConsumerName(def_)),
      label_(absl::StrCat(def_.stream, "/", consumer_)),
      record_(ResumeRecord(def_.name, label_)) {
  status_.url = label_;
  status_.state = "connecting";
}

NatsReader::~NatsReader() { Stop(); }

void NatsReader::Start() {
  if (auto rec = store_->GetSideRecord(record_); rec.ok()) {
    rapidjson::Document doc;
    doc.Parse(rec->data(), rec->size());
    if (doc.IsObject() && doc.HasMember("last_event_id") && doc["last_event_id"].IsString()) {
      absl::MutexLock l(&mu_);
      status_.last_event_id = doc["last_event_id"].GetString();
    }
  }
  thread_ = std::thread([this] { Run(); });
}

void NatsReader::RequestStop() {
  absl::MutexLock l(&mu_);
  stopping_ = true;
  wake_.SignalAll();
}

void NatsReader::Stop() {
  RequestStop();
  if (thread_.joinable()) thread_.join();
}

UrlStatus NatsReader::status() const {
  absl::MutexLock l(&mu_);
  return status_;
}

void NatsReader::SetState(std::string_view state) {
  absl::MutexLock l(&mu_);
  if (status_.state != "failed") status_.state = std::string(state);
}

void NatsReader::Error(std::string_view message) {
  absl::MutexLock l(&mu_);
  status_.last_error = std::string(message);
  status_.last_error_unix_micros = absl::ToUnixMicros(absl::Now());
}

void NatsReader::Sleep(absl::Duration d) {
  absl::MutexLock l(&mu_);
  absl::Time until = absl::Now() + d;
  while (!stopping_ && absl::Now() < until) wake_.WaitWithDeadline(&mu_, until);
}

absl::Status NatsReader::Subscribe(NatsClient* client, natsSubscription** sub) {
  jsConsumerConfig cfg;
  jsConsumerConfig_Init(&cfg);
  cfg.Durable = consumer_.c_str();
  cfg.AckPolicy = js_AckExplicit;
  cfg.DeliverPolicy = js_DeliverAll;
  cfg.AckWait = kAckWaitSeconds * 1'000'000'000;
  cfg.MaxAckPending = std::max<int64_t>(1000, int64_t{4} * def_.batch_events);
  if (!def_.filter_subject.empty()) cfg.FilterSubject = def_.filter_subject.c_str();
  jsConsumerInfo* info = nullptr;
  jsErrCode jerr = static_cast<jsErrCode>(0);
  // Creates the consumer, or finds it as it was created (same config).
  natsStatus s = js_AddConsumer(&info, client->js(), def_.stream.c_str(), &cfg, nullptr, &jerr);
  if (info) jsConsumerInfo_Destroy(info);
  if (s != NATS_OK) {
    return absl::UnavailableError(absl::StrCat("create consumer ", consumer_, " on stream ",
                                               def_.stream, ": ", NatsError(s)));
  }
  jsSubOptions so;
  jsSubOptions_Init(&so);
  so.Stream = def_.stream.c_str();
  so.Consumer = consumer_.c_str();
  s = js_PullSubscribe(sub, client->js(), nullptr, nullptr, nullptr, &so, &jerr);
  if (s != NATS_OK) {
    return absl::UnavailableError(absl::StrCat("bind to consumer ", consumer_, " on stream ",
                                               def_.stream, ": ", NatsError(s)));
  }
  return absl::OkStatus();
}

void NatsReader::Run() {
  auto source = store_->GetSource(def_.source);
  if (!source.ok()) {
    Error(absl::StrCat("source ", def_.source, ": ", source.status().message()));
    SetState("failed");
    return;
  }
  source_ = *std::move(source);
  std::mt19937_64 rng(std::random_device{}());
  absl::Duration backoff = def_.initial_backoff;
  bool first = true;
  while (!stopping_) {
    if (!first) {
      SetState("backing-off");
      absl::Duration wait = backoff * std::uniform_real_distribution<double>(0.5, 1.0)(rng);
      Sleep(wait);
      backoff = std::min(backoff * 2, def_.max_backoff);
      if (stopping_) break;
      absl::MutexLock l(&mu_);
      status_.reconnects++;
    }
    first = false;
    SetState("connecting");
    NatsClient client;
    natsSubscription* sub = nullptr;
    absl::Status s =
        client.Connect(def_.urls, def_.ca_file, absl::StrCat("cairn connector ", def_.name));
    if (s.ok()) s = Subscribe(&client, &sub);
    if (!s.ok()) {
      Error(StdView(s.message()));
      if (sub) natsSubscription_Destroy(sub);
      continue;
    }
    SetState("streaming");
    {
      absl::MutexLock l(&queue_mu_);
      queue_.clear();
      queue_closed_ = false;
      commit_outcome_ = Outcome::kCommitted;
    }
    std::thread committer([this] { CommitLoop(); });
    int64_t wait_ms = std::max<int64_t>(absl::ToInt64Milliseconds(def_.batch_time), 10);
    bool fetch_failed = false;
    for (;;) {
      {
        // Waits while the commit stage is kQueue batches behind.
        absl::MutexLock l(&queue_mu_);
        auto room = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(queue_mu_) {
          return queue_.size() < kQueue || commit_outcome_ != Outcome::kCommitted || stopping_;
        };
        queue_mu_.Await(absl::Condition(&room));
        if (commit_outcome_ != Outcome::kCommitted) break;
      }
      if (stopping_) break;
      natsMsgList list{};
      jsErrCode jerr = static_cast<jsErrCode>(0);
      natsStatus st =
          natsSubscription_Fetch(&list, sub, static_cast<int>(def_.batch_events), wait_ms, &jerr);
      if (list.Count == 0) {
        natsMsgList_Destroy(&list);
        if (st == NATS_TIMEOUT || st == NATS_OK) continue;
        Error(absl::StrCat(label_, ": fetch: ", NatsError(st)));
        fetch_failed = true;
        break;
      }
      std::unique_ptr<Batch> batch = Decode(list);
      absl::MutexLock l(&queue_mu_);
      queue_.push_back(std::move(batch));
    }
    Outcome outcome;
    {
      absl::MutexLock l(&queue_mu_);
      queue_closed_ = true;
    }
    committer.join();  // it commits what was decoded (stopping: that too)
    {
      absl::MutexLock l(&queue_mu_);
      outcome = commit_outcome_;
    }
    natsSubscription_Destroy(sub);  // the durable consumer stays
    if (outcome == Outcome::kFailed) return;
    if (outcome == Outcome::kCommitted && !fetch_failed) {
      backoff = def_.initial_backoff;
      if (stopping_) break;
    }
  }
  SetState("stopped");
}

std::vector<Event> NatsReader::DecodeOne(Item* item) {
  std::string_view subject = natsMsg_GetSubject(item->msg);
  formats::DecodeOptions o;
  if (auto it = def_.subjects.find(std::string(subject)); it != def_.subjects.end()) {
    o.force_collection = it->second;
  } else {
    for (const auto& [pattern, collection] : def_.subjects) {
      if (SubjectMatches(pattern, subject)) {
        o.force_collection = collection;
        break;
      }
    }
  }
  auto decoded =
      formats::Decode(source_,
                      std::string_view(natsMsg_GetData(item->msg),
                                       static_cast<size_t>(natsMsg_GetDataLength(item->msg))),
                      o);
  if (!decoded.ok()) {
    item->error = absl::StrCat(label_, ": message ", item->stream_seq, " on ", AbslView(subject),
                               ": ", decoded.status().message());
    return {};
  }
  if (!o.force_collection.empty()) {
    for (Event& e : *decoded) e.collection = o.force_collection;
  }
  return *std::move(decoded);
}

std::unique_ptr<NatsReader::Batch> NatsReader::Decode(natsMsgList list) {
  auto batch = std::make_unique<Batch>();
  batch->list = list;
  batch->items.reserve(list.Count);
  for (int i = 0; i < list.Count; ++i) {
    Item item{.msg = list.Msgs[i]};
    jsMsgMetaData* meta = nullptr;
    if (natsMsg_GetMetaData(&meta, item.msg) == NATS_OK) {
      item.stream_seq = meta->Sequence.Stream;
      jsMsgMetaData_Destroy(meta);
    }
    std::vector<Event> events = DecodeOne(&item);
    item.first = batch->events.size();
    item.count = events.size();
    for (Event& e : events) batch->events.push_back(std::move(e));
    batch->items.push_back(std::move(item));
  }
  return batch;
}

void NatsReader::CommitLoop() {
  for (;;) {
    std::unique_ptr<Batch> batch;
    {
      absl::MutexLock l(&queue_mu_);
      queue_mu_.Await(absl::Condition(
          +[](NatsReader* r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(r->queue_mu_) {
            return !r->queue_.empty() || r->queue_closed_;
          },
          this));
      if (queue_.empty()) return;
      batch = std::move(queue_.front());
      queue_.pop_front();
    }
    Outcome outcome = Commit(batch.get());
    natsMsgList_Destroy(&batch->list);
    if (outcome == Outcome::kCommitted) continue;
    // What the fetch stage decoded after this batch is delivered again:
    // nak'ed now (retry), or left to the consumer's AckWait (failed).
    absl::MutexLock l(&queue_mu_);
    commit_outcome_ = outcome;
    for (auto& later : queue_) {
      if (outcome == Outcome::kRetry) {
        for (int i = 0; i < later->list.Count; ++i) natsMsg_Nak(later->list.Msgs[i], nullptr);
      }
      natsMsgList_Destroy(&later->list);
    }
    queue_.clear();
    return;
  }
}

NatsReader::Outcome NatsReader::Commit(Batch* batch) {
  std::vector<Item>& items = batch->items;
  int64_t now = absl::ToUnixMicros(absl::Now());
  auto resume = [&](uint64_t stream_seq) {
    return SideRecord{record_, ResumeJson(label_, absl::StrCat(stream_seq), now)};
  };
  bool all_decoded =
      std::all_of(items.begin(), items.end(), [](const Item& it) { return it.error.empty(); });
  // The last event's position, for status, before the events move.
  std::optional<Position> last_position;
  if (!batch->events.empty()) last_position = batch->events.back().position;
  IngestResult sum;
  size_t committed = 0;  // items[0, committed) are in the store (or skipped)
  uint64_t skipped = 0;
  std::string failure;
  absl::Status retry;
  if (all_decoded) {
    IngestOptions o{.durable = def_.durable};
    o.side_records.push_back(resume(items.back().stream_seq));
    auto r = store_->Ingest(std::move(batch->events), o);
    if (r.ok()) {
      sum = *r;
      committed = items.size();
    } else if (!Refused(r.status())) {
      retry = r.status();
    }
  }
  if (committed < items.size() && retry.ok()) {
    // One message at a time (decoded again: the batch's events moved): what
    // the format or the store refuses for good is skipped (on_error skip)
    // or stops the connector after the messages before it.
    last_position.reset();
    for (; committed < items.size(); ++committed) {
      Item& it = items[committed];
      IngestOptions o{.durable = def_.durable};
      o.side_records.push_back(resume(it.stream_seq));
      if (it.error.empty()) {
        std::vector<Event> one = DecodeOne(&it);
        if (it.error.empty()) {
          std::optional<Position> at;
          if (!one.empty()) at = one.back().position;
          auto r = store_->Ingest(std::move(one), o);
          if (r.ok()) {
            sum.applied += r->applied;
            sum.duplicates += r->duplicates;
            sum.conflicts += r->conflicts;
            if (at) last_position = at;
            continue;
          }
          if (!Refused(r.status())) {
            retry = r.status();
            break;
          }
          it.error = absl::StrCat(label_, ": message ", it.stream_seq, " on ",
                                  natsMsg_GetSubject(it.msg), ": ", r.status().message());
        }
      }
      if (def_.on_error == OnError::kStop) {
        failure = it.error;
        break;
      }
      Error(absl::StrCat("skipped: ", it.error));
      ++skipped;
      (void)store_->PutSideRecord(o.side_records[0].name, o.side_records[0].value);
    }
  }
  // Acknowledge what is in the store; skipped messages are terminated (never
  // delivered again); the rest is nak'ed for redelivery, or left (failed).
  for (size_t i = 0; i < items.size(); ++i) {
    Item& it = items[i];
    if (i < committed) {
      if (it.error.empty()) {
        natsMsg_Ack(it.msg, nullptr);
      } else {
        natsMsg_Term(it.msg, nullptr);
      }
    } else if (failure.empty()) {
      natsMsg_Nak(it.msg, nullptr);
    }
  }
  uint64_t n = 0;
  for (size_t i = 0; i < committed; ++i) n += items[i].error.empty() ? items[i].count : 0;
  {
    absl::MutexLock l(&mu_);
    if (committed > 0) {
      status_.last_event_id = absl::StrCat(items[committed - 1].stream_seq);
      status_.last_commit_unix_micros = now;
      if (last_position) status_.last_position = *last_position;
    }
    status_.events += n;
    status_.applied += sum.applied;
    status_.duplicates += sum.duplicates;
    status_.skipped += skipped;
  }
  if (!failure.empty()) {
    Error(failure);
    absl::MutexLock l(&mu_);
    status_.state = "failed";
    return Outcome::kFailed;
  }
  if (!retry.ok()) {
    Error(absl::StrCat(label_, ": commit: ", retry.ToString()));
    return Outcome::kRetry;
  }
  return Outcome::kCommitted;
}

}  // namespace cairn::connectors
