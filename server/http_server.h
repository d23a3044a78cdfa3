// cairnd's HTTP listener (README "HTTP API"): the same store, auth and
// semantics as the gRPC services, over Boost.Beast (chosen by measurement:
// README "HTTP API", "Why Beast").
//
// Each handler, like a gRPC one, converts the request, calls the engine
// once and converts the answer; errors are one JSON body
// {"code","message","errors":[{"index","field","reason"}]} with one status
// mapping (HttpStatusOf).
#ifndef CAIRN_SERVER_HTTP_SERVER_H_
#define CAIRN_SERVER_HTTP_SERVER_H_

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "service.h"

namespace cairn::server {

// The HTTP status of an engine status: INVALID_ARGUMENT 400, UNAUTHENTICATED
// 401, PERMISSION_DENIED 403, NOT_FOUND 404, ALREADY_EXISTS and
// FAILED_PRECONDITION 409, OUT_OF_RANGE 410, RESOURCE_EXHAUSTED 413 (a
// request past a size bound) or 429 (anything else exhausted),
// UNAVAILABLE 503, DEADLINE_EXCEEDED 504, everything else 500.
int HttpStatusOf(const absl::Status& s);
// RESOURCE_EXHAUSTED for a request past a size bound (the body, the events
// in a batch), marked with the kTooLargePayload payload: HttpStatusOf
// answers it 413, any other RESOURCE_EXHAUSTED 429.
inline constexpr std::string_view kTooLargePayload = "type.cairn.dev/request-too-large";
absl::Status TooLarge(std::string_view message);
// The JSON error body of `s`.
std::string ErrorJson(const absl::Status& s);

class HttpServer {
 public:
  // Listens on `listen` ("host:port"; port 0 picks one) and serves until
  // Shutdown; `deps` and `dispatcher` (the gRPC subscriptions, listed with
  // the SSE ones) outlive it.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(const std::string& listen, Deps* deps,
                                                           Dispatcher* dispatcher);
  virtual ~HttpServer() = default;
  virtual int port() const = 0;
  // Stops accepting and joins the threads; the open connections (and their
  // subscriptions) end when the server is destroyed, which must come before
  // the store's end.
  virtual void Shutdown() = 0;
};

}  // namespace cairn::server

#endif  // CAIRN_SERVER_HTTP_SERVER_H_
