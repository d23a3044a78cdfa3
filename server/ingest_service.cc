// Ingest.IngestEvents and Ingest.IngestPayloads: bidi streams of batches.
#include <grpcpp/support/proto_buffer_reader.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <deque>
#include <optional>

#include "absl/synchronization/mutex.h"
#include "cairn/formats.h"
#include "cairn/status.h"
#include "cairn/v1/cairn.grpc.pb.h"
#include "ingest_worker.h"
#include "service.h"

namespace cairn::server {
namespace {

using wire::FailAck;
using wire::FromProto;
using wire::ToGrpc;

// Ingest: one ack per batch, in order. Reactors never wait for the engine: a
// received batch is decoded (proto or source format), auth-checked and
// validated (Store::Prepare) on the gRPC thread, then queued for the
// IngestWorker, one thread that commits everything queued -- from every
// stream -- with one Store::IngestPrepared call (each batch still atomic,
// with its own ack, but sharing one commit) and hands each stream its acks. A
// stream keeps reading while its batches are in the worker, up to
// kMaxInFlightBytes (then HTTP/2 flow control holds the client back). (A
// buffer hint on acks queued behind another would save syscalls, but gRPC
// completes a hinted write only when a later write flushes it, and a reactor
// has one write outstanding at a time: the stream stalls.) A client that sets
// coalesce_acks gets every ack queued when a write starts in that one write.

constexpr size_t kMaxInFlightBytes = 16 << 20;
// Acks waiting to be written (the client is slow to read them): past this,
// the stream is not read until they drain.
constexpr size_t kMaxQueuedAcks = 4096;
// Bounds on one coalesced ack message (its size estimated from outcomes and
// record errors), well under any max message size.
constexpr int kMaxCoalescedAcks = 1024;
constexpr size_t kMaxCoalescedBytes = 1 << 20;

// The stream is read as raw bytes and parsed here, not by gRPC: a message
// gRPC cannot parse would end the stream as if the client had closed it
// (status OK, later batches silently dropped). Here it ends the stream with
// INVALID_ARGUMENT naming the message and the field; the batches received
// before it still get their acks.
template <typename Request>
class IngestReactor : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>,
                      public AckSink {
 public:
  IngestReactor(Deps* deps, grpc::CallbackServerContext* ctx)
      : deps_(deps), caller_(CallerOf(ctx)) {
    // Reject an unknown token up front; per-source checks happen per batch.
    if (absl::Status s = deps_->auth->Authenticate(caller_, kMethod); !s.ok()) {
      this->Finish(ToGrpc(s));
      return;
    }
    if (deps_->ingest_streams.fetch_add(1) >= deps_->options->max_ingest_streams) {
      deps_->ingest_streams.fetch_sub(1);
      this->Finish(grpc::Status(
          grpc::StatusCode::RESOURCE_EXHAUSTED,
          absl::StrCat(deps_->options->max_ingest_streams,
                       " ingest streams are open, the server's limit (cairnd "
                       "--max-ingest-streams); send on an open stream or retry later")));
      return;
    }
    admitted_ = true;
    absl::MutexLock l(&mu_);
    reading_ = true;
    this->StartRead(&read_buf_);
  }

  void OnReadDone(bool ok) override {
    IngestWorker::Item item;
    Request request;
    std::optional<grpc::Status> unparsable;
    size_t bytes = 0;  // the message's size on the wire, for kMaxInFlightBytes
    if (ok) {
      ++received_;
      bytes = read_buf_.Length();
      if (!ParseRequest(&request)) {
        unparsable = grpc::Status(
            grpc::StatusCode::INVALID_ARGUMENT,
            absl::StrCat("message ", received_ - 1, " of the stream (counting from 0) is not a ",
                         Request::descriptor()->full_name(), ": ", unparsable_reason_,
                         "; it and everything after it were not read"));
      }
    }
    {
      absl::MutexLock l(&mu_);
      if (unparsable && !finished_) {
        reading_ = false;
        reads_done_ = true;
        status_ = *unparsable;
        if (!ShouldFinishLocked()) return;
      } else if (finished_ || !ok || deps_->shutting_down.load()) {
        reading_ = false;
        if (finished_) return;  // a read that was outstanding at Finish
        // Batches already received still finish; nothing more is read.
        reads_done_ = true;
        if (ok) status_ = Unavailable();
        if (!ShouldFinishLocked()) return;
      } else {
        // reading_ stays set until the request is decoded: no read may start.
        item.sink = this;
        item.bytes = bytes;
        in_flight_++;
        in_flight_bytes_ += item.bytes;
      }
    }
    if (!item.sink) return this->Finish(status_);  // finished_ is set: no one else touches it
    item.ack.set_batch_id(request.batch_id());
    if (request.coalesce_acks()) coalesce_acks_.store(true, std::memory_order_relaxed);
    std::optional<std::vector<Event>> events = Decode(request, &item.ack);
    if (events) {
      // Validated here, on this stream's gRPC thread, so the worker only
      // commits: streams validate in parallel, and while the worker commits.
      item.events = events->size();
      auto prepared = deps_->store->Prepare(
          {*std::move(events), {.durable = request.durable() || deps_->options->durable}});
      if (prepared.ok()) {
        item.batch = *std::move(prepared);
      } else {
        wire::FailAck(prepared.status(), &item.ack);
      }
    }
    // Submitted before the next read starts, so this stream's batches reach
    // the worker in order.
    deps_->worker->Submit(std::move(item));
    absl::MutexLock l(&mu_);
    reading_ = false;
    MaybeReadLocked();
  }

  // On the worker's thread.
  void Acked(std::vector<v1::IngestAck> acks, size_t bytes) override {
    {
      absl::MutexLock l(&mu_);
      in_flight_ -= acks.size();
      in_flight_bytes_ -= bytes;
      if (!broken_) {
        for (v1::IngestAck& a : acks) acks_.push_back(std::move(a));
        StartNextWriteLocked();
        MaybeReadLocked();
      }
      if (!ShouldFinishLocked()) return;
    }
    // Outside the lock: OnDone (which deletes this) may run as soon as
    // Finish is called, and this is not a reaction gRPC waits for.
    this->Finish(status_);
  }

  void OnWriteDone(bool ok) override {
    {
      absl::MutexLock l(&mu_);
      writing_ = false;
      if (!ok) {
        // The client went away: what it sent but has no ack for, it resends.
        broken_ = true;
        status_ = grpc::Status(grpc::StatusCode::CANCELLED, "client went away");
        acks_.clear();
      } else {
        StartNextWriteLocked();
        MaybeReadLocked();
      }
      if (!ShouldFinishLocked()) return;
    }
    this->Finish(status_);
  }

  void OnDone() override {
    if (admitted_) deps_->ingest_streams.fetch_sub(1);
    deps_->trim_soon.store(true, std::memory_order_relaxed);
    delete this;
  }

 private:
  static const char* const kMethod;

  // Parses read_buf_ into *request (straight from gRPC's slices, as gRPC
  // itself would); on failure sets unparsable_reason_.
  bool ParseRequest(Request* request) {
    bool ok;
    {
      grpc::ProtoBufferReader reader(&read_buf_);
      ok = request->ParseFromZeroCopyStream(&reader);
    }
    if (!ok) unparsable_reason_ = wire::WhyUnparsable(Request::descriptor(), Bytes(read_buf_));
    read_buf_.Clear();
    return ok;
  }

  // The batch's events, or nullopt with the failure in `ack`.
  std::optional<std::vector<Event>> Decode(Request& request, v1::IngestAck* ack);

  // False, with the failure in `ack`, for a batch past kMaxBatchEvents.
  static bool WithinBatchBound(size_t events, v1::IngestAck* ack) {
    if (events <= kMaxBatchEvents) return true;
    FailAck(absl::InvalidArgumentError(absl::StrCat("the batch holds ", events,
                                                    " events; the limit is ", kMaxBatchEvents,
                                                    " per batch: split it")),
            ack);
    return false;
  }

  std::optional<std::vector<Event>> Authorized(std::vector<Event> events, v1::IngestAck* ack) {
    if (!WithinBatchBound(events.size(), ack)) return std::nullopt;
    for (const Event& e : events) {
      if (absl::Status s = deps_->auth->CanWrite(caller_, kMethod, e.source); !s.ok()) {
        FailAck(s, ack);
        return std::nullopt;
      }
    }
    return events;
  }

  void MaybeReadLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    // A client that does not read its acks stops being read from too.
    if (!reading_ && !reads_done_ && !broken_ && !finished_ &&
        in_flight_bytes_ < kMaxInFlightBytes && acks_.size() < kMaxQueuedAcks) {
      reading_ = true;
      this->StartRead(&read_buf_);
    }
  }

