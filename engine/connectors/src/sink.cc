// A sink (sink.h): order, checkpoint, retries and dead letters; what it
// sends and how is its Destination's.
#include "sink.h"

#include <cstdio>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "cairn/json_writer.h"
#include "cairn/status.h"
#include "rapidjson/document.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"

namespace cairn::connectors {
namespace {

using namespace json_writer;  // NOLINT(build/namespaces)

}  // namespace

std::string SinkRecord(std::string_view name) {
  return absl::StrCat("sink/def/", AbslView(name), "/");
}
std::string SinkPosRecord(std::string_view name) {
  return absl::StrCat("sink/pos/", AbslView(name), "/");
}
std::string DeadLetterPrefix(std::string_view name) {
  return absl::StrCat("sink/dead/", AbslView(name), "/");
}

Sink::Sink(Store* store, SinkDefinition def)
    : store_(store), def_(std::move(def)), destination_(MakeDestination(def_)) {
  status_.name = def_.name;
  status_.state = "delivering";
  status_.checkpoint_seq = def_.from_seq;
}

Sink::~Sink() { Stop(); }

void Sink::Start() {
  thread_ = std::thread([this] { Run(); });
}

void Sink::RequestStop() {
  absl::MutexLock l(&mu_);
  stopping_ = true;
  wake_.SignalAll();
}

void Sink::Stop() {
  RequestStop();
  if (thread_.joinable()) thread_.join();
}

SinkStatus Sink::status() const {
  absl::MutexLock l(&mu_);
  SinkStatus s = status_;
  uint64_t last = store_->LastSeq();
  s.lag_seqs = last > s.checkpoint_seq ? last - s.checkpoint_seq : 0;
  s.lag_seconds = caught_up_ ? 0 : absl::ToDoubleSeconds(absl::Now() - caught_up_at_);
  s.dead_letters = dead_letters_;
  return s;
}

void Sink::Error(std::string_view message) {
  absl::MutexLock l(&mu_);
  status_.last_error = std::string(message);
  status_.last_error_unix_micros = absl::ToUnixMicros(absl::Now());
}

void Sink::Sleep(absl::Duration d) {
  absl::MutexLock l(&mu_);
  absl::Time until = absl::Now() + d;
  while (!stopping_ && absl::Now() < until) wake_.WaitWithDeadline(&mu_, until);
}

void Sink::Advance(uint64_t seq) {
  absl::Status s = store_->PutSideRecord(SinkPosRecord(def_.name), absl::StrCat(seq));
  if (!s.ok()) Error(absl::StrCat("record the checkpoint: ", s.ToString()));
  absl::MutexLock l(&mu_);
  status_.checkpoint_seq = seq;
}

void Sink::ForgetDeadLetters(uint64_t n) {
  absl::MutexLock l(&mu_);
  dead_letters_ -= std::min(dead_letters_, n);
}

void Sink::Run() {
  // Counted once; then kept by Deliver and ForgetDeadLetters.
  if (auto dead = store_->ListSideRecords(DeadLetterPrefix(def_.name)); dead.ok()) {
    absl::MutexLock l(&mu_);
    dead_letters_ = dead->size();
  }
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
      // A batch holds what is there now, up to batch_changes: one change
      // alone goes at once, a backlog in full batches.
      auto got =
          (*sub)->Next(batch.empty() ? absl::Milliseconds(200) : absl::ZeroDuration(), &item);
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

namespace {

std::string SeqName(uint64_t seq) {
  char out[24];
  std::snprintf(out, sizeof(out), "%020llu", static_cast<unsigned long long>(seq));
  return out;
}

}  // namespace

bool Sink::Deliver(const std::vector<Change>& batch) {
  std::vector<Message> messages = RenderMessages(def_, batch);
  absl::Duration backoff = def_.initial_backoff;
  while (!stopping_) {
    SendResult r = destination_->Send(messages, &stopping_);
    if (r.kind == SendResult::Kind::kDelivered) {
      Advance(batch.back().seq);
      absl::MutexLock l(&mu_);
      status_.delivered += batch.size();
      if (status_.state == "backing-off") status_.state = "delivering";
      return true;
    }
    if (r.kind == SendResult::Kind::kRejected) {
      if (batch.size() > 1) {  // find the messages it refuses, one at a time
        for (const Change& c : batch) {
          if (!Deliver({c})) return false;
        }
        return true;
      }
      Error(absl::StrCat(r.error, ": message of seq ", batch[0].seq, " kept as a dead letter"));
      const Message& message = messages.at(0);
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
          Str(w, "message", message.body);
        } else {  // past a side record's bound: the letter says so
          w.Key("message_bytes_omitted");
          w.Uint64(message.body.size());
        }
        if (def_.type == "nats") Str(w, "subject", message.subject);
        w.Key("unix_micros");
        w.Int64(absl::ToUnixMicros(absl::Now()));
        w.EndObject();
        s = store_->PutSideRecord(absl::StrCat(DeadLetterPrefix(def_.name), SeqName(batch[0].seq)),
                                  std::string_view(buf.GetString(), buf.GetSize()));
        if (!absl::IsInvalidArgument(s)) break;
      }
      if (!s.ok()) {  // not kept: not skipped either
        Error(absl::StrCat("keep a dead letter: ", s.ToString()));
        Sleep(backoff);
        continue;
      }
      {
        absl::MutexLock l(&mu_);
        dead_letters_++;
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

absl::StatusOr<std::vector<DeadLetter>> ReadDeadLetters(Store* store, std::string_view name) {
  CAIRN_ASSIGN_OR_RETURN(std::vector<SideRecord> records,
                         store->ListSideRecords(DeadLetterPrefix(name)));
  std::vector<DeadLetter> out;
  for (const SideRecord& r : records) {
    rapidjson::Document doc;
    doc.Parse(r.value.data(), r.value.size());
    if (!doc.IsObject() || !doc.HasMember("seq") || !doc["seq"].IsUint64()) {
      return absl::DataLossError(absl::StrCat("dead letter ", r.name, " is malformed"));
    }
    // A message past a side record's bound was not kept: empty here, and
    // replay leaves that letter in the list.
    DeadLetter d{.seq = doc["seq"].GetUint64()};
    auto text = [&](const char* field, std::string* out) {
      if (auto it = doc.FindMember(field); it != doc.MemberEnd() && it->value.IsString()) {
        out->assign(it->value.GetString(), it->value.GetStringLength());
      }
    };
    text("message", &d.message);
    text("response", &d.response);
    text("subject", &d.subject);
    if (doc.HasMember("http_status") && doc["http_status"].IsInt()) {
      d.http_status = doc["http_status"].GetInt();
    }
    if (doc.HasMember("unix_micros") && doc["unix_micros"].IsInt64()) {
      d.unix_micros = doc["unix_micros"].GetInt64();
    }
    out.push_back(std::move(d));
  }
  return out;
}

absl::StatusOr<size_t> ReplayDeadLetters(Store* store, const SinkDefinition& def,
                                         const std::atomic<bool>* abort) {
  CAIRN_ASSIGN_OR_RETURN(std::vector<DeadLetter> letters, ReadDeadLetters(store, def.name));
  std::unique_ptr<Destination> destination = MakeDestination(def);
  size_t replayed = 0;
  for (const DeadLetter& letter : letters) {
    if (abort->load()) return absl::UnavailableError("sinks are stopping");
    if (letter.message.empty()) continue;
    SendResult r = destination->Send({{.subject = letter.subject,
                                       .id = absl::StrCat(AbslView(def.name), "-", letter.seq),
                                       .body = letter.message}},
                                     abort);
    if (r.kind != SendResult::Kind::kDelivered) continue;
    CAIRN_RETURN_IF_ERROR(
        store->DeleteSideRecords(absl::StrCat(DeadLetterPrefix(def.name), SeqName(letter.seq)))
            .status());
    ++replayed;
  }
  return replayed;
}

}  // namespace cairn::connectors
