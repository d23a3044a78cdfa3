// Query.Get / History / Snapshot / Subscribe and the checkpoint calls.
#include "cairn/status.h"
#include "cairn/v1/cairn.grpc.pb.h"
#include "dispatcher.h"
#include "service.h"

namespace cairn::server {
namespace {

using wire::FromProto;
using wire::ToGrpc;
using wire::ToProto;

// Snapshots stream from a cursor, one entity per message.
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

SnapshotReactor::SnapshotReactor(Deps* deps, Dispatcher* dispatcher,
                                 grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in)
    : deps_(deps), dispatcher_(dispatcher) {
  v1::SnapshotRequest parsed;
  Caller caller;
  if (grpc::Status s = ParseRequest(deps, ctx, in, &parsed, &caller); !s.ok()) {
    Finish(s);
    return;
  }
  const v1::SnapshotRequest* req = &parsed;
  std::vector<std::string> collections;
  if (!req->collection().empty()) collections.push_back(req->collection());
  if (absl::Status s = deps->auth->CanRead(caller, "Query.Snapshot", collections); !s.ok()) {
    Finish(ToGrpc(s));
    return;
  }
  // A snapshot pins a RocksDB snapshot while it streams: it counts as a read
  // stream.
  if (!dispatcher_->Reserve()) {
    Finish(TooManyReadStreams(deps));
    return;
  }
  reserved_ = true;
  auto cursor = deps->store->NewSnapshot(FromProto(*req));
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
        [&](const Caller& caller, const v1::GetRequest* req, v1::Entity* resp) {
          return DoGet(caller, req, resp);
        });
  }

  absl::Status DoGet(const Caller& caller, const v1::GetRequest* req, v1::Entity* resp) {
    CAIRN_RETURN_IF_ERROR(deps_->auth->CanRead(caller, "Query.Get", {req->collection()}));
    CAIRN_ASSIGN_OR_RETURN(Entity e, deps_->store->Get(req->collection(), req->key()));
    ToProto(e, resp);
    return absl::OkStatus();
  }

  grpc::ServerWriteReactor<grpc::ByteBuffer>* Snapshot(grpc::CallbackServerContext* ctx,
                                                       const grpc::ByteBuffer* in) override {
    return new SnapshotReactor(deps_, dispatcher_, ctx, in);
  }

  grpc::ServerUnaryReactor* History(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                    grpc::ByteBuffer* out) override {
    return Unary<v1::HistoryRequest, v1::HistoryResponse>(
        deps_, ctx, in, out,
        [&](const Caller& caller, const v1::HistoryRequest* req, v1::HistoryResponse* resp) {
          return DoHistory(caller, req, resp);
        });
  }

  absl::Status DoHistory(const Caller& caller, const v1::HistoryRequest* req,
                         v1::HistoryResponse* resp) {
    CAIRN_RETURN_IF_ERROR(deps_->auth->CanRead(caller, "Query.History", {req->collection()}));
    CAIRN_ASSIGN_OR_RETURN(std::vector<Version> versions,
                           deps_->store->History(req->collection(), req->key(), FromProto(*req)));
    for (const auto& v : versions) ToProto(v, resp->add_versions());
    return absl::OkStatus();
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
    Caller caller;
    if (grpc::Status s = ParseRequest(deps_, ctx, in, &parsed, &caller); !s.ok()) return fail(s);
    const v1::SubscribeRequest* req = &parsed;
    if (deps_->shutting_down.load()) return fail(Unavailable());
    std::vector<std::string> collections(req->collections().begin(), req->collections().end());
    if (absl::Status s = deps_->auth->CanRead(caller, "Query.Subscribe", collections); !s.ok()) {
      return fail(ToGrpc(s));
    }
    if (!dispatcher_->Reserve()) return fail(TooManyReadStreams(deps_));
    // From here every failure gives the place back.
    auto fail_released = [&](const grpc::Status& s) {
      dispatcher_->Release();
      return fail(s);
    };
    SubscribeOptions o = FromProto(*req);
    if (req->start_case() == v1::SubscribeRequest::kCheckpoint) {
      auto cp = ReadableCheckpoint(deps_, caller, "Query.Subscribe", req->checkpoint());
      if (!cp.ok()) return fail_released(ToGrpc(cp.status()));
      o.start = SubscribeOptions::Start::kFromSeq;
      o.from_seq = cp->seq;
    }
    auto sub = deps_->store->Subscribe(o);
    if (!sub.ok()) return fail_released(ToGrpc(sub.status()));
    auto* r = new SubscribeReactor(dispatcher_, deps_, dispatcher_->budget(), ctx,
                                   dispatcher_->NextId(), *std::move(sub), req->max_batch());
    dispatcher_->Add(r);
    r->Pump();
    return r;
  }

