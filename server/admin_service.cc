// Admin.*: sources, stats, retention, compaction, checkpoints. Every call
// needs the admin grant.
#include "backups.h"
#include "cairn/connectors.h"
#include "cairn/formats.h"
#include "cairn/status.h"
#include "cairn/v1/cairn.grpc.pb.h"
#include "connectors_admin.h"
#include "dispatcher.h"
#include "service.h"

namespace cairn::server {
namespace {

using wire::FromProto;
using wire::ToProto;

// Admin calls are logged under one name when denied: every one needs the
// admin grant, whatever it does.
constexpr const char* kAdmin = "Admin";
// What one Stats or ListCheckpoints answer holds of each list.
constexpr int kMaxStatsEntries = 1000;

// The connector calls (connectors_admin.h), admin only.
using SinkMethods = v1::Admin::WithRawCallbackMethod_PutSink<
    v1::Admin::WithRawCallbackMethod_GetSink<v1::Admin::WithRawCallbackMethod_ListSinks<
        v1::Admin::WithRawCallbackMethod_RemoveSink<v1::Admin::WithRawCallbackMethod_SinkStatus<
            v1::Admin::WithRawCallbackMethod_ListDeadLetters<
                v1::Admin::WithRawCallbackMethod_ReplayDeadLetters<v1::Admin::Service>>>>>>>;
using ConnectorMethods = v1::Admin::WithRawCallbackMethod_PutConnector<
    v1::Admin::WithRawCallbackMethod_GetConnector<v1::Admin::WithRawCallbackMethod_ListConnectors<
        v1::Admin::WithRawCallbackMethod_RemoveConnector<
            v1::Admin::WithRawCallbackMethod_ConnectorStatus<SinkMethods>>>>>;

class AdminService final
    : public v1::Admin::WithRawCallbackMethod_PutSource<
          v1::Admin::WithRawCallbackMethod_GetSource<v1::Admin::WithRawCallbackMethod_ListSources<
              v1::Admin::WithRawCallbackMethod_RemoveSource<v1::Admin::WithRawCallbackMethod_Stats<
                  v1::Admin::WithRawCallbackMethod_SetRetention<
                      v1::Admin::WithRawCallbackMethod_GetRetention<
                          v1::Admin::WithRawCallbackMethod_Compact<
                              v1::Admin::WithRawCallbackMethod_ListCheckpoints<
                                  v1::Admin::WithRawCallbackMethod_DeleteCheckpoint<
                                      v1::Admin::WithRawCallbackMethod_Backup<
                                          ConnectorMethods>>>>>>>>>>> {
 public:
  AdminService(Deps* deps, Dispatcher* dispatcher) : deps_(deps), dispatcher_(dispatcher) {}

  grpc::ServerUnaryReactor* PutSource(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                      grpc::ByteBuffer* out) override {
    return Unary<v1::PutSourceRequest, v1::PutSourceResponse>(
        deps_, ctx, in, out,
        [&](const Caller& caller, const v1::PutSourceRequest* req, v1::PutSourceResponse* resp) {
          return DoPutSource(caller, req, resp);
        });
  }

  absl::Status DoPutSource(const Caller& caller, const v1::PutSourceRequest* req,
                           v1::PutSourceResponse*) {
    CAIRN_RETURN_IF_ERROR(deps_->auth->CanAdmin(caller, kAdmin));
    SourceDefinition source = FromProto(req->source());
    CAIRN_RETURN_IF_ERROR(formats::CheckSource(source));
    return deps_->store->PutSource(source);
  }
  grpc::ServerUnaryReactor* GetSource(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                      grpc::ByteBuffer* out) override {
    return Unary<v1::GetSourceRequest, v1::Source>(
        deps_, ctx, in, out,
        [&](const Caller& caller, const v1::GetSourceRequest* req, v1::Source* resp) {
          return DoGetSource(caller, req, resp);
        });
  }

  absl::Status DoGetSource(const Caller& caller, const v1::GetSourceRequest* req,
                           v1::Source* resp) {
    CAIRN_RETURN_IF_ERROR(deps_->auth->CanAdmin(caller, kAdmin));
    CAIRN_ASSIGN_OR_RETURN(SourceDefinition d, deps_->store->GetSource(req->name()));
    ToProto(d, resp);
    return absl::OkStatus();
  }
  grpc::ServerUnaryReactor* ListSources(grpc::CallbackServerContext* ctx,
                                        const grpc::ByteBuffer* in,
                                        grpc::ByteBuffer* out) override {
    return Unary<v1::ListSourcesRequest, v1::ListSourcesResponse>(
        deps_, ctx, in, out,
        [&](const Caller& caller, const v1::ListSourcesRequest* req,
            v1::ListSourcesResponse* resp) { return DoListSources(caller, req, resp); });
  }

  absl::Status DoListSources(const Caller& caller, const v1::ListSourcesRequest*,
                             v1::ListSourcesResponse* resp) {
    CAIRN_RETURN_IF_ERROR(deps_->auth->CanAdmin(caller, kAdmin));
    CAIRN_ASSIGN_OR_RETURN(std::vector<SourceDefinition> all, deps_->store->ListSources());
    for (const auto& d : all) ToProto(d, resp->add_sources());
    return absl::OkStatus();
  }
  grpc::ServerUnaryReactor* RemoveSource(grpc::CallbackServerContext* ctx,
                                         const grpc::ByteBuffer* in,
                                         grpc::ByteBuffer* out) override {
    return Unary<v1::RemoveSourceRequest, v1::RemoveSourceResponse>(
        deps_, ctx, in, out,
        [&](const Caller& caller, const v1::RemoveSourceRequest* req,
            v1::RemoveSourceResponse* resp) { return DoRemoveSource(caller, req, resp); });
  }

  absl::Status DoRemoveSource(const Caller& caller, const v1::RemoveSourceRequest* req,
                              v1::RemoveSourceResponse*) {
    CAIRN_RETURN_IF_ERROR(deps_->auth->CanAdmin(caller, kAdmin));
    return deps_->store->RemoveSource(req->name());
  }
  grpc::ServerUnaryReactor* Stats(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                  grpc::ByteBuffer* out) override {
    return Unary<v1::StatsRequest, v1::StatsResponse>(
        deps_, ctx, in, out,
        [&](const Caller& caller, const v1::StatsRequest* req, v1::StatsResponse* resp) {
          return DoStats(caller, req, resp);
        });
  }

  absl::Status DoStats(const Caller& caller, const v1::StatsRequest*, v1::StatsResponse* resp) {
    CAIRN_RETURN_IF_ERROR(deps_->auth->CanAdmin(caller, kAdmin));
    StoreStats st = deps_->store->Stats();
    st.resources.subscriber_buffers = dispatcher_->budget()->used();
    ToProto(st, kMaxStatsEntries, resp);
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
    CAIRN_ASSIGN_OR_RETURN(auto checkpoints, deps_->store->ListCheckpoints());
    for (const auto& [name, seq] : checkpoints) {
      // A name stored before names were bounded is left out, not sent.
      if (resp->checkpoints_size() >= kMaxStatsEntries || name.size() > kMaxNameBytes) {
        resp->set_truncated(true);
        if (resp->checkpoints_size() >= kMaxStatsEntries) break;
        continue;
      }
      (*resp->mutable_checkpoints())[name] = seq;
    }
    for (const connectors::SinkStatus& s : deps_->connectors->SinkStatusAll()) {
      if (resp->sinks_size() >= kMaxStatsEntries) {
        resp->set_truncated(true);
        break;
      }
      ToProto(s, resp->add_sinks());
    }
    return absl::OkStatus();
  }

  grpc::ServerUnaryReactor* ListCheckpoints(grpc::CallbackServerContext* ctx,
                                            const grpc::ByteBuffer* in,
                                            grpc::ByteBuffer* out) override {
    return Unary<v1::ListCheckpointsRequest, v1::ListCheckpointsResponse>(
        deps_, ctx, in, out,
        [&](const Caller& caller, const v1::ListCheckpointsRequest* req,
            v1::ListCheckpointsResponse* resp) { return DoListCheckpoints(caller, req, resp); });
  }

  absl::Status DoListCheckpoints(const Caller& caller, const v1::ListCheckpointsRequest* req,
                                 v1::ListCheckpointsResponse* resp) {
    CAIRN_RETURN_IF_ERROR(deps_->auth->CanAdmin(caller, kAdmin));
    CAIRN_ASSIGN_OR_RETURN(auto all, deps_->store->ListCheckpointInfos());
    int limit = req->limit() == 0 || req->limit() > kMaxStatsEntries
                    ? kMaxStatsEntries
                    : static_cast<int>(req->limit());
    for (auto it = all.upper_bound(req->after()); it != all.end(); ++it) {
      if (resp->checkpoints_size() >= limit) {
        resp->set_next(resp->checkpoints().rbegin()->name());
        break;
      }
      v1::Checkpoint* c = resp->add_checkpoints();
      c->set_name(Excerpt(it->first, kMaxNameBytes));
      c->set_seq(it->second.seq);
      for (const std::string& col : it->second.collections) c->add_collections(col);
    }
    return absl::OkStatus();
  }

  grpc::ServerUnaryReactor* DeleteCheckpoint(grpc::CallbackServerContext* ctx,
                                             const grpc::ByteBuffer* in,
                                             grpc::ByteBuffer* out) override {
    return Unary<v1::DeleteCheckpointRequest, v1::DeleteCheckpointResponse>(
        deps_, ctx, in, out,
        [&](const Caller& caller, const v1::DeleteCheckpointRequest* req,
            v1::DeleteCheckpointResponse* resp) { return DoDeleteCheckpoint(caller, req, resp); });
  }

  absl::Status DoDeleteCheckpoint(const Caller& caller, const v1::DeleteCheckpointRequest* req,
                                  v1::DeleteCheckpointResponse*) {
    CAIRN_RETURN_IF_ERROR(deps_->auth->CanAdmin(caller, kAdmin));
    return deps_->store->DeleteCheckpoint(req->name());
  }
  grpc::ServerUnaryReactor* SetRetention(grpc::CallbackServerContext* ctx,
                                         const grpc::ByteBuffer* in,
                                         grpc::ByteBuffer* out) override {
    return Unary<v1::SetRetentionRequest, v1::SetRetentionResponse>(
        deps_, ctx, in, out,
        [&](const Caller& caller, const v1::SetRetentionRequest* req,
            v1::SetRetentionResponse* resp) { return DoSetRetention(caller, req, resp); });
  }

  absl::Status DoSetRetention(const Caller& caller, const v1::SetRetentionRequest* req,
                              v1::SetRetentionResponse*) {
    CAIRN_RETURN_IF_ERROR(deps_->auth->CanAdmin(caller, kAdmin));
    CAIRN_ASSIGN_OR_RETURN(RetentionOptions r, FromProto(req->retention()));
    return deps_->store->SetRetention(r);
  }
  grpc::ServerUnaryReactor* GetRetention(grpc::CallbackServerContext* ctx,
                                         const grpc::ByteBuffer* in,
                                         grpc::ByteBuffer* out) override {
    return Unary<v1::GetRetentionRequest, v1::Retention>(
        deps_, ctx, in, out,
        [&](const Caller& caller, const v1::GetRetentionRequest* req, v1::Retention* resp) {
          return DoGetRetention(caller, req, resp);
        });
  }

  absl::Status DoGetRetention(const Caller& caller, const v1::GetRetentionRequest*,
                              v1::Retention* resp) {
    CAIRN_RETURN_IF_ERROR(deps_->auth->CanAdmin(caller, kAdmin));
    *resp = ToProto(deps_->store->Retention());
    return absl::OkStatus();
  }
  grpc::ServerUnaryReactor* Compact(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                    grpc::ByteBuffer* out) override {
    return Unary<v1::CompactRequest, v1::CompactResponse>(
        deps_, ctx, in, out,
        [&](const Caller& caller, const v1::CompactRequest* req, v1::CompactResponse* resp) {
          return DoCompact(caller, req, resp);
        });
  }

  absl::Status DoCompact(const Caller& caller, const v1::CompactRequest*, v1::CompactResponse*) {
    CAIRN_RETURN_IF_ERROR(deps_->auth->CanAdmin(caller, kAdmin));
    return deps_->store->CompactNow();
  }
  // Like Compact, it runs on the calling gRPC thread until the backup is
  // taken (seconds to minutes); one backup at a time, a second waits.
  grpc::ServerUnaryReactor* Backup(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                   grpc::ByteBuffer* out) override {
    return Unary<v1::BackupRequest, v1::BackupResponse>(
        deps_, ctx, in, out,
        [&](const Caller& caller, const v1::BackupRequest* req, v1::BackupResponse* resp) {
          return DoBackup(caller, req, resp);
        });
  }

  absl::Status DoBackup(const Caller& caller, const v1::BackupRequest* req,
                        v1::BackupResponse* resp) {
    CAIRN_RETURN_IF_ERROR(deps_->auth->CanAdmin(caller, kAdmin));
    CAIRN_ASSIGN_OR_RETURN(BackupInfo b, TakeBackup(*deps_->store, *deps_->options, req->dir()));
    *resp->mutable_backup() = ToProto(b);
    return absl::OkStatus();
  }

  grpc::ServerUnaryReactor* PutConnector(grpc::CallbackServerContext* ctx,
                                         const grpc::ByteBuffer* in,
                                         grpc::ByteBuffer* out) override {
    return Unary<v1::PutConnectorRequest, v1::PutConnectorResponse>(
        deps_, ctx, in, out,
        [&](const Caller& caller, const v1::PutConnectorRequest* req, v1::PutConnectorResponse*) {
          CAIRN_RETURN_IF_ERROR(deps_->auth->CanAdmin(caller, kAdmin));
          return server::PutConnector(deps_, *req);
        });
  }
  grpc::ServerUnaryReactor* GetConnector(grpc::CallbackServerContext* ctx,
                                         const grpc::ByteBuffer* in,
                                         grpc::ByteBuffer* out) override {
    return Unary<v1::GetConnectorRequest, v1::Connector>(
        deps_, ctx, in, out,
        [&](const Caller& caller, const v1::GetConnectorRequest* req, v1::Connector* resp) {
          CAIRN_RETURN_IF_ERROR(deps_->auth->CanAdmin(caller, kAdmin));
          return server::GetConnector(deps_, *req, resp);
        });
  }
  grpc::ServerUnaryReactor* ListConnectors(grpc::CallbackServerContext* ctx,
                                           const grpc::ByteBuffer* in,
                                           grpc::ByteBuffer* out) override {
    return Unary<v1::ListConnectorsRequest, v1::ListConnectorsResponse>(
        deps_, ctx, in, out,
        [&](const Caller& caller, const v1::ListConnectorsRequest*,
            v1::ListConnectorsResponse* resp) {
          CAIRN_RETURN_IF_ERROR(deps_->auth->CanAdmin(caller, kAdmin));
          return server::ListConnectors(deps_, resp);
        });
  }
  grpc::ServerUnaryReactor* RemoveConnector(grpc::CallbackServerContext* ctx,
                                            const grpc::ByteBuffer* in,
                                            grpc::ByteBuffer* out) override {
    return Unary<v1::RemoveConnectorRequest, v1::RemoveConnectorResponse>(
        deps_, ctx, in, out,
        [&](const Caller& caller, const v1::RemoveConnectorRequest* req,
            v1::RemoveConnectorResponse*) {
          CAIRN_RETURN_IF_ERROR(deps_->auth->CanAdmin(caller, kAdmin));
          return server::RemoveConnector(deps_, *req);
        });
  }
  grpc::ServerUnaryReactor* ConnectorStatus(grpc::CallbackServerContext* ctx,
                                            const grpc::ByteBuffer* in,
                                            grpc::ByteBuffer* out) override {
    return Unary<v1::ConnectorStatusRequest, v1::ConnectorStatusResponse>(
        deps_, ctx, in, out,
        [&](const Caller& caller, const v1::ConnectorStatusRequest* req,
            v1::ConnectorStatusResponse* resp) {
          CAIRN_RETURN_IF_ERROR(deps_->auth->CanAdmin(caller, kAdmin));
          return server::ConnectorStatus(deps_, *req, resp);
        });
  }

  grpc::ServerUnaryReactor* PutSink(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                    grpc::ByteBuffer* out) override {
    return Unary<v1::PutSinkRequest, v1::PutSinkResponse>(
        deps_, ctx, in, out,
        [&](const Caller& caller, [[maybe_unused]] const v1::PutSinkRequest* req,
            [[maybe_unused]] v1::PutSinkResponse* resp) {
          CAIRN_RETURN_IF_ERROR(deps_->auth->CanAdmin(caller, kAdmin));
          return server::PutSink(deps_, *req);
        });
  }
  grpc::ServerUnaryReactor* GetSink(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                    grpc::ByteBuffer* out) override {
    return Unary<v1::GetSinkRequest, v1::Sink>(
        deps_, ctx, in, out,
        [&](const Caller& caller, [[maybe_unused]] const v1::GetSinkRequest* req,
            [[maybe_unused]] v1::Sink* resp) {
          CAIRN_RETURN_IF_ERROR(deps_->auth->CanAdmin(caller, kAdmin));
          return server::GetSink(deps_, *req, resp);
        });
  }
  grpc::ServerUnaryReactor* ListSinks(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                      grpc::ByteBuffer* out) override {
    return Unary<v1::ListSinksRequest, v1::ListSinksResponse>(
        deps_, ctx, in, out,
        [&](const Caller& caller, [[maybe_unused]] const v1::ListSinksRequest* req,
            [[maybe_unused]] v1::ListSinksResponse* resp) {
          CAIRN_RETURN_IF_ERROR(deps_->auth->CanAdmin(caller, kAdmin));
          return server::ListSinks(deps_, resp);
        });
  }
  grpc::ServerUnaryReactor* RemoveSink(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                       grpc::ByteBuffer* out) override {
    return Unary<v1::RemoveSinkRequest, v1::RemoveSinkResponse>(
        deps_, ctx, in, out,
        [&](const Caller& caller, [[maybe_unused]] const v1::RemoveSinkRequest* req,
            [[maybe_unused]] v1::RemoveSinkResponse* resp) {
          CAIRN_RETURN_IF_ERROR(deps_->auth->CanAdmin(caller, kAdmin));
          return server::RemoveSink(deps_, *req);
        });
  }
  grpc::ServerUnaryReactor* SinkStatus(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                       grpc::ByteBuffer* out) override {
    return Unary<v1::SinkStatusRequest, v1::SinkStatusResponse>(
        deps_, ctx, in, out,
        [&](const Caller& caller, [[maybe_unused]] const v1::SinkStatusRequest* req,
            [[maybe_unused]] v1::SinkStatusResponse* resp) {
          CAIRN_RETURN_IF_ERROR(deps_->auth->CanAdmin(caller, kAdmin));
          return server::SinkStatus(deps_, *req, resp);
        });
  }
  grpc::ServerUnaryReactor* ListDeadLetters(grpc::CallbackServerContext* ctx,
                                            const grpc::ByteBuffer* in,
                                            grpc::ByteBuffer* out) override {
    return Unary<v1::ListDeadLettersRequest, v1::ListDeadLettersResponse>(
        deps_, ctx, in, out,
        [&](const Caller& caller, [[maybe_unused]] const v1::ListDeadLettersRequest* req,
            [[maybe_unused]] v1::ListDeadLettersResponse* resp) {
          CAIRN_RETURN_IF_ERROR(deps_->auth->CanAdmin(caller, kAdmin));
          return server::ListDeadLetters(deps_, *req, resp);
        });
  }
  grpc::ServerUnaryReactor* ReplayDeadLetters(grpc::CallbackServerContext* ctx,
                                              const grpc::ByteBuffer* in,
                                              grpc::ByteBuffer* out) override {
    return Unary<v1::ReplayDeadLettersRequest, v1::ReplayDeadLettersResponse>(
        deps_, ctx, in, out,
        [&](const Caller& caller, [[maybe_unused]] const v1::ReplayDeadLettersRequest* req,
            [[maybe_unused]] v1::ReplayDeadLettersResponse* resp) {
          CAIRN_RETURN_IF_ERROR(deps_->auth->CanAdmin(caller, kAdmin));
          return server::ReplayDeadLetters(deps_, *req, resp);
        });
  }

 private:
  Deps* deps_;
  Dispatcher* dispatcher_;
};

}  // namespace

std::unique_ptr<grpc::Service> NewAdminService(Deps* deps, Dispatcher* dispatcher) {
  return std::make_unique<AdminService>(deps, dispatcher);
}

}  // namespace cairn::server
