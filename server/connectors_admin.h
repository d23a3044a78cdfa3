// The connector and sink calls of Admin: AdminService (admin_service.cc)
// forwards them here. Each
// converts the request, calls the connectors once, converts the answer.
#ifndef CAIRN_SERVER_CONNECTORS_ADMIN_H_
#define CAIRN_SERVER_CONNECTORS_ADMIN_H_

#include "absl/status/status.h"
#include "auth.h"
#include "cairn/v1/cairn.pb.h"
#include "service.h"

namespace cairn::server {

absl::Status PutConnector(Deps* deps, const v1::PutConnectorRequest& req);
absl::Status GetConnector(Deps* deps, const v1::GetConnectorRequest& req, v1::Connector* resp);
absl::Status ListConnectors(Deps* deps, v1::ListConnectorsResponse* resp);
absl::Status RemoveConnector(Deps* deps, const v1::RemoveConnectorRequest& req);
absl::Status ConnectorStatus(Deps* deps, const v1::ConnectorStatusRequest& req,
                             v1::ConnectorStatusResponse* resp);

// Admin.PutSink / GetSink / ListSinks / RemoveSink / SinkStatus /
// ListDeadLetters / ReplayDeadLetters.
absl::Status PutSink(Deps* deps, const v1::PutSinkRequest& req);
absl::Status GetSink(Deps* deps, const v1::GetSinkRequest& req, v1::Sink* resp);
absl::Status ListSinks(Deps* deps, v1::ListSinksResponse* resp);
absl::Status RemoveSink(Deps* deps, const v1::RemoveSinkRequest& req);
absl::Status SinkStatus(Deps* deps, const v1::SinkStatusRequest& req, v1::SinkStatusResponse* resp);
absl::Status ListDeadLetters(Deps* deps, const v1::ListDeadLettersRequest& req,
                             v1::ListDeadLettersResponse* resp);
absl::Status ReplayDeadLetters(Deps* deps, const v1::ReplayDeadLettersRequest& req,
                               v1::ReplayDeadLettersResponse* resp);

}  // namespace cairn::server

#endif  // CAIRN_SERVER_CONNECTORS_ADMIN_H_
