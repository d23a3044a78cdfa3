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
//
// Auth knows no transport: it decides from the caller's authorization value
// (gRPC metadata or an HTTP header, "Bearer <token>") and answers an
// absl::Status.
#ifndef CAIRN_SERVER_AUTH_H_
#define CAIRN_SERVER_AUTH_H_

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace cairn::server {

// Who is calling: the authorization value it sent (nullopt: none) and its
// address (for the log only).
struct Caller {
  std::optional<std::string> authorization;
  std::string peer;
};

class Auth {
 public:
  // Auth that allows everything.
  Auth() = default;
  // INVALID_ARGUMENT naming the entry at fault when the file is malformed.
  static absl::StatusOr<Auth> FromFile(const std::string& path);
  static absl::StatusOr<Auth> FromJson(std::string_view json);

  bool enabled() const { return enabled_; }
  // Each check answers OK, UNAUTHENTICATED (no, malformed or unknown token)
  // or PERMISSION_DENIED, and logs a denial (`method`, the peer and the
  // reason; never the token). With auth off every check is OK.
  //
  // The token is known (any grant).
  absl::Status Authenticate(const Caller& caller, std::string_view method) const;
  // The token may write to `source`.
  absl::Status CanWrite(const Caller& caller, std::string_view method,
                        std::string_view source) const;
  // The token may write to some source (a check made before a lookup, so a
  // caller without any write grant learns nothing of sessions).
  absl::Status CanWriteAny(const Caller& caller, std::string_view method) const;
  // The token may read some collection (a check made before a lookup, so a
  // caller without any read grant learns nothing of checkpoints).
  absl::Status CanReadAny(const Caller& caller, std::string_view method) const;
  // The token may read every one of `collections`; empty means "all
  // collections", which needs the "*" read grant.
  absl::Status CanRead(const Caller& caller, std::string_view method,
                       const std::vector<std::string>& collections) const;
  absl::Status CanAdmin(const Caller& caller, std::string_view method) const;

 private:
  struct Grant {
    std::vector<std::string> write;
    std::vector<std::string> read;
    bool admin = false;
  };
  // The caller's grant, or UNAUTHENTICATED.
  absl::Status Find(const Caller& caller, const Grant** grant) const;
  // The one shape of every check: auth off allows; no or an unknown token is
  // UNAUTHENTICATED; else `denial` says why the grant does not cover the
  // call (empty: it does), and that is PERMISSION_DENIED. Denials are logged.
  absl::Status Check(const Caller& caller, std::string_view method,
                     const std::function<std::string(const Grant&)>& denial) const;
  // Logs `s` when it is a denial; returns it.
  absl::Status Logged(const Caller& caller, std::string_view method, absl::Status s) const;

  bool enabled_ = false;
  std::map<std::string, Grant, std::less<>> tokens_;
};

}  // namespace cairn::server

#endif  // CAIRN_SERVER_AUTH_H_
