// Auth (server/auth.h) decides from the authorization value alone: every
// grant and denial, without gRPC.
#include "auth.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace cairn::server {
namespace {

using ::testing::HasSubstr;

constexpr std::string_view kTokens = R"({"tokens": [
  {"token": "writer", "write": ["billing"]},
  {"token": "reader", "read": ["account", "orders"]},
  {"token": "all-reader", "read": ["*"]},
  {"token": "ops", "write": ["*"], "read": ["*"], "admin": true},
  {"token": "nothing"}
]})";

Caller Bearer(std::string_view token) {
  return {.authorization = "Bearer " + std::string(token), .peer = "ipv4:127.0.0.1:1"};
}

Auth Tokens() {
  auto a = Auth::FromJson(kTokens);
  EXPECT_TRUE(a.ok()) << a.status();
  return a.ok() ? *std::move(a) : Auth();
}

TEST(AuthTest, WithoutTokensEverythingIsAllowed) {
  Auth off;
  EXPECT_FALSE(off.enabled());
  Caller none;
  EXPECT_TRUE(off.Authenticate(none, "m").ok());
  EXPECT_TRUE(off.CanWrite(none, "m", "x").ok());
  EXPECT_TRUE(off.CanRead(none, "m", {}).ok());
  EXPECT_TRUE(off.CanAdmin(none, "m").ok());
}

TEST(AuthTest, MissingMalformedAndUnknownTokensAreUnauthenticated) {
  Auth auth = Tokens();
  ASSERT_TRUE(auth.enabled());
  struct Case {
    Caller caller;
    std::string_view reason;
  } cases[] = {
      {Caller{}, "missing 'authorization: Bearer <token>'"},
      {Caller{.authorization = "writer"}, "must be 'Bearer <token>'"},
      {Caller{.authorization = "Basic d3JpdGVy"}, "must be 'Bearer <token>'"},
      {Caller{.authorization = "bearer writer"}, "must be 'Bearer <token>'"},
      {Bearer("stranger"), "unknown token"},
      {Bearer(""), "unknown token"},
      {Bearer("writer "), "unknown token"},
  };
  for (const Case& c : cases) {
    for (const absl::Status& s :
         {auth.Authenticate(c.caller, "m"), auth.CanWrite(c.caller, "m", "billing"),
          auth.CanRead(c.caller, "m", {"account"}), auth.CanAdmin(c.caller, "m"),
          auth.CanReadAny(c.caller, "m"), auth.CanWriteAny(c.caller, "m")}) {
      EXPECT_EQ(s.code(), absl::StatusCode::kUnauthenticated)
          << c.caller.authorization.value_or("-");
      EXPECT_THAT(std::string(s.message()), HasSubstr(c.reason));
    }
  }
}

TEST(AuthTest, GrantsDecideWriteReadAndAdmin) {
  Auth auth = Tokens();
  auto ok = [](const absl::Status& s) { return s.ok(); };
  auto denied = [](const absl::Status& s) {
    return s.code() == absl::StatusCode::kPermissionDenied;
  };
  // Any known token authenticates, even one with no grant.
  EXPECT_TRUE(ok(auth.Authenticate(Bearer("nothing"), "m")));

  EXPECT_TRUE(ok(auth.CanWrite(Bearer("writer"), "m", "billing")));
  EXPECT_TRUE(denied(auth.CanWrite(Bearer("writer"), "m", "crm")));
  EXPECT_TRUE(denied(auth.CanWrite(Bearer("reader"), "m", "billing")));
  EXPECT_TRUE(ok(auth.CanWrite(Bearer("ops"), "m", "anything")));

  EXPECT_TRUE(ok(auth.CanRead(Bearer("reader"), "m", {"account"})));
  EXPECT_TRUE(ok(auth.CanRead(Bearer("reader"), "m", {"account", "orders"})));
  EXPECT_TRUE(denied(auth.CanRead(Bearer("reader"), "m", {"account", "secrets"})));
  // No collection named means all of them: only "*" covers that.
  EXPECT_TRUE(denied(auth.CanRead(Bearer("reader"), "m", {})));
  EXPECT_TRUE(ok(auth.CanRead(Bearer("all-reader"), "m", {})));
  EXPECT_TRUE(denied(auth.CanRead(Bearer("writer"), "m", {"account"})));

  EXPECT_TRUE(ok(auth.CanReadAny(Bearer("reader"), "m")));
  EXPECT_TRUE(denied(auth.CanReadAny(Bearer("writer"), "m")));
  EXPECT_TRUE(ok(auth.CanWriteAny(Bearer("writer"), "m")));
  EXPECT_TRUE(denied(auth.CanWriteAny(Bearer("reader"), "m")));
  EXPECT_TRUE(denied(auth.CanWriteAny(Bearer("nothing"), "m")));

  EXPECT_TRUE(ok(auth.CanAdmin(Bearer("ops"), "m")));
  for (std::string_view t : {"writer", "reader", "all-reader", "nothing"}) {
    EXPECT_TRUE(denied(auth.CanAdmin(Bearer(t), "m"))) << t;
  }
}

TEST(AuthTest, DenialsNameTheScopeButNeverTheToken) {
  Auth auth = Tokens();
  absl::Status s = auth.CanWrite(Bearer("writer"), "m", "crm");
  EXPECT_THAT(std::string(s.message()), HasSubstr("may not write to source 'crm'"));
  s = auth.CanRead(Bearer("reader"), "m", {"secrets"});
  EXPECT_THAT(std::string(s.message()), HasSubstr("may not read collection 'secrets'"));
  EXPECT_THAT(std::string(s.message()), ::testing::Not(HasSubstr("reader")));
  // A hostile name is quoted only in part.
  s = auth.CanWrite(Bearer("writer"), "m", std::string(10000, 'x'));
  EXPECT_LT(s.message().size(), 400u);
}

TEST(AuthTest, MalformedTokenFilesNameTheEntry) {
  struct Case {
    std::string_view json, error;
  } cases[] = {
      {"{", "invalid JSON at offset 1"},
      {"[]", "expected an object with a \"tokens\" array"},
      {R"({"tokens": {}})", "expected an object with a \"tokens\" array"},
      {R"({"tokens": [1]})", "tokens[0]: must be an object"},
      {R"({"tokens": [{"token": "a"}, {"token": ""}]})",
       "tokens[1]: field 'token' must be a non-empty string"},
      {R"({"tokens": [{"token": "a", "write": "billing"}]})",
       "tokens[0]: field 'write' must be an array"},
      {R"({"tokens": [{"token": "a", "read": [1]}]})", "tokens[0]: field 'read' must hold strings"},
      {R"({"tokens": [{"token": "a", "admin": "yes"}]})",
       "tokens[0]: field 'admin' must be a boolean"},
  };
  for (const Case& c : cases) {
    auto a = Auth::FromJson(c.json);
    ASSERT_FALSE(a.ok()) << c.json;
    EXPECT_EQ(a.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(a.status().message()), HasSubstr(c.error)) << c.json;
  }
  auto missing = Auth::FromFile("/nonexistent/tokens.json");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace cairn::server
