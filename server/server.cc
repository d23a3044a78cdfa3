#include "server.h"

#include <arpa/inet.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/support/proto_buffer_reader.h>
#include <malloc.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <deque>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <thread>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "auth.h"
#include "cairn/formats.h"
#include "cairn/status.h"
#include "cairn/v1/cairn.grpc.pb.h"
#include "convert.h"

namespace cairn::server {
namespace {

using wire::FailAck;
using wire::FromGrpc;
using wire::FromProto;
using wire::ToGrpc;
using wire::ToProto;

// What every handler needs.
class IngestWorker;

struct Deps {
  Store* store = nullptr;
  IngestWorker* worker = nullptr;
  const Auth* auth = nullptr;
  const ServerOptions* options = nullptr;
  std::atomic<bool> shutting_down{false};
  std::atomic<int> ingest_streams{0};
  // A stream ended since the last trim: the allocator is asked to give
  // freed memory back to the system (glibc keeps it in its arenas).
  std::atomic<bool> trim_soon{false};
};

// Events in one ingest request at most: what a batch costs in memory
// (decoded events, the engine's indexed write batch) is bounded with it,
// whatever the message size allows (300,000 deletes fit in 9 MB).
constexpr size_t kMaxBatchEvents = 100000;
// Events the ingest worker takes into one Store::IngestBatches call.
constexpr size_t kMaxWorkerEvents = 200000;

grpc::Status Unavailable() {
  return grpc::Status(grpc::StatusCode::UNAVAILABLE, "server is shutting down");
}

// ---------------------------------------------------------------------------
// Ingest: one ack per batch, in order. Reactors never wait for the engine: a
// received batch is decoded (proto or source format) and auth-checked on the
// gRPC thread, then queued for the IngestWorker, one thread that validates
// and ingests everything queued -- from every stream -- with one
// Store::IngestBatches call (each batch still atomic, with its own ack, but
// sharing one commit) and hands each stream its acks. A
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

class AckSink {
 public:
  // The acks of batches this sink queued, in the order they were queued;
  // `bytes` is what they weighed when received.
  virtual void Acked(std::vector<v1::IngestAck> acks, size_t bytes) = 0;

 protected:
  ~AckSink() = default;
};

class IngestWorker {
 public:
  struct Item {
    AckSink* sink = nullptr;
    size_t bytes = 0;
    v1::IngestAck ack;                  // batch id; the failure when no batch
    std::optional<Store::Batch> batch;  // nullopt: rejected before the engine
  };

  explicit IngestWorker(Store* store) : store_(store), thread_([this] { Run(); }) {}
  ~IngestWorker() { Stop(); }

  void Submit(Item item) {
    absl::MutexLock l(&mu_);
    queue_.push_back(std::move(item));
  }

  // Ingests what is queued, then returns.
  void Stop() {
    {
      absl::MutexLock l(&mu_);
      stopping_ = true;
    }
    if (thread_.joinable()) thread_.join();
  }

 private:
  void Run() {
    for (;;) {
      std::vector<Item> items;
      {
        absl::MutexLock l(&mu_);
        mu_.Await(absl::Condition(
            +[](IngestWorker* w) { return !w->queue_.empty() || w->stopping_; }, this));
        if (queue_.empty()) return;
        // Everything queued, up to a bound on the events one call holds in
        // memory (at least one batch).
        size_t take = 0, events = 0;
        while (take < queue_.size() && (take == 0 || events < kMaxWorkerEvents)) {
          if (queue_[take].batch) events += queue_[take].batch->events.size();
          ++take;
        }
        items.assign(std::make_move_iterator(queue_.begin()),
                     std::make_move_iterator(queue_.begin() + take));
        queue_.erase(queue_.begin(), queue_.begin() + take);
      }
      std::vector<Store::Batch> batches;
      std::vector<size_t> slot;
      for (size_t i = 0; i < items.size(); ++i) {
        if (!items[i].batch) continue;
        batches.push_back(*std::move(items[i].batch));
        slot.push_back(i);
      }
      if (!batches.empty()) {
        auto results = store_->IngestBatches(std::move(batches));
        for (size_t k = 0; k < results.size(); ++k) {
          v1::IngestAck& ack = items[slot[k]].ack;
          if (results[k].ok()) {
            ToProto(*results[k], &ack);
          } else {
            FailAck(results[k].status(), &ack);
          }
        }
      }
      // Each stream's acks together, in its order.
      struct Acks {
        std::vector<v1::IngestAck> acks;
        size_t bytes = 0;
      };
      absl::flat_hash_map<AckSink*, Acks> by_sink;
      for (Item& item : items) {
        Acks& a = by_sink[item.sink];
        a.acks.push_back(std::move(item.ack));
        a.bytes += item.bytes;
      }
      for (auto& [sink, a] : by_sink) sink->Acked(std::move(a.acks), a.bytes);
    }
  }

