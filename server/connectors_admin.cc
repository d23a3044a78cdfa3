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

}  // namespace cairn::server
