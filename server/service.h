// What cairnd's four gRPC services share: the dependencies every handler
// gets (Deps), the shape of a unary handler (authenticate, parse, handle,
// serialize), and the factories ServerImpl registers. One file per service
// implements them:
//
//   ingest_service.cc    Ingest.IngestEvents / IngestPayloads (bidi streams
//                        feeding the IngestWorker, ingest_worker.h)
//   sessions_service.cc  Sessions.Open / Upsert / Delete / Close
//   query_service.cc     Query.Get / History / Snapshot / Subscribe /
//                        checkpoints (subscriptions run on the Dispatcher,
//                        dispatcher.h)
//   admin_service.cc     Admin.*
//
// Every handler converts the request (proto/convert.h), calls the engine
// once, and converts the answer back; no business rule lives here.
#ifndef CAIRN_SERVER_SERVICE_H_
#define CAIRN_SERVER_SERVICE_H_

#include <grpcpp/grpcpp.h>
#include <grpcpp/impl/codegen/proto_utils.h>
#include <grpcpp/impl/codegen/service_type.h>

#include <atomic>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "auth.h"
#include "cairn/store.h"
#include "convert.h"
#include "server.h"

namespace cairn::server {

class IngestWorker;
class Dispatcher;
}  // namespace cairn::server
namespace cairn::connectors {
class Connectors;
}  // namespace cairn::connectors
namespace cairn::server {

// What every handler needs. Owned by ServerImpl, outlives every call.
// Events in one ingest request (or session post) at most: what a batch
// costs in memory (decoded events, the engine's indexed write batch) is
// bounded with it, whatever the message size allows (300,000 deletes fit in
// 9 MB).
inline constexpr size_t kMaxBatchEvents = 100000;

struct Deps {
  Store* store = nullptr;
  IngestWorker* worker = nullptr;
  connectors::Connectors* connectors = nullptr;
  const Auth* auth = nullptr;
  const ServerOptions* options = nullptr;
  std::atomic<bool> shutting_down{false};
  std::atomic<int> ingest_streams{0};
  // A stream ended since the last trim: the allocator is asked to give
  // freed memory back to the system (glibc keeps it in its arenas).
  std::atomic<bool> trim_soon{false};
};

std::unique_ptr<grpc::Service> NewIngestService(Deps* deps);
std::unique_ptr<grpc::Service> NewSessionsService(Deps* deps);
std::unique_ptr<grpc::Service> NewQueryService(Deps* deps, Dispatcher* dispatcher);
std::unique_ptr<grpc::Service> NewAdminService(Deps* deps, Dispatcher* dispatcher);

// Checkpoints belong to a read scope (DESIGN §4), for gRPC and HTTP alike:
// a token may create one only for collections it can read, and read or
// move one only when it can read the whole scope it was made for.
//
// The checkpoint `name` when the caller may read its scope. One that exists
// but is out of the caller's scope is answered as one that does not exist:
// a token learns nothing of other consumers' checkpoints. A token with no
// read grant at all is PERMISSION_DENIED before any lookup.
absl::StatusOr<Store::CheckpointInfo> ReadableCheckpoint(Deps* deps, const Caller& caller,
                                                         const char* method,
                                                         const std::string& name);
// Creates `name` for `collections` at `seq`, or moves it there.
absl::Status CommitCheckpoint(Deps* deps, const Caller& caller, const char* method,
                              const std::string& name, uint64_t seq,
                              const std::vector<std::string>& collections);

// The caller of a call, for Auth: its authorization metadata and peer.
Caller CallerOf(const grpc::CallbackServerContext* ctx);

// What every call answers once cairnd is shutting down.
grpc::Status Unavailable();

// Serializes a message for a raw method's write or reply.
template <typename Msg>
grpc::Status Serialize(const Msg& m, grpc::ByteBuffer* out) {
  bool own = false;
  return grpc::SerializationTraits<Msg>::Serialize(m, out, &own);
}

// The bytes of a received message.
std::string Bytes(const grpc::ByteBuffer& buf);

// Unary calls are registered raw and parsed here: gRPC's callback API
// answers a request it cannot parse with UNIMPLEMENTED and no message
// (grpc/grpc#30454). Here the token comes first (an unauthenticated caller
// learns nothing), then a request that does not parse is INVALID_ARGUMENT
// naming the field (a string that is not UTF-8), then the handler runs.
// *caller is the call's caller, taken from its metadata once, for the
// handler's own checks.
template <typename Req>
grpc::Status ParseRequest(Deps* deps, grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                          Req* req, Caller* caller) {
  const std::string& method = Req::descriptor()->full_name();
  *caller = CallerOf(ctx);
  if (absl::Status s = deps->auth->Authenticate(*caller, method); !s.ok()) {
    return wire::ToGrpc(s);
  }
  std::string bytes = Bytes(*in);
  if (req->ParseFromString(bytes)) return grpc::Status::OK;
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                      absl::StrCat("the request is not a ", method, ": ",
                                   wire::WhyUnparsable(Req::descriptor(), bytes)));
}

// A unary call: parse (as above), run
// `handler(const Caller&, const Req*, Resp*)` -> absl::Status, serialize the
// response.
template <typename Req, typename Resp, typename Fn>
grpc::ServerUnaryReactor* Unary(Deps* deps, grpc::CallbackServerContext* ctx,
                                const grpc::ByteBuffer* in, grpc::ByteBuffer* out, Fn handler) {
  auto* r = ctx->DefaultReactor();
  Req req;
  Caller caller;
  if (grpc::Status s = ParseRequest(deps, ctx, in, &req, &caller); !s.ok()) {
    r->Finish(s);
    return r;
  }
  Resp resp;
  grpc::Status s = wire::ToGrpc(handler(caller, &req, &resp));
  if (s.ok()) s = Serialize(resp, out);
  r->Finish(s);
  return r;
}

}  // namespace cairn::server

#endif  // CAIRN_SERVER_SERVICE_H_