  Store* store_;
  absl::Mutex mu_;
  std::vector<Item> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

// Serializes a message for a raw method's write or reply.
template <typename Msg>
grpc::Status Serialize(const Msg& m, grpc::ByteBuffer* out) {
  bool own = false;
  return grpc::SerializationTraits<Msg>::Serialize(m, out, &own);
}

// The bytes of a received message.
std::string Bytes(const grpc::ByteBuffer& buf) {
  std::vector<grpc::Slice> slices;
  std::string bytes;
  if (buf.Dump(&slices).ok()) {
    for (const grpc::Slice& sl : slices) {
      bytes.append(reinterpret_cast<const char*>(sl.begin()), sl.size());
    }
  }
  return bytes;
}

// The stream is read as raw bytes and parsed here, not by gRPC: a message
// gRPC cannot parse would end the stream as if the client had closed it
// (status OK, later batches silently dropped). Here it ends the stream with
// INVALID_ARGUMENT naming the message and the field; the batches received
// before it still get their acks.
template <typename Request>
class IngestReactor : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>,
                      public AckSink {
 public:
  IngestReactor(Deps* deps, grpc::CallbackServerContext* ctx) : deps_(deps), ctx_(ctx) {
    // Reject an unknown token up front; per-source checks happen per batch.
    if (grpc::Status s = deps_->auth->Authenticate(ctx_, kMethod); !s.ok()) {
      this->Finish(s);
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
      item.batch = Store::Batch{*std::move(events),
                                {.durable = request.durable() || deps_->options->durable}};
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
    Fail(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                      absl::StrCat("the batch holds ", events, " events; the limit is ",
                                   kMaxBatchEvents, " per batch: split it")),
         ack);
    return false;
  }

  std::optional<std::vector<Event>> Authorized(std::vector<Event> events, v1::IngestAck* ack) {
    if (!WithinBatchBound(events.size(), ack)) return std::nullopt;
    for (const Event& e : events) {
      if (grpc::Status s = deps_->auth->CanWrite(ctx_, kMethod, e.source); !s.ok()) {
        Fail(s, ack);
        return std::nullopt;
      }
    }
    return events;
  }

  static void Fail(const grpc::Status& s, v1::IngestAck* ack) {
    ack->set_code(s.error_code());
    ack->set_message(s.error_message());
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
  grpc::CallbackServerContext* ctx_;
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
  if (grpc::Status s = deps_->auth->CanWrite(ctx_, kMethod, request.source()); !s.ok()) {
    Fail(s, ack);
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

// ---------------------------------------------------------------------------
// Sessions.

// Unary calls are registered raw and parsed here: gRPC's callback API
// answers a request it cannot parse with UNIMPLEMENTED and no message
// (grpc/grpc#30454). Here the token comes first (an unauthenticated caller
// learns nothing), then a request that does not parse is INVALID_ARGUMENT
// naming the field (a string that is not UTF-8), then the handler runs.
template <typename Req>
grpc::Status ParseRequest(Deps* deps, grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                          Req* req) {
  const std::string& method = Req::descriptor()->full_name();
  if (grpc::Status s = deps->auth->Authenticate(ctx, method); !s.ok()) return s;
  std::string bytes = Bytes(*in);
  if (req->ParseFromString(bytes)) return grpc::Status::OK;
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                      absl::StrCat("the request is not a ", method, ": ",
                                   wire::WhyUnparsable(Req::descriptor(), bytes)));
}

template <typename Req, typename Resp, typename Fn>
grpc::ServerUnaryReactor* Unary(Deps* deps, grpc::CallbackServerContext* ctx,
                                const grpc::ByteBuffer* in, grpc::ByteBuffer* out, Fn handler) {
  auto* r = ctx->DefaultReactor();
  Req req;
  if (grpc::Status s = ParseRequest(deps, ctx, in, &req); !s.ok()) {
    r->Finish(s);
    return r;
  }
  Resp resp;
  grpc::Status s = handler(&req, &resp);
  if (s.ok()) s = Serialize(resp, out);
  r->Finish(s);
  return r;
}

class SessionsService final
    : public v1::Sessions::WithRawCallbackMethod_Open<
          v1::Sessions::WithRawCallbackMethod_Upsert<v1::Sessions::WithRawCallbackMethod_Delete<
              v1::Sessions::WithRawCallbackMethod_Close<v1::Sessions::Service>>>> {
 public:
  explicit SessionsService(Deps* deps) : deps_(deps) {}

  grpc::ServerUnaryReactor* Open(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                 grpc::ByteBuffer* out) override {
    return Unary<v1::OpenSessionRequest, v1::OpenSessionResponse>(
        deps_, ctx, in, out, [&](const v1::OpenSessionRequest* req, v1::OpenSessionResponse* resp) {
          return DoOpen(ctx, req, resp);
        });
  }

  grpc::Status DoOpen(grpc::CallbackServerContext* ctx, const v1::OpenSessionRequest* req,
                      v1::OpenSessionResponse* resp) {
    if (grpc::Status s = deps_->auth->CanWrite(ctx, "Sessions.Open", req->source()); !s.ok())
      return s;
    auto id = deps_->store->OpenSession(req->source(), req->collection(),
                                        static_cast<SessionMode>(req->mode()));
    if (id.ok()) resp->set_session_id(*id);
    return ToGrpc(id.status());
  }

  grpc::ServerUnaryReactor* Upsert(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                   grpc::ByteBuffer* out) override {
    return Unary<v1::SessionUpsertRequest, v1::SessionReport>(
        deps_, ctx, in, out, [&](const v1::SessionUpsertRequest* req, v1::SessionReport* resp) {
          return DoUpsert(ctx, req, resp);
        });
  }

  grpc::Status DoUpsert(grpc::CallbackServerContext* ctx, const v1::SessionUpsertRequest* req,
                        v1::SessionReport* resp) {
    auto info = Authorize(ctx, "Sessions.Upsert", req->session_id());
    if (!info.ok()) return ToGrpc(info.status());
    std::vector<SessionRecord> records;
    for (const auto& r : req->records()) records.push_back({r.key(), r.document()});
    if (records.empty() && !req->payload().empty()) {
      auto decoded = DecodeRecords(*info, req->payload());
      if (!decoded.ok()) return ToGrpc(decoded.status());
      records = *std::move(decoded);
    }
    auto keys = deps_->store->SessionUpsert(req->session_id(), std::move(records));
    if (keys.ok()) {
      for (auto& k : *keys) resp->add_keys(std::move(k));
    }
    return ToGrpc(keys.status());
  }

  grpc::ServerUnaryReactor* Delete(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                   grpc::ByteBuffer* out) override {
    return Unary<v1::SessionDeleteRequest, v1::SessionReport>(
        deps_, ctx, in, out, [&](const v1::SessionDeleteRequest* req, v1::SessionReport* resp) {
          return DoDelete(ctx, req, resp);
        });
  }

  grpc::Status DoDelete(grpc::CallbackServerContext* ctx, const v1::SessionDeleteRequest* req,
                        v1::SessionReport* resp) {
    auto info = Authorize(ctx, "Sessions.Delete", req->session_id());
    if (!info.ok()) return ToGrpc(info.status());
    auto keys =
        deps_->store->SessionDelete(req->session_id(), {req->keys().begin(), req->keys().end()});
    if (keys.ok()) {
      for (auto& k : *keys) resp->add_keys(std::move(k));
    }
    return ToGrpc(keys.status());
  }

  grpc::ServerUnaryReactor* Close(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                  grpc::ByteBuffer* out) override {
    return Unary<v1::CloseSessionRequest, v1::CloseSessionResponse>(
        deps_, ctx, in, out,
        [&](const v1::CloseSessionRequest* req, v1::CloseSessionResponse* resp) {
          return DoClose(ctx, req, resp);
        });
  }

  grpc::Status DoClose(grpc::CallbackServerContext* ctx, const v1::CloseSessionRequest* req,
                       v1::CloseSessionResponse* resp) {
    auto info = Authorize(ctx, "Sessions.Close", req->session_id());
    if (!info.ok()) return ToGrpc(info.status());
    auto r = deps_->store->CloseSession(req->session_id(), req->commit());
    if (r.ok()) {
      resp->set_first_seq(r->first_seq);
      resp->set_last_seq(r->last_seq);
      resp->set_applied(r->applied);
    }
    return ToGrpc(r.status());
  }

 private:
  // The token before the lookup: a caller with no write grant learns
  // nothing of which sessions exist (ids are 128 random bits besides).
  absl::StatusOr<SessionInfo> Authorize(grpc::CallbackServerContext* ctx, const char* method,
                                        const std::string& id) {
    if (grpc::Status s = deps_->auth->CanWriteAny(ctx, method); !s.ok()) return FromGrpc(s);
    CAIRN_ASSIGN_OR_RETURN(SessionInfo info, deps_->store->GetSession(id));
    if (grpc::Status s = deps_->auth->CanWrite(ctx, method, info.source); !s.ok()) {
      return FromGrpc(s);
    }
    return info;
  }

  // Raw contribution records (e.g. BitBroker) through the source's decoder:
  // each decoded event becomes a session record.
  absl::StatusOr<std::vector<SessionRecord>> DecodeRecords(const SessionInfo& info,
                                                           const std::string& payload) {
    CAIRN_ASSIGN_OR_RETURN(SourceDefinition source, deps_->store->GetSource(info.source));
    CAIRN_ASSIGN_OR_RETURN(std::vector<Event> events,
                           formats::Decode(source, payload, {.collection = info.collection}));
    std::vector<SessionRecord> out;
    for (size_t i = 0; i < events.size(); ++i) {
      if (events[i].op != Op::kUpsert) {
        return absl::InvalidArgumentError(
            absl::StrCat("record ", i, ": a delete-list entry; post deletes with Sessions.Delete"));
      }
      out.push_back({std::move(events[i].key), std::move(events[i].payload)});
    }
    return out;
  }

  Deps* deps_;
};

// ---------------------------------------------------------------------------
// Query: snapshots stream from a cursor, one entity per message.

class Dispatcher;

class SnapshotReactor : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
 public:
  SnapshotReactor(Deps* deps, Dispatcher* dispatcher, grpc::CallbackServerContext* ctx,
                  const grpc::ByteBuffer* in);
  void OnWriteDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "client went away"));
      return;
    }
    Next();
  }
  void OnDone() override;

