// NatsClient (nats_client.h).
#include "nats_client.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace cairn::connectors {

std::string NatsError(natsStatus s) {
  natsStatus last = NATS_OK;
  const char* detail = nats_GetLastError(&last);
  std::string text = natsStatus_GetText(s);
  if (detail != nullptr && *detail != '\0' && last == s && text != detail) {
    absl::StrAppend(&text, ": ", detail);
  }
  return text;
}

NatsClient::~NatsClient() {
  if (js_) jsCtx_Destroy(js_);
  if (nc_) {
    natsConnection_Close(nc_);
    natsConnection_Destroy(nc_);
  }
}

absl::Status NatsClient::Connect(const std::vector<std::string>& servers,
                                 const std::string& ca_file, const std::string& name,
                                 jsOptions* js_options) {
  natsOptions* opts = nullptr;
  natsStatus s = natsOptions_Create(&opts);
  std::vector<const char*> urls;
  for (const std::string& u : servers) urls.push_back(u.c_str());
  if (s == NATS_OK) s = natsOptions_SetServers(opts, urls.data(), static_cast<int>(urls.size()));
  if (s == NATS_OK) s = natsOptions_SetName(opts, name.c_str());
  if (s == NATS_OK) s = natsOptions_SetTimeout(opts, 5000);
  // Reconnect for as long as it takes; the owner backs off on errors.
  if (s == NATS_OK) s = natsOptions_SetMaxReconnect(opts, -1);
  if (s == NATS_OK) s = natsOptions_SetReconnectWait(opts, 500);
  if (s == NATS_OK) s = natsOptions_SetNoRandomize(opts, false);
  if (s == NATS_OK && !ca_file.empty())
    s = natsOptions_LoadCATrustedCertificates(opts, ca_file.c_str());
  if (s == NATS_OK) s = natsConnection_Connect(&nc_, opts);
  if (s == NATS_OK) s = natsConnection_JetStream(&js_, nc_, js_options);
  natsOptions_Destroy(opts);
  if (s != NATS_OK) {
    return absl::UnavailableError(
        absl::StrCat("connect to ", absl::StrJoin(servers, ","), ": ", NatsError(s)));
  }
  return absl::OkStatus();
}

}  // namespace cairn::connectors