  void StartNextWriteLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (writing_ || acks_.empty()) return;
    writing_ = true;
    current_ack_ = std::move(acks_.front());
    acks_.pop_front();
    if (coalesce_acks_.load(std::memory_order_relaxed)) {
      // Everything queued goes in this message, up to a bound on its size.
      size_t bytes = 0;
      while (!acks_.empty() && current_ack_.coalesced_size() < kMaxCoalescedAcks &&
             bytes < kMaxCoalescedBytes) {
        bytes += acks_.front().outcomes_size() + acks_.front().errors_size() * 64 + 32;
        *current_ack_.add_coalesced() = std::move(acks_.front());
        acks_.pop_front();
      }
    }
    write_buf_.Clear();
    if (!Serialize(current_ack_, &write_buf_).ok()) {
      // An ack is built by cairnd itself: failing to serialize one is a bug.
      spdlog::error("cannot serialize an ingest ack");
    }
    this->StartWrite(&write_buf_);
  }

  // True once reading has ended and every batch received is acked (or the
  // client is gone and the worker holds none of ours); marks the stream
  // finished, and the caller calls Finish(status_) after unlocking (status_
  // no longer changes). A read may still be outstanding; it completes (not
  // ok) before OnDone.
  bool ShouldFinishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_ || in_flight_ > 0 || writing_) return false;
    if (!broken_ && (!reads_done_ || !acks_.empty())) return false;
    finished_ = true;
    return true;
  }

  Deps* deps_;
  const Caller caller_;         // the stream's token and peer
  grpc::ByteBuffer read_buf_;   // the outstanding read's target
  grpc::ByteBuffer write_buf_;  // the outstanding write's source (current_ack_)
  uint64_t received_ = 0;       // messages read (on the reading thread only)
  bool admitted_ = false;       // counted in deps_->ingest_streams
  std::string unparsable_reason_;
  absl::Mutex mu_;
  size_t in_flight_ ABSL_GUARDED_BY(mu_) = 0;  // batches in the worker
  size_t in_flight_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  std::deque<v1::IngestAck> acks_ ABSL_GUARDED_BY(mu_);
  v1::IngestAck current_ack_;               // the outstanding write's source
  std::atomic<bool> coalesce_acks_{false};  // the client accepts coalesced acks
  bool reading_ ABSL_GUARDED_BY(mu_) = false;
  bool reads_done_ ABSL_GUARDED_BY(mu_) = false;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status status_ ABSL_GUARDED_BY(mu_);
};

