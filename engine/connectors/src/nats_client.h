// What the nats connector and the nats sink share: a connection to a NATS
// cluster with its JetStream context, and libnats errors as text.
#ifndef CAIRN_ENGINE_CONNECTORS_SRC_NATS_CLIENT_H_
#define CAIRN_ENGINE_CONNECTORS_SRC_NATS_CLIENT_H_

#include <nats/nats.h>

#include <string>
#include <vector>

#include "absl/status/status.h"

namespace cairn::connectors {

// libnats' status with its last error's detail.
std::string NatsError(natsStatus s);

// One connection and its JetStream context; closed by the destructor.
// libnats reconnects by itself (to any of the servers) while it lives.
class NatsClient {
 public:
  NatsClient() = default;
  ~NatsClient();
  NatsClient(const NatsClient&) = delete;
  NatsClient& operator=(const NatsClient&) = delete;

  // `name` is the client name the server shows; ca_file the PEM roots for
  // tls:// servers. UNAVAILABLE when no server answers.
  absl::Status Connect(const std::vector<std::string>& servers, const std::string& ca_file,
                       const std::string& name, jsOptions* js_options = nullptr);
  natsConnection* connection() const { return nc_; }
  jsCtx* js() const { return js_; }

 private:
  natsConnection* nc_ = nullptr;
  jsCtx* js_ = nullptr;
};

}  // namespace cairn::connectors

#endif  // CAIRN_ENGINE_CONNECTORS_SRC_NATS_CLIENT_H_