 private:
  void Next() {
    auto more = cursor_->Next();
    if (!more.ok()) return Finish(ToGrpc(more.status()));
    if (!*more) return Finish(grpc::Status::OK);
    item_.Clear();
    ToProto(cursor_->entity(), item_.mutable_entity());
    item_.set_snapshot_seq(cursor_->seq());
    write_buf_.Clear();
    if (grpc::Status s = Serialize(item_, &write_buf_); !s.ok()) return Finish(s);
    StartWrite(&write_buf_);
  }

  Deps* deps_;
  Dispatcher* dispatcher_;
  bool reserved_ = false;  // holds a read-stream place
  std::unique_ptr<SnapshotCursor> cursor_;
  v1::SnapshotItem item_;
  grpc::ByteBuffer write_buf_;  // item_, serialized: the write in flight
};

grpc::Status TooManyReadStreams(const Deps* deps) {
  return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                      absl::StrCat(deps->options->max_subscriptions,
                                   " subscriptions and snapshots are open, the server's limit "
                                   "(cairnd --max-subscriptions); retry later"));
}

// Subscriptions never block a gRPC thread. A reactor is either writing (owned
// by gRPC until OnWriteDone), idle (waiting for commits; the dispatcher thread
// pumps it when the store commits) or done. Pump() pulls with a zero timeout.
// Memory per subscriber is one message: a slow client just stops pulling and
// later catches up from the stored change feed. All subscribers together
// hold at most ServerOptions::subscriber_buffer_bytes in messages written
// and not yet taken by their clients (plus one message being built): a
// subscriber that finds the budget used up waits, idle. One whose message
// is not taken within subscriber_stall_timeout is cut off.
class Dispatcher;

// Bytes of subscription messages in flight, all subscribers together.
class ByteBudget {
 public:
  explicit ByteBudget(size_t limit) : limit_(limit) {}
  // Room for one more message of the largest size (always, when nothing is
  // in flight: a budget below one message still lets one through).
  bool HasRoom(size_t largest) const {
    size_t used = used_.load(std::memory_order_relaxed);
    return used == 0 || used + largest <= limit_;
  }
  void Take(size_t n) { used_.fetch_add(n, std::memory_order_relaxed); }
  void Give(size_t n) { used_.fetch_sub(n, std::memory_order_relaxed); }

 private:
  const size_t limit_;
  std::atomic<size_t> used_{0};
};

// Bounds on the changes one subscription message carries (max_batch).
constexpr uint32_t kMaxSubscribeBatch = 1024;
constexpr size_t kMaxSubscribeBatchBytes = 1 << 20;