  // Checkpoints belong to a read scope (server::CommitCheckpoint and
  // ReadableCheckpoint in service.h).
  grpc::ServerUnaryReactor* CommitCheckpoint(grpc::CallbackServerContext* ctx,
                                             const grpc::ByteBuffer* in,
                                             grpc::ByteBuffer* out) override {
    return Unary<v1::CommitCheckpointRequest, v1::CommitCheckpointResponse>(
        deps_, ctx, in, out,
        [&](const Caller& caller, const v1::CommitCheckpointRequest* req,
            v1::CommitCheckpointResponse* resp) { return DoCommitCheckpoint(caller, req, resp); });
  }

  absl::Status DoCommitCheckpoint(const Caller& caller, const v1::CommitCheckpointRequest* req,
                                  v1::CommitCheckpointResponse*) {
    std::vector<std::string> collections(req->collections().begin(), req->collections().end());
    return server::CommitCheckpoint(deps_, caller, "Query.CommitCheckpoint", req->name(),
                                    req->seq(), collections);
  }

  grpc::ServerUnaryReactor* GetCheckpoint(grpc::CallbackServerContext* ctx,
                                          const grpc::ByteBuffer* in,
                                          grpc::ByteBuffer* out) override {
    return Unary<v1::GetCheckpointRequest, v1::GetCheckpointResponse>(
        deps_, ctx, in, out,
        [&](const Caller& caller, const v1::GetCheckpointRequest* req,
            v1::GetCheckpointResponse* resp) { return DoGetCheckpoint(caller, req, resp); });
  }

  absl::Status DoGetCheckpoint(const Caller& caller, const v1::GetCheckpointRequest* req,
                               v1::GetCheckpointResponse* resp) {
    CAIRN_ASSIGN_OR_RETURN(Store::CheckpointInfo cp,
                           ReadableCheckpoint(deps_, caller, "Query.GetCheckpoint", req->name()));
    resp->set_seq(cp.seq);
    for (const std::string& c : cp.collections) resp->add_collections(c);
    return absl::OkStatus();
  }

 private:
  Deps* deps_;
  Dispatcher* dispatcher_;
};

}  // namespace

absl::StatusOr<Store::CheckpointInfo> ReadableCheckpoint(Deps* deps, const Caller& caller,
                                                         const char* method,
                                                         const std::string& name) {
  CAIRN_RETURN_IF_ERROR(deps->auth->CanReadAny(caller, method));
  auto cp = deps->store->GetCheckpointInfo(name);
  if (cp.ok() && deps->auth->CanRead(caller, method, cp->collections).ok()) return cp;
  if (!cp.ok() && !absl::IsNotFound(cp.status())) return cp.status();
  if (!deps->auth->enabled()) return cp.status();
  return absl::NotFoundError(
      absl::StrCat("no checkpoint named '", Excerpt(name), "' that this token may read"));
}

absl::Status CommitCheckpoint(Deps* deps, const Caller& caller, const char* method,
                              const std::string& name, uint64_t seq,
                              const std::vector<std::string>& collections) {
  CAIRN_RETURN_IF_ERROR(deps->auth->CanRead(caller, method, collections));
  auto may_move = [&](const Store::CheckpointInfo& existing) {
    return deps->auth->CanRead(caller, method, existing.collections);
  };
  return deps->store->PutCheckpoint(name, seq, collections, may_move);
}

std::unique_ptr<grpc::Service> NewQueryService(Deps* deps, Dispatcher* dispatcher) {
  return std::make_unique<QueryService>(deps, dispatcher);
}

}  // namespace cairn::server
