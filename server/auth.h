// Bearer-token authorization. A tokens file (JSON) lists each token with the
// sources it may write, the collections it may read and whether it may use
// the admin service; "*" matches everything:
//
//   {"tokens": [
//     {"token": "s3cret", "write": ["billing"], "read": ["account"], "admin": false},
//     {"token": "ops", "write": ["*"], "read": ["*"], "admin": true}]}
//
// Without a tokens file every call is allowed (and the server listens on
// loopback unless told otherwise).
#ifndef CAIRN_SERVER_AUTH_H_
#define CAIRN_SERVER_AUTH_H_

#include <grpcpp/grpcpp.h>

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace cairn::server {

class Auth {
 public:
  // Auth that allows everything.
  Auth() = default;
  // INVALID_ARGUMENT naming the entry at fault when the file is malformed.
  static absl::StatusOr<Auth> FromFile(const std::string& path);
  static absl::StatusOr<Auth> FromJson(std::string_view json);

  bool enabled() const { return enabled_; }
  // OK, UNAUTHENTICATED (no or unknown token) or PERMISSION_DENIED.
  grpc::Status CanWrite(const grpc::CallbackServerContext* ctx, std::string_view source) const;
  // `collections` empty means "all collections".
  grpc::Status CanRead(const grpc::CallbackServerContext* ctx,
                       const std::vector<std::string>& collections) const;
  grpc::Status CanAdmin(const grpc::CallbackServerContext* ctx) const;

 private:
  struct Grant {
    std::vector<std::string> write;
    std::vector<std::string> read;
    bool admin = false;
  };
  // The caller's grant, or UNAUTHENTICATED.
  grpc::Status Find(const grpc::CallbackServerContext* ctx, const Grant** grant) const;

  bool enabled_ = false;
  std::map<std::string, Grant, std::less<>> tokens_;
};

}  // namespace cairn::server

#endif  // CAIRN_SERVER_AUTH_H_