template <>
const char* const IngestReactor<v1::IngestRequest>::kMethod = "Ingest.IngestEvents";
template <>
const char* const IngestReactor<v1::IngestRawRequest>::kMethod = "Ingest.IngestPayloads";

template <>
std::optional<std::vector<Event>> IngestReactor<v1::IngestRequest>::Decode(
    v1::IngestRequest& request, v1::IngestAck* ack) {
  // Before converting: a batch past the bound is not copied at all.
  if (!WithinBatchBound(request.events_size(), ack)) return std::nullopt;
  auto events = FromProto(request.events());
  if (!events.ok()) {
    FailAck(events.status(), ack);
    return std::nullopt;
  }
  return Authorized(*std::move(events), ack);
}

template <>
std::optional<std::vector<Event>> IngestReactor<v1::IngestRawRequest>::Decode(
    v1::IngestRawRequest& request, v1::IngestAck* ack) {
  // The grant first: a caller may not learn which sources are registered.
  if (absl::Status s = deps_->auth->CanWrite(caller_, kMethod, request.source()); !s.ok()) {
    FailAck(s, ack);
    return std::nullopt;
  }
  auto source = deps_->store->GetSource(request.source());
  if (!source.ok()) {
    FailAck(source.status(), ack);
    return std::nullopt;
  }
  if (formats::SessionOnly(source->format)) {
    FailAck(absl::FailedPreconditionError(
                absl::StrCat("source '", source->name, "' is in format ", source->format,
                             ", whose records carry no position: post them through a session")),
            ack);
    return std::nullopt;
  }
  auto events = formats::Decode(*source, request.payload());
  if (!events.ok()) {
    deps_->store->CountRejectedBatch(source->name);
    FailAck(events.status(), ack);
    return std::nullopt;
  }
  return Authorized(*std::move(events), ack);
}

class IngestService final
    : public v1::Ingest::WithRawCallbackMethod_IngestEvents<
          v1::Ingest::WithRawCallbackMethod_IngestPayloads<v1::Ingest::Service>> {
 public:
  explicit IngestService(Deps* deps) : deps_(deps) {}
  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* IngestEvents(
      grpc::CallbackServerContext* ctx) override {
    return new IngestReactor<v1::IngestRequest>(deps_, ctx);
  }
  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* IngestPayloads(
      grpc::CallbackServerContext* ctx) override {
    return new IngestReactor<v1::IngestRawRequest>(deps_, ctx);
  }

 private:
  Deps* deps_;
};

}  // namespace

std::unique_ptr<grpc::Service> NewIngestService(Deps* deps) {
  return std::make_unique<IngestService>(deps);
}

}  // namespace cairn::server
