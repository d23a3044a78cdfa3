#include "connectors_admin.h"

#include "cairn/connectors.h"
#include "cairn/status.h"
#include "convert.h"

namespace cairn::server {

absl::Status PutConnector(Deps* deps, const v1::PutConnectorRequest& req) {
  CAIRN_ASSIGN_OR_RETURN(connectors::ConnectorDefinition d, wire::FromProto(req.connector()));
  return deps->connectors->Put(d);
}

absl::Status GetConnector(Deps* deps, const v1::GetConnectorRequest& req, v1::Connector* resp) {
  CAIRN_ASSIGN_OR_RETURN(connectors::ConnectorDefinition d, deps->connectors->Get(req.name()));
  wire::ToProto(d, resp);
  return absl::OkStatus();
}

absl::Status ListConnectors(Deps* deps, v1::ListConnectorsResponse* resp) {
  for (const connectors::ConnectorDefinition& d : deps->connectors->List()) {
    wire::ToProto(d, resp->add_connectors());
  }
  return absl::OkStatus();
}

absl::Status RemoveConnector(Deps* deps, const v1::RemoveConnectorRequest& req) {
  return deps->connectors->Remove(req.name());
}

absl::Status ConnectorStatus(Deps* deps, const v1::ConnectorStatusRequest& req,
                             v1::ConnectorStatusResponse* resp) {
  if (!req.name().empty()) {
    CAIRN_ASSIGN_OR_RETURN(connectors::ConnectorStatus s, deps->connectors->Status(req.name()));
    wire::ToProto(s, resp->add_connectors());
    return absl::OkStatus();
  }
  for (const connectors::ConnectorStatus& s : deps->connectors->StatusAll()) {
    wire::ToProto(s, resp->add_connectors());
  }
  return absl::OkStatus();
}

absl::Status PutSink(Deps* deps, const v1::PutSinkRequest& req) {
  CAIRN_ASSIGN_OR_RETURN(connectors::SinkDefinition d, wire::FromProto(req.sink()));
  // Unset: from now (a sink that exists keeps its checkpoint anyway).
  if (!req.sink().has_from_seq()) d.from_seq = deps->store->LastSeq();
  return deps->connectors->PutSink(d);
}

absl::Status GetSink(Deps* deps, const v1::GetSinkRequest& req, v1::Sink* resp) {
  CAIRN_ASSIGN_OR_RETURN(connectors::SinkDefinition d, deps->connectors->GetSink(req.name()));
  wire::ToProto(d, resp);
  return absl::OkStatus();
}

absl::Status ListSinks(Deps* deps, v1::ListSinksResponse* resp) {
  for (const connectors::SinkDefinition& d : deps->connectors->ListSinks()) {
    wire::ToProto(d, resp->add_sinks());
  }
  return absl::OkStatus();
}

absl::Status RemoveSink(Deps* deps, const v1::RemoveSinkRequest& req) {
  return deps->connectors->RemoveSink(req.name());
}

absl::Status SinkStatus(Deps* deps, const v1::SinkStatusRequest& req,
                        v1::SinkStatusResponse* resp) {
  if (!req.name().empty()) {
    CAIRN_ASSIGN_OR_RETURN(connectors::SinkStatus s, deps->connectors->GetSinkStatus(req.name()));
    wire::ToProto(s, resp->add_sinks());
    return absl::OkStatus();
  }
  for (const connectors::SinkStatus& s : deps->connectors->SinkStatusAll()) {
    wire::ToProto(s, resp->add_sinks());
  }
  return absl::OkStatus();
}

absl::Status ListDeadLetters(Deps* deps, const v1::ListDeadLettersRequest& req,
                             v1::ListDeadLettersResponse* resp) {
  CAIRN_ASSIGN_OR_RETURN(std::vector<connectors::DeadLetter> letters,
                         deps->connectors->ListDeadLetters(req.name()));
  for (const connectors::DeadLetter& d : letters) wire::ToProto(d, resp->add_dead_letters());
  return absl::OkStatus();
}

absl::Status ReplayDeadLetters(Deps* deps, const v1::ReplayDeadLettersRequest& req,
                               v1::ReplayDeadLettersResponse* resp) {
  CAIRN_ASSIGN_OR_RETURN(size_t n, deps->connectors->ReplayDeadLetters(req.name()));
  resp->set_replayed(n);
  return absl::OkStatus();
}

}  // namespace cairn::server