class SubscribeReactor : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
 public:
  SubscribeReactor(Dispatcher* dispatcher, Deps* deps, ByteBudget* budget,
                   grpc::CallbackServerContext* ctx, uint64_t id, std::unique_ptr<Subscription> sub,
                   uint32_t max_batch)
      : dispatcher_(dispatcher),
        deps_(deps),
        budget_(budget),
        ctx_(ctx),
        id_(id),
        sub_(std::move(sub)),
        max_batch_(std::clamp<uint32_t>(max_batch, 1, kMaxSubscribeBatch)),
        delivered_(sub_->position()) {}

  // Cuts the stream off when its message in flight was written before
  // `deadline` and is still not taken. On the dispatcher's thread.
  void CutOffIfStalledSince(absl::Time deadline) {
    {
      absl::MutexLock l(&mu_);
      if (state_ != State::kWriting || cut_off_ || write_started_ > deadline) return;
      cut_off_ = true;
    }
    spdlog::warn("subscription {} from {}: its client took no message for {}; cut off", id_,
                 ctx_->peer(), absl::FormatDuration(deps_->options->subscriber_stall_timeout));
    // The stream's status cannot pass the data the client does not read:
    // cancelling resets the stream, and the client resumes from its seq.
    ctx_->TryCancel();
  }

  // Starts writing the next message if the reactor is idle and there is an
  // item (and room in the budget); otherwise leaves it idle for the
  // dispatcher to pump again after the next commit.
  void Pump();
  // Ends the stream with `s` unless it already ended.
  void End(const grpc::Status& s);
  uint64_t id() const { return id_; }
  // Seq up to which every change was written to the client (or skipped by
  // the filter): the stream's position for lag in Stats.
  uint64_t delivered() const { return delivered_.load(std::memory_order_relaxed); }
  bool idle() {
    absl::MutexLock l(&mu_);
    return state_ == State::kIdle;
  }

  void OnWriteDone(bool ok) override {
    {
      absl::MutexLock l(&mu_);
      budget_->Give(write_bytes_);
      write_bytes_ = 0;
    }
    if (!ok) return End(grpc::Status(grpc::StatusCode::CANCELLED, "client went away"));
    {
      absl::MutexLock l(&mu_);
      delivered_.store(message_position_, std::memory_order_relaxed);
      if (state_ == State::kWriting) state_ = State::kIdle;
    }
    Pump();
  }
  void OnCancel() override { End(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled")); }
  void OnDone() override;

 private:
  enum class State { kIdle, kWriting, kDone };
  Dispatcher* dispatcher_;
  Deps* deps_;
  ByteBudget* budget_;
  grpc::CallbackServerContext* ctx_;
  uint64_t id_;
  std::unique_ptr<Subscription> sub_;
  const uint32_t max_batch_;  // changes per message
  absl::Mutex mu_;
  State state_ = State::kIdle;
  // Pulled while filling a batch but not a change: sent next.
  std::optional<SubscriptionItem> held_ ABSL_GUARDED_BY(mu_);
  uint64_t held_position_ ABSL_GUARDED_BY(mu_) = 0;     // the position after it
  uint64_t message_position_ ABSL_GUARDED_BY(mu_) = 0;  // after the message in flight
  std::atomic<uint64_t> delivered_{0};
  std::optional<grpc::Status> pending_end_;  // set while writing
  v1::SubscribeItem item_;
  grpc::ByteBuffer write_buf_;                   // item_, serialized: the write in flight
  size_t write_bytes_ ABSL_GUARDED_BY(mu_) = 0;  // the message in flight, in the budget
  absl::Time write_started_ ABSL_GUARDED_BY(mu_);
  bool cut_off_ ABSL_GUARDED_BY(mu_) = false;
};

class Dispatcher {
 public:
  explicit Dispatcher(Deps* deps)
      : deps_(deps),
        store_(deps->store),
        budget_(deps->options->subscriber_buffer_bytes),
        thread_([this] { Loop(); }) {}
  ~Dispatcher() { Stop(); }

  // A place for one more read stream (subscription or snapshot), or false
  // at --max-subscriptions. Each true is matched by one Release.
  bool Reserve() {
    if (open_.fetch_add(1) < deps_->options->max_subscriptions) return true;
    open_.fetch_sub(1);
    return false;
  }
  void Release() { open_.fetch_sub(1); }
  ByteBudget* budget() { return &budget_; }

  void Add(SubscribeReactor* r) {
    absl::MutexLock l(&mu_);
    reactors_[r->id()] = r;
  }
  void Remove(SubscribeReactor* r) {
    {
      absl::MutexLock l(&mu_);
      reactors_.erase(r->id());
    }
    Release();
  }
  uint64_t NextId() { return next_id_.fetch_add(1) + 1; }
  // Ends every subscription with UNAVAILABLE and stops the thread.
  void EndAll() {
    absl::MutexLock l(&mu_);
    for (auto& [id, r] : reactors_) r->End(Unavailable());
  }
  void Stop() {
    stop_.store(true);
    if (thread_.joinable()) thread_.join();
  }
  std::vector<std::pair<uint64_t, uint64_t>> Delivered() {
    absl::MutexLock l(&mu_);
    std::vector<std::pair<uint64_t, uint64_t>> out;
    for (auto& [id, r] : reactors_) out.emplace_back(id, r->delivered());
    return out;
  }

 private:
  void Loop() {
    uint64_t seen = store_->LastSeq();
    absl::Time next_sweep = absl::Now() + absl::Seconds(1);
    while (!stop_.load()) {
      // Wake on commit; the short timeout also picks up reactors that went
      // idle between our scan and their commit (or wait for the budget).
      store_->AwaitCommit(seen, absl::Milliseconds(2));
      seen = store_->LastSeq();
      absl::Time now = absl::Now();
      bool sweep = now >= next_sweep;
      {
        absl::MutexLock l(&mu_);
        for (auto& [id, r] : reactors_) {
          if (r->idle()) r->Pump();
          if (sweep) r->CutOffIfStalledSince(now - deps_->options->subscriber_stall_timeout);
        }
      }
      if (sweep) {
        next_sweep = now + absl::Seconds(1);
        // Streams that ended leave their memory in glibc's arenas; give it
        // back so RSS follows the load down. gRPC frees a stream's transport
        // memory (and a closed connection's) some time after the stream
        // ends, so trim on the next few sweeps too, not only the first.
        if (deps_->trim_soon.exchange(false)) trim_sweeps_ = kTrimSweeps;
        if (trim_sweeps_ > 0) {
          --trim_sweeps_;
          malloc_trim(0);
        }
      }
    }
  }

  // Sweeps (one a second) that still trim after the last stream ended.
  static constexpr int kTrimSweeps = 5;
  int trim_sweeps_ = 0;  // dispatcher thread only
  Deps* deps_;
  Store* store_;
  ByteBudget budget_;
  std::atomic<int> open_{0};
  absl::Mutex mu_;
  std::map<uint64_t, SubscribeReactor*> reactors_ ABSL_GUARDED_BY(mu_);
  std::atomic<uint64_t> next_id_{0};
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

SnapshotReactor::SnapshotReactor(Deps* deps, Dispatcher* dispatcher,
                                 grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in)
    : deps_(deps), dispatcher_(dispatcher) {
  v1::SnapshotRequest parsed;
  if (grpc::Status s = ParseRequest(deps, ctx, in, &parsed); !s.ok()) {
    Finish(s);
    return;
  }
  const v1::SnapshotRequest* req = &parsed;
  std::vector<std::string> collections;
  if (!req->collection().empty()) collections.push_back(req->collection());
  if (grpc::Status s = deps->auth->CanRead(ctx, "Query.Snapshot", collections); !s.ok()) {
    Finish(s);
    return;
  }
  // A snapshot pins a RocksDB snapshot while it streams: it counts as a read
  // stream.
  if (!dispatcher_->Reserve()) {
    Finish(TooManyReadStreams(deps));
    return;
  }
  reserved_ = true;
  SnapshotOptions o{.collection = req->collection(),
                    .key_prefix = req->key_prefix(),
                    .include_incomplete = !req->exclude_incomplete()};
  if (req->has_seq()) o.as_of_seq = req->seq();
  if (req->has_position()) o.as_of_position = FromProto(req->position());
  auto cursor = deps->store->NewSnapshot(o);
  if (!cursor.ok()) {
    Finish(ToGrpc(cursor.status()));
    return;
  }
  cursor_ = *std::move(cursor);
  Next();
}

void SnapshotReactor::OnDone() {
  cursor_.reset();
  if (reserved_) dispatcher_->Release();
  deps_->trim_soon.store(true, std::memory_order_relaxed);
  delete this;
}

void SubscribeReactor::Pump() {
  std::optional<grpc::Status> end;
  {
    absl::MutexLock l(&mu_);
    if (state_ != State::kIdle) return;
    // No room in the budget: stay idle; the dispatcher pumps again.
    if (!budget_->HasRoom(kMaxSubscribeBatchBytes + (64 << 10))) return;
    SubscriptionItem item;
    absl::StatusOr<bool> got = true;
    uint64_t position;  // the subscription's position after the message
    if (held_) {
      item = *std::move(held_);
      held_.reset();
      position = held_position_;
    } else {
      got = sub_->Next(absl::ZeroDuration(), &item);
      position = sub_->position();
      // Nothing in flight: what the filter skipped counts as delivered.
      if (got.ok() && !*got) delivered_.store(position, std::memory_order_relaxed);
    }
    if (!got.ok()) {
      state_ = State::kDone;
      end = ToGrpc(got.status());
    } else if (*got) {
      item_.Clear();
      switch (item.kind) {
        case SubscriptionItem::Kind::kSnapshotEntity:
          ToProto(item.entity, item_.mutable_snapshot_entity());
          break;
        case SubscriptionItem::Kind::kSnapshotEnd:
          item_.set_snapshot_end(item.seq);
          break;
        case SubscriptionItem::Kind::kChange: {
          ToProto(item.change, item_.mutable_change());
          // Behind: the changes already committed after it share the message,
          // as long as it stays under kMaxSubscribeBatchBytes (a change that
          // would cross it waits for the next message, which it starts).
          auto weight = [](const Change& c) {
            return c.before.size() + c.after.size() + c.key.size() + c.collection.size() +
                   c.source.size() + 64;
          };
          size_t bytes = weight(item.change);
          for (uint32_t n = 1; n < max_batch_; ++n) {
            SubscriptionItem next;
            auto more = sub_->Next(absl::ZeroDuration(), &next);
            if (!more.ok()) break;  // the error comes back next time
            if (!*more) {
              position = sub_->position();  // past what the filter skipped
              break;
            }
            if (next.kind != SubscriptionItem::Kind::kChange ||
                bytes + weight(next.change) > kMaxSubscribeBatchBytes) {
              held_ = std::move(next);
              held_position_ = sub_->position();
              break;
            }
            bytes += weight(next.change);
            ToProto(next.change, item_.add_more_changes());
            position = sub_->position();
          }
          break;
        }
        case SubscriptionItem::Kind::kCaughtUp:
          item_.set_caught_up(item.seq);
          break;
      }
      message_position_ = position;
      state_ = State::kWriting;
      write_buf_.Clear();
      if (grpc::Status s = Serialize(item_, &write_buf_); !s.ok()) {
        state_ = State::kDone;
        end = s;
      } else {
        // Serialized, the message is no longer needed: a large one's
        // buffers go back now.
        write_bytes_ = write_buf_.Length();
        if (write_bytes_ > (64 << 10)) {
          item_ = v1::SubscribeItem();
        } else {
          item_.Clear();
        }
        budget_->Take(write_bytes_);
        write_started_ = absl::Now();
        StartWrite(&write_buf_);
      }
    }
  }
  // Finish last: OnDone (which deletes this) cannot run before it.
  if (end) Finish(*end);
}

void SubscribeReactor::End(const grpc::Status& s) {
  {
    absl::MutexLock l(&mu_);
    if (state_ == State::kDone) return;
    state_ = State::kDone;
  }
  sub_->Cancel();
  Finish(s);
}

void SubscribeReactor::OnDone() {
  dispatcher_->Remove(this);
  deps_->trim_soon.store(true, std::memory_order_relaxed);
  delete this;
}

class QueryService final
    : public v1::Query::WithRawCallbackMethod_Get<v1::Query::WithRawCallbackMethod_History<
          v1::Query::WithRawCallbackMethod_CommitCheckpoint<
              v1::Query::WithRawCallbackMethod_GetCheckpoint<
                  v1::Query::WithRawCallbackMethod_Snapshot<
                      v1::Query::WithRawCallbackMethod_Subscribe<v1::Query::Service>>>>>> {
 public:
  QueryService(Deps* deps, Dispatcher* dispatcher) : deps_(deps), dispatcher_(dispatcher) {}

  grpc::ServerUnaryReactor* Get(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                grpc::ByteBuffer* out) override {
    return Unary<v1::GetRequest, v1::Entity>(
        deps_, ctx, in, out,
        [&](const v1::GetRequest* req, v1::Entity* resp) { return DoGet(ctx, req, resp); });
  }

  grpc::Status DoGet(grpc::CallbackServerContext* ctx, const v1::GetRequest* req,
                     v1::Entity* resp) {
    if (grpc::Status s = deps_->auth->CanRead(ctx, "Query.Get", {req->collection()}); !s.ok()) {
      return s;
    }
    auto e = deps_->store->Get(req->collection(), req->key());
    if (e.ok()) ToProto(*e, resp);
    return ToGrpc(e.status());
  }

  grpc::ServerWriteReactor<grpc::ByteBuffer>* Snapshot(grpc::CallbackServerContext* ctx,
                                                       const grpc::ByteBuffer* in) override {
    return new SnapshotReactor(deps_, dispatcher_, ctx, in);
  }

  grpc::ServerUnaryReactor* History(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                    grpc::ByteBuffer* out) override {
    return Unary<v1::HistoryRequest, v1::HistoryResponse>(
        deps_, ctx, in, out, [&](const v1::HistoryRequest* req, v1::HistoryResponse* resp) {
          return DoHistory(ctx, req, resp);
        });
  }

  grpc::Status DoHistory(grpc::CallbackServerContext* ctx, const v1::HistoryRequest* req,
                         v1::HistoryResponse* resp) {
    if (grpc::Status s = deps_->auth->CanRead(ctx, "Query.History", {req->collection()}); !s.ok()) {
      return s;
    }
    HistoryOptions o{.reverse = req->reverse(), .limit = req->limit()};
    if (req->has_from_position()) o.from_position = FromProto(req->from_position());
    if (req->has_to_position()) o.to_position = FromProto(req->to_position());
    if (req->from_seq()) o.from_seq = req->from_seq();
    if (req->to_seq()) o.to_seq = req->to_seq();
    auto versions = deps_->store->History(req->collection(), req->key(), o);
    if (versions.ok()) {
      for (const auto& v : *versions) ToProto(v, resp->add_versions());
    }
    return ToGrpc(versions.status());
  }

  grpc::ServerWriteReactor<grpc::ByteBuffer>* Subscribe(grpc::CallbackServerContext* ctx,
                                                        const grpc::ByteBuffer* in) override {
    auto fail = [](const grpc::Status& s) {
      // A reactor that only reports the error.
      class Failed : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
       public:
        explicit Failed(const grpc::Status& s) { Finish(s); }
        void OnDone() override { delete this; }
      };
      return new Failed(s);
    };
    v1::SubscribeRequest parsed;
    if (grpc::Status s = ParseRequest(deps_, ctx, in, &parsed); !s.ok()) return fail(s);
    const v1::SubscribeRequest* req = &parsed;
    if (deps_->shutting_down.load()) return fail(Unavailable());
    std::vector<std::string> collections(req->collections().begin(), req->collections().end());
    if (grpc::Status s = deps_->auth->CanRead(ctx, "Query.Subscribe", collections); !s.ok())
      return fail(s);
    if (!dispatcher_->Reserve()) return fail(TooManyReadStreams(deps_));
    // From here every failure gives the place back.
    auto fail_released = [&](const grpc::Status& s) {
      dispatcher_->Release();
      return fail(s);
    };
    SubscribeOptions o;
    o.filter = {.sources = {req->sources().begin(), req->sources().end()},
                .collections = collections,
                .key_prefix = req->key_prefix(),
                .keys = {req->keys().begin(), req->keys().end()}};
    o.include_incomplete = !req->exclude_incomplete();
    switch (req->start_case()) {
      case v1::SubscribeRequest::kFromSeq:
        o.start = SubscribeOptions::Start::kFromSeq;
        o.from_seq = req->from_seq();
        break;
      case v1::SubscribeRequest::kSnapshot:
        o.start = SubscribeOptions::Start::kSnapshot;
        break;
      case v1::SubscribeRequest::kCheckpoint: {
        auto cp = ReadableCheckpoint(ctx, "Query.Subscribe", req->checkpoint());
        if (!cp.ok()) return fail_released(ToGrpc(cp.status()));
        o.start = SubscribeOptions::Start::kFromSeq;
        o.from_seq = cp->seq;
        break;
      }
      default:
        o.start = SubscribeOptions::Start::kNow;
    }
    auto sub = deps_->store->Subscribe(o);
    if (!sub.ok()) return fail_released(ToGrpc(sub.status()));
    auto* r = new SubscribeReactor(dispatcher_, deps_, dispatcher_->budget(), ctx,
                                   dispatcher_->NextId(), *std::move(sub), req->max_batch());
    dispatcher_->Add(r);
    r->Pump();
    return r;
  }

  // Checkpoints belong to a read scope (see CommitCheckpointRequest): a
  // token may create one only for collections it can read, and read or move
  // one only when it can read the whole scope the checkpoint was made for.
  grpc::ServerUnaryReactor* CommitCheckpoint(grpc::CallbackServerContext* ctx,
                                             const grpc::ByteBuffer* in,
                                             grpc::ByteBuffer* out) override {
    return Unary<v1::CommitCheckpointRequest, v1::CommitCheckpointResponse>(
        deps_, ctx, in, out,
        [&](const v1::CommitCheckpointRequest* req, v1::CommitCheckpointResponse* resp) {
          return DoCommitCheckpoint(ctx, req, resp);
        });
  }

  grpc::Status DoCommitCheckpoint(grpc::CallbackServerContext* ctx,
                                  const v1::CommitCheckpointRequest* req,
                                  v1::CommitCheckpointResponse*) {
    constexpr const char* kMethod = "Query.CommitCheckpoint";
    std::vector<std::string> collections(req->collections().begin(), req->collections().end());
    if (grpc::Status s = deps_->auth->CanRead(ctx, kMethod, collections); !s.ok()) return s;
    auto may_move = [&](const Store::CheckpointInfo& existing) {
      return FromGrpc(deps_->auth->CanRead(ctx, kMethod, existing.collections));
    };
    return ToGrpc(deps_->store->PutCheckpoint(req->name(), req->seq(), collections, may_move));
  }

  grpc::ServerUnaryReactor* GetCheckpoint(grpc::CallbackServerContext* ctx,
                                          const grpc::ByteBuffer* in,
                                          grpc::ByteBuffer* out) override {
    return Unary<v1::GetCheckpointRequest, v1::GetCheckpointResponse>(
        deps_, ctx, in, out,
        [&](const v1::GetCheckpointRequest* req, v1::GetCheckpointResponse* resp) {
          return DoGetCheckpoint(ctx, req, resp);
        });
  }

  grpc::Status DoGetCheckpoint(grpc::CallbackServerContext* ctx,
                               const v1::GetCheckpointRequest* req,
                               v1::GetCheckpointResponse* resp) {
    auto cp = ReadableCheckpoint(ctx, "Query.GetCheckpoint", req->name());
    if (!cp.ok()) return ToGrpc(cp.status());
    resp->set_seq(cp->seq);
    for (const std::string& c : cp->collections) resp->add_collections(c);
    return grpc::Status::OK;
  }

 private:
  // The checkpoint `name` when the caller may read its scope. A checkpoint
  // that exists but is out of the caller's scope is answered as one that
  // does not exist: a token learns nothing of other consumers' checkpoints.
  // A token with no read grant at all is PERMISSION_DENIED before any lookup.
  absl::StatusOr<Store::CheckpointInfo> ReadableCheckpoint(grpc::CallbackServerContext* ctx,
                                                           const char* method,
                                                           const std::string& name) {
    if (grpc::Status s = deps_->auth->CanReadAny(ctx, method); !s.ok()) return FromGrpc(s);
    auto cp = deps_->store->GetCheckpointInfo(name);
    if (cp.ok() && deps_->auth->CanRead(ctx, method, cp->collections).ok()) return cp;
    if (!cp.ok() && !absl::IsNotFound(cp.status())) return cp.status();
    if (!deps_->auth->enabled()) return cp.status();
    return absl::NotFoundError(
        absl::StrCat("no checkpoint named '", Excerpt(name), "' that this token may read"));
  }

  Deps* deps_;
  Dispatcher* dispatcher_;
};

// ---------------------------------------------------------------------------
// Admin.

// Admin calls are logged under one name when denied: every one needs the
// admin grant, whatever it does.
constexpr const char* kAdmin = "Admin";
// What one Stats or ListCheckpoints answer holds of each list.
constexpr int kMaxStatsEntries = 1000;
constexpr uint64_t kMaxRetentionSeconds = uint64_t{100} * 365 * 24 * 3600;

class AdminService final
    : public v1::Admin::WithRawCallbackMethod_PutSource<
          v1::Admin::WithRawCallbackMethod_GetSource<v1::Admin::WithRawCallbackMethod_ListSources<
              v1::Admin::WithRawCallbackMethod_RemoveSource<v1::Admin::WithRawCallbackMethod_Stats<
                  v1::Admin::WithRawCallbackMethod_SetRetention<
                      v1::Admin::WithRawCallbackMethod_GetRetention<
                          v1::Admin::WithRawCallbackMethod_Compact<
                              v1::Admin::WithRawCallbackMethod_ListCheckpoints<
                                  v1::Admin::WithRawCallbackMethod_DeleteCheckpoint<
                                      v1::Admin::Service>>>>>>>>>> {
 public:
  AdminService(Deps* deps, Dispatcher* dispatcher) : deps_(deps), dispatcher_(dispatcher) {}

  grpc::ServerUnaryReactor* PutSource(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                      grpc::ByteBuffer* out) override {
    return Unary<v1::PutSourceRequest, v1::PutSourceResponse>(
        deps_, ctx, in, out, [&](const v1::PutSourceRequest* req, v1::PutSourceResponse* resp) {
          return DoPutSource(ctx, req, resp);
        });
  }

  grpc::Status DoPutSource(grpc::CallbackServerContext* ctx, const v1::PutSourceRequest* req,
                           v1::PutSourceResponse*) {
    if (grpc::Status s = deps_->auth->CanAdmin(ctx, kAdmin); !s.ok()) return s;
    SourceDefinition source = FromProto(req->source());
    if (absl::Status s = formats::CheckSource(source); !s.ok()) return ToGrpc(s);
    return ToGrpc(deps_->store->PutSource(source));
  }
  grpc::ServerUnaryReactor* GetSource(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                      grpc::ByteBuffer* out) override {
    return Unary<v1::GetSourceRequest, v1::Source>(
        deps_, ctx, in, out, [&](const v1::GetSourceRequest* req, v1::Source* resp) {
          return DoGetSource(ctx, req, resp);
        });
  }

  grpc::Status DoGetSource(grpc::CallbackServerContext* ctx, const v1::GetSourceRequest* req,
                           v1::Source* resp) {
    if (grpc::Status s = deps_->auth->CanAdmin(ctx, kAdmin); !s.ok()) return s;
    auto d = deps_->store->GetSource(req->name());
    if (d.ok()) ToProto(*d, resp);
    return ToGrpc(d.status());
  }
  grpc::ServerUnaryReactor* ListSources(grpc::CallbackServerContext* ctx,
                                        const grpc::ByteBuffer* in,
                                        grpc::ByteBuffer* out) override {
    return Unary<v1::ListSourcesRequest, v1::ListSourcesResponse>(
        deps_, ctx, in, out, [&](const v1::ListSourcesRequest* req, v1::ListSourcesResponse* resp) {
          return DoListSources(ctx, req, resp);
        });
  }

  grpc::Status DoListSources(grpc::CallbackServerContext* ctx, const v1::ListSourcesRequest*,
                             v1::ListSourcesResponse* resp) {
    if (grpc::Status s = deps_->auth->CanAdmin(ctx, kAdmin); !s.ok()) return s;
    auto all = deps_->store->ListSources();
    if (all.ok()) {
      for (const auto& d : *all) ToProto(d, resp->add_sources());
    }
    return ToGrpc(all.status());
  }
  grpc::ServerUnaryReactor* RemoveSource(grpc::CallbackServerContext* ctx,
                                         const grpc::ByteBuffer* in,
                                         grpc::ByteBuffer* out) override {
    return Unary<v1::RemoveSourceRequest, v1::RemoveSourceResponse>(
        deps_, ctx, in, out,
        [&](const v1::RemoveSourceRequest* req, v1::RemoveSourceResponse* resp) {
          return DoRemoveSource(ctx, req, resp);
        });
  }

  grpc::Status DoRemoveSource(grpc::CallbackServerContext* ctx, const v1::RemoveSourceRequest* req,
                              v1::RemoveSourceResponse*) {
    if (grpc::Status s = deps_->auth->CanAdmin(ctx, kAdmin); !s.ok()) return s;
    return ToGrpc(deps_->store->RemoveSource(req->name()));
  }
  grpc::ServerUnaryReactor* Stats(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                  grpc::ByteBuffer* out) override {
    return Unary<v1::StatsRequest, v1::StatsResponse>(
        deps_, ctx, in, out, [&](const v1::StatsRequest* req, v1::StatsResponse* resp) {
          return DoStats(ctx, req, resp);
        });
  }

  grpc::Status DoStats(grpc::CallbackServerContext* ctx, const v1::StatsRequest*,
                       v1::StatsResponse* resp) {
    if (grpc::Status s = deps_->auth->CanAdmin(ctx, kAdmin); !s.ok()) return s;
    StoreStats st = deps_->store->Stats();
    resp->set_last_seq(st.last_seq);
    resp->set_oldest_seq(st.oldest_seq);
    *resp->mutable_oldest_position() = ToProto(st.oldest_position);
    for (const auto& [name, s] : st.sources) {
      if (resp->sources_size() >= kMaxStatsEntries) {
        resp->set_truncated(true);
        break;
      }
      v1::SourceStats& out = (*resp->mutable_sources())[name];
      out.set_accepted(s.accepted);
      out.set_duplicates(s.duplicates);
      out.set_conflicts(s.conflicts);
      out.set_rejected_batches(s.rejected_batches);
      *out.mutable_last_position() = ToProto(s.last_position);
    }
    for (const auto& [id, delivered] : dispatcher_->Delivered()) {
      if (resp->subscriptions_size() >= kMaxStatsEntries) {
        resp->set_truncated(true);
        break;
      }
      v1::SubscriptionStats* sub = resp->add_subscriptions();
      sub->set_id(id);
      sub->set_delivered_seq(delivered);
      sub->set_lag(st.last_seq > delivered ? st.last_seq - delivered : 0);
    }
    auto checkpoints = deps_->store->ListCheckpoints();
    if (!checkpoints.ok()) return ToGrpc(checkpoints.status());
    for (const auto& [name, seq] : *checkpoints) {
      // A name stored before names were bounded is left out, not sent.
      if (resp->checkpoints_size() >= kMaxStatsEntries || name.size() > kMaxNameBytes) {
        resp->set_truncated(true);
        if (resp->checkpoints_size() >= kMaxStatsEntries) break;
        continue;
      }
      (*resp->mutable_checkpoints())[name] = seq;
    }
    return grpc::Status::OK;
  }

  grpc::ServerUnaryReactor* ListCheckpoints(grpc::CallbackServerContext* ctx,
                                            const grpc::ByteBuffer* in,
                                            grpc::ByteBuffer* out) override {
    return Unary<v1::ListCheckpointsRequest, v1::ListCheckpointsResponse>(
        deps_, ctx, in, out,
        [&](const v1::ListCheckpointsRequest* req, v1::ListCheckpointsResponse* resp) {
          return DoListCheckpoints(ctx, req, resp);
        });
  }

  grpc::Status DoListCheckpoints(grpc::CallbackServerContext* ctx,
                                 const v1::ListCheckpointsRequest* req,
                                 v1::ListCheckpointsResponse* resp) {
    if (grpc::Status s = deps_->auth->CanAdmin(ctx, kAdmin); !s.ok()) return s;
    auto all = deps_->store->ListCheckpointInfos();
    if (!all.ok()) return ToGrpc(all.status());
    int limit = req->limit() == 0 || req->limit() > kMaxStatsEntries
                    ? kMaxStatsEntries
                    : static_cast<int>(req->limit());
    for (auto it = all->upper_bound(req->after()); it != all->end(); ++it) {
      if (resp->checkpoints_size() >= limit) {
        resp->set_next(resp->checkpoints().rbegin()->name());
        break;
      }
      v1::Checkpoint* c = resp->add_checkpoints();
      c->set_name(Excerpt(it->first, kMaxNameBytes));
      c->set_seq(it->second.seq);
      for (const std::string& col : it->second.collections) c->add_collections(col);
    }
    return grpc::Status::OK;
  }

  grpc::ServerUnaryReactor* DeleteCheckpoint(grpc::CallbackServerContext* ctx,
                                             const grpc::ByteBuffer* in,
                                             grpc::ByteBuffer* out) override {
    return Unary<v1::DeleteCheckpointRequest, v1::DeleteCheckpointResponse>(
        deps_, ctx, in, out,
        [&](const v1::DeleteCheckpointRequest* req, v1::DeleteCheckpointResponse* resp) {
          return DoDeleteCheckpoint(ctx, req, resp);
        });
  }

  grpc::Status DoDeleteCheckpoint(grpc::CallbackServerContext* ctx,
                                  const v1::DeleteCheckpointRequest* req,
                                  v1::DeleteCheckpointResponse*) {
    if (grpc::Status s = deps_->auth->CanAdmin(ctx, kAdmin); !s.ok()) return s;
    return ToGrpc(deps_->store->DeleteCheckpoint(req->name()));
  }
  grpc::ServerUnaryReactor* SetRetention(grpc::CallbackServerContext* ctx,
                                         const grpc::ByteBuffer* in,
                                         grpc::ByteBuffer* out) override {
    return Unary<v1::SetRetentionRequest, v1::SetRetentionResponse>(
        deps_, ctx, in, out,
        [&](const v1::SetRetentionRequest* req, v1::SetRetentionResponse* resp) {
          return DoSetRetention(ctx, req, resp);
        });
  }

  grpc::Status DoSetRetention(grpc::CallbackServerContext* ctx, const v1::SetRetentionRequest* req,
                              v1::SetRetentionResponse*) {
    if (grpc::Status s = deps_->auth->CanAdmin(ctx, kAdmin); !s.ok()) return s;
    RetentionOptions r;
    if (uint64_t age = req->retention().max_age_seconds(); age > kMaxRetentionSeconds) {
      return grpc::Status(
          grpc::StatusCode::INVALID_ARGUMENT,
          absl::StrCat("retention.max_age_seconds ", age, " is out of range: 0 (no age limit) to ",
                       kMaxRetentionSeconds, " (100 years)"));
    }
    if (req->retention().max_age_seconds()) {
      r.max_age = absl::Seconds(static_cast<int64_t>(req->retention().max_age_seconds()));
    }
    if (req->retention().max_commits()) r.max_commits = req->retention().max_commits();
    return ToGrpc(deps_->store->SetRetention(r));
  }
  grpc::ServerUnaryReactor* GetRetention(grpc::CallbackServerContext* ctx,
                                         const grpc::ByteBuffer* in,
                                         grpc::ByteBuffer* out) override {
    return Unary<v1::GetRetentionRequest, v1::Retention>(
        deps_, ctx, in, out, [&](const v1::GetRetentionRequest* req, v1::Retention* resp) {
          return DoGetRetention(ctx, req, resp);
        });
  }

  grpc::Status DoGetRetention(grpc::CallbackServerContext* ctx, const v1::GetRetentionRequest*,
                              v1::Retention* resp) {
    if (grpc::Status s = deps_->auth->CanAdmin(ctx, kAdmin); !s.ok()) return s;
    RetentionOptions r = deps_->store->Retention();
    if (r.max_age) resp->set_max_age_seconds(absl::ToInt64Seconds(*r.max_age));
    if (r.max_commits) resp->set_max_commits(*r.max_commits);
    return grpc::Status::OK;
  }
  grpc::ServerUnaryReactor* Compact(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                    grpc::ByteBuffer* out) override {
    return Unary<v1::CompactRequest, v1::CompactResponse>(
        deps_, ctx, in, out, [&](const v1::CompactRequest* req, v1::CompactResponse* resp) {
          return DoCompact(ctx, req, resp);
        });
  }

  grpc::Status DoCompact(grpc::CallbackServerContext* ctx, const v1::CompactRequest*,
                         v1::CompactResponse*) {
    if (grpc::Status s = deps_->auth->CanAdmin(ctx, kAdmin); !s.ok()) return s;
    return ToGrpc(deps_->store->CompactNow());
  }

 private:
  Deps* deps_;
  Dispatcher* dispatcher_;
};

// ---------------------------------------------------------------------------

absl::StatusOr<std::string> ReadFile(const std::string& path, const char* what) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", what, " ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// DESIGN §7 Security: what is served is said, never implied.
absl::Status CheckSecurity(const ServerOptions& o) {
  if (o.tls_cert_file.empty() != o.tls_key_file.empty()) {
    return absl::InvalidArgumentError("--tls-cert and --tls-key go together");
  }
  if (!o.tls_client_ca_file.empty() && o.tls_cert_file.empty()) {
    return absl::InvalidArgumentError(
        "--tls-client-ca needs --tls-cert and --tls-key: mutual TLS is TLS first");
  }
  bool open = o.tokens_file.empty() && o.tls_cert_file.empty();
  if (!IsLoopback(o.listen) && open) {
    if (!o.insecure_allow_remote) {
      return absl::FailedPreconditionError(absl::StrCat(
          "refusing to listen on ", o.listen,
          " (not loopback) without --tokens or --tls-cert: anyone who can reach it could "
          "read and write everything; give --insecure-allow-remote if that is what you want"));
    }
    spdlog::warn(
        "listening on {} (not loopback) with no tokens and no TLS "
        "(--insecure-allow-remote): every caller may read and write everything",
        o.listen);
  } else if (!IsLoopback(o.listen) && o.tokens_file.empty()) {
    spdlog::warn(
        "listening on {} with TLS but no tokens: every caller that can connect may "
        "read and write everything",
        o.listen);
  }
  return absl::OkStatus();
}

class ServerImpl : public Server {
 public:
  ~ServerImpl() override { Shutdown(); }

  absl::Status Init(const ServerOptions& options) {
    options_ = options;
    CAIRN_RETURN_IF_ERROR(CheckSecurity(options_));
    if (!options_.tokens_file.empty()) {
      CAIRN_ASSIGN_OR_RETURN(auth_, Auth::FromFile(options_.tokens_file));
    }
    CAIRN_ASSIGN_OR_RETURN(
        store_, Store::Open(options_.data_dir, Options{.retention = options_.retention}));
    deps_.store = store_.get();
    worker_ = std::make_unique<IngestWorker>(store_.get());
    deps_.worker = worker_.get();
    deps_.auth = &auth_;
    deps_.options = &options_;
    dispatcher_ = std::make_unique<Dispatcher>(&deps_);
    ingest_ = std::make_unique<IngestService>(&deps_);
    sessions_ = std::make_unique<SessionsService>(&deps_);
    query_ = std::make_unique<QueryService>(&deps_, dispatcher_.get());
    admin_ = std::make_unique<AdminService>(&deps_, dispatcher_.get());

    std::shared_ptr<grpc::ServerCredentials> creds = grpc::InsecureServerCredentials();
    if (!options_.tls_cert_file.empty() || !options_.tls_key_file.empty()) {
      grpc::SslServerCredentialsOptions ssl;
      CAIRN_ASSIGN_OR_RETURN(std::string cert, ReadFile(options_.tls_cert_file, "TLS cert"));
      CAIRN_ASSIGN_OR_RETURN(std::string key, ReadFile(options_.tls_key_file, "TLS key"));
      ssl.pem_key_cert_pairs.push_back({key, cert});
      if (!options_.tls_client_ca_file.empty()) {
        CAIRN_ASSIGN_OR_RETURN(ssl.pem_root_certs,
                               ReadFile(options_.tls_client_ca_file, "client CA"));
        ssl.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
      }
      creds = grpc::SslServerCredentials(ssl);
    }
    grpc::EnableDefaultHealthCheckService(true);
    grpc::reflection::InitProtoReflectionServerBuilderPlugin();
    grpc::ServerBuilder builder;
    builder.AddListeningPort(options_.listen, creds, &port_);
    builder.SetMaxReceiveMessageSize(options_.max_message_bytes);
    builder.SetMaxSendMessageSize(options_.max_message_bytes);
    builder.RegisterService(ingest_.get());
    builder.RegisterService(sessions_.get());
    builder.RegisterService(query_.get());
    builder.RegisterService(admin_.get());
    server_ = builder.BuildAndStart();
    if (!server_ || port_ == 0) {
      return absl::UnavailableError(absl::StrCat("cannot listen on ", options_.listen));
    }
    spdlog::info("cairnd listening on {} (port {}), data in {}, auth {}, tls {}", options_.listen,
                 port_, options_.data_dir, auth_.enabled() ? "on" : "off",
                 options_.tls_cert_file.empty() ? "off" : "on");
    return absl::OkStatus();
  }

  int port() const override { return port_; }

  void Shutdown() override {
    if (shut_down_.exchange(true)) {
      done_.WaitForNotification();
      return;
    }
    spdlog::info("shutting down: finishing in-flight batches, ending subscriptions");
    deps_.shutting_down.store(true);
    if (server_) {
      server_->GetHealthCheckService()->SetServingStatus(false);
      dispatcher_->EndAll();
      // Calls still running after 2 s are cancelled; a batch already inside
      // the engine completes regardless (its ack may be lost; a retry then
      // reports duplicates).
      server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
    }
    if (dispatcher_) dispatcher_->Stop();
    server_.reset();
    if (worker_) worker_->Stop();
    store_.reset();
    spdlog::info("store closed");
    done_.Notify();
  }

  void Wait() override { done_.WaitForNotification(); }

 private:
  ServerOptions options_;
  Auth auth_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<IngestWorker> worker_;
  Deps deps_;
  std::unique_ptr<Dispatcher> dispatcher_;
  std::unique_ptr<IngestService> ingest_;
  std::unique_ptr<SessionsService> sessions_;
  std::unique_ptr<QueryService> query_;
  std::unique_ptr<AdminService> admin_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::atomic<bool> shut_down_{false};
  absl::Notification done_;
};

}  // namespace

bool IsLoopback(std::string_view listen) {
  if (listen.substr(0, 5) == "unix:") return true;
  std::string_view host = listen;
  if (!host.empty() && host[0] == '[') {
    host = host.substr(1, host.find(']') == std::string_view::npos ? 0 : host.find(']') - 1);
    return host == "::1";
  }
  if (size_t colon = host.rfind(':'); colon != std::string_view::npos) host = host.substr(0, colon);
  if (host == "localhost") return true;
  // A numeric 127.0.0.0/8 address, not a host name that starts with "127.".
  in_addr a{};
  return inet_pton(AF_INET, std::string(host).c_str(), &a) == 1 && (ntohl(a.s_addr) >> 24) == 127;
}

absl::StatusOr<std::unique_ptr<Server>> Server::Start(const ServerOptions& options) {
  auto server = std::make_unique<ServerImpl>();
  CAIRN_RETURN_IF_ERROR(server->Init(options));
  return std::unique_ptr<Server>(std::move(server));
}

}  // namespace cairn::server
