// Sessions.Open / Upsert / Delete / Close: contribution sessions (DESIGN §6).
#include "cairn/formats.h"
#include "cairn/status.h"
#include "cairn/v1/cairn.grpc.pb.h"
#include "service.h"

namespace cairn::server {
namespace {

using wire::FromProto;
using wire::ToProto;

class SessionsService final
    : public v1::Sessions::WithRawCallbackMethod_Open<v1::Sessions::WithRawCallbackMethod_Upsert<
          v1::Sessions::WithRawCallbackMethod_Delete<v1::Sessions::WithRawCallbackMethod_Ingest<
              v1::Sessions::WithRawCallbackMethod_Close<v1::Sessions::Service>>>>> {
 public:
  explicit SessionsService(Deps* deps) : deps_(deps) {}

  grpc::ServerUnaryReactor* Open(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                 grpc::ByteBuffer* out) override {
    return Unary<v1::OpenSessionRequest, v1::OpenSessionResponse>(
        deps_, ctx, in, out,
        [&](const Caller& caller, const v1::OpenSessionRequest* req,
            v1::OpenSessionResponse* resp) { return DoOpen(caller, req, resp); });
  }

  absl::Status DoOpen(const Caller& caller, const v1::OpenSessionRequest* req,
                      v1::OpenSessionResponse* resp) {
    CAIRN_RETURN_IF_ERROR(deps_->auth->CanWrite(caller, "Sessions.Open", req->source()));
    CAIRN_ASSIGN_OR_RETURN(
        std::string id,
        deps_->store->OpenSession(req->source(), req->collection(), FromProto(req->mode())));
    resp->set_session_id(std::move(id));
    return absl::OkStatus();
  }

  grpc::ServerUnaryReactor* Upsert(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                   grpc::ByteBuffer* out) override {
    return Unary<v1::SessionUpsertRequest, v1::SessionReport>(
        deps_, ctx, in, out,
        [&](const Caller& caller, const v1::SessionUpsertRequest* req, v1::SessionReport* resp) {
          return DoUpsert(caller, req, resp);
        });
  }

  absl::Status DoUpsert(const Caller& caller, const v1::SessionUpsertRequest* req,
                        v1::SessionReport* resp) {
    CAIRN_ASSIGN_OR_RETURN(SessionInfo info,
                           Authorize(caller, "Sessions.Upsert", req->session_id()));
    std::vector<SessionRecord> records;
    for (const auto& r : req->records()) records.push_back({r.key(), r.document()});
    if (records.empty() && !req->payload().empty()) {
      CAIRN_ASSIGN_OR_RETURN(records, DecodeRecords(info, req->payload()));
    }
    CAIRN_ASSIGN_OR_RETURN(std::vector<std::string> keys,
                           deps_->store->SessionUpsert(req->session_id(), std::move(records)));
    for (auto& k : keys) resp->add_keys(std::move(k));
    return absl::OkStatus();
  }

  grpc::ServerUnaryReactor* Delete(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                   grpc::ByteBuffer* out) override {
    return Unary<v1::SessionDeleteRequest, v1::SessionReport>(
        deps_, ctx, in, out,
        [&](const Caller& caller, const v1::SessionDeleteRequest* req, v1::SessionReport* resp) {
          return DoDelete(caller, req, resp);
        });
  }

  absl::Status DoDelete(const Caller& caller, const v1::SessionDeleteRequest* req,
                        v1::SessionReport* resp) {
    CAIRN_RETURN_IF_ERROR(Authorize(caller, "Sessions.Delete", req->session_id()).status());
    CAIRN_ASSIGN_OR_RETURN(
        std::vector<std::string> keys,
        deps_->store->SessionDelete(req->session_id(), {req->keys().begin(), req->keys().end()}));
    for (auto& k : keys) resp->add_keys(std::move(k));
    return absl::OkStatus();
  }

  grpc::ServerUnaryReactor* Ingest(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                   grpc::ByteBuffer* out) override {
    return Unary<v1::SessionIngestRequest, v1::SessionIngestResponse>(
        deps_, ctx, in, out,
        [&](const Caller& caller, const v1::SessionIngestRequest* req,
            v1::SessionIngestResponse* resp) { return DoIngest(caller, req, resp); });
  }

  // An atomic session's post: canonical events, or a payload in the session
  // source's format; the caller's grant is checked on every event's source.
  absl::Status DoIngest(const Caller& caller, const v1::SessionIngestRequest* req,
                        v1::SessionIngestResponse* resp) {
    constexpr const char* kMethod = "Sessions.Ingest";
    CAIRN_ASSIGN_OR_RETURN(SessionInfo info, Authorize(caller, kMethod, req->session_id()));
    if (req->events_size() > 0 && !req->payload().empty()) {
      return absl::InvalidArgumentError("give events or payload, not both");
    }
    if (req->events_size() > static_cast<int>(kMaxBatchEvents)) {
      return TooManyEvents(req->events_size());
    }
    std::vector<Event> events;
    if (req->events_size() > 0) {
      CAIRN_ASSIGN_OR_RETURN(events, FromProto(req->events()));
    } else if (!req->payload().empty()) {
      CAIRN_ASSIGN_OR_RETURN(SourceDefinition source, deps_->store->GetSource(info.source));
      if (formats::SessionOnly(source.format)) {
        return absl::FailedPreconditionError(
            absl::StrCat("source '", source.name, "' is in format ", source.format,
                         ", whose records carry no position: use an accrue or replace session"));
      }
      auto decoded = formats::Decode(source, req->payload(), {.collection = info.collection});
      if (!decoded.ok()) {
        deps_->store->CountRejectedBatch(source.name);
        return decoded.status();
      }
      events = *std::move(decoded);
      if (events.size() > kMaxBatchEvents) return TooManyEvents(events.size());
    }
    for (const Event& e : events) {
      CAIRN_RETURN_IF_ERROR(deps_->auth->CanWrite(caller, kMethod, e.source));
    }
    resp->set_staged(events.size());
    CAIRN_ASSIGN_OR_RETURN(uint64_t total,
                           deps_->store->SessionIngest(req->session_id(), std::move(events)));
    resp->set_total(total);
    return absl::OkStatus();
  }

  grpc::ServerUnaryReactor* Close(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                  grpc::ByteBuffer* out) override {
    return Unary<v1::CloseSessionRequest, v1::CloseSessionResponse>(
        deps_, ctx, in, out,
        [&](const Caller& caller, const v1::CloseSessionRequest* req,
            v1::CloseSessionResponse* resp) { return DoClose(caller, req, resp); });
  }

  absl::Status DoClose(const Caller& caller, const v1::CloseSessionRequest* req,
                       v1::CloseSessionResponse* resp) {
    CAIRN_RETURN_IF_ERROR(Authorize(caller, "Sessions.Close", req->session_id()).status());
    CAIRN_ASSIGN_OR_RETURN(IngestResult r,
                           deps_->store->CloseSession(req->session_id(), req->commit()));
    ToProto(r, resp);
    return absl::OkStatus();
  }

 private:
  // The token before the lookup: a caller with no write grant learns
  // nothing of which sessions exist (ids are 128 random bits besides).
  absl::StatusOr<SessionInfo> Authorize(const Caller& caller, const char* method,
                                        const std::string& id) {
    CAIRN_RETURN_IF_ERROR(deps_->auth->CanWriteAny(caller, method));
    CAIRN_ASSIGN_OR_RETURN(SessionInfo info, deps_->store->GetSession(id));
    CAIRN_RETURN_IF_ERROR(deps_->auth->CanWrite(caller, method, info.source));
    return info;
  }

  static absl::Status TooManyEvents(size_t n) {
    return absl::InvalidArgumentError(absl::StrCat("the post holds ", n, " events; the limit is ",
                                                   kMaxBatchEvents, " per post: split it"));
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

}  // namespace

std::unique_ptr<grpc::Service> NewSessionsService(Deps* deps) {
  return std::make_unique<SessionsService>(deps);
}

}  // namespace cairn::server
