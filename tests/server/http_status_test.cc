// The HTTP API's one status mapping (server/http_server.h).
#include "absl/status/status.h"
#include "gtest/gtest.h"
#include "http_server.h"

namespace cairn::server {
namespace {

TEST(HttpStatusTest, EveryCodeHasItsStatus) {
  EXPECT_EQ(HttpStatusOf(absl::OkStatus()), 200);
  EXPECT_EQ(HttpStatusOf(absl::InvalidArgumentError("x")), 400);
  EXPECT_EQ(HttpStatusOf(absl::UnauthenticatedError("x")), 401);
  EXPECT_EQ(HttpStatusOf(absl::PermissionDeniedError("x")), 403);
  EXPECT_EQ(HttpStatusOf(absl::NotFoundError("x")), 404);
  EXPECT_EQ(HttpStatusOf(absl::FailedPreconditionError("x")), 409);
  EXPECT_EQ(HttpStatusOf(absl::AlreadyExistsError("x")), 409);
  EXPECT_EQ(HttpStatusOf(absl::OutOfRangeError("x")), 410);
  EXPECT_EQ(HttpStatusOf(absl::UnavailableError("x")), 503);
  EXPECT_EQ(HttpStatusOf(absl::InternalError("x")), 500);
}

// 413 is decided by the marker TooLarge sets, not by the message's words.
TEST(HttpStatusTest, TooLargeIs413AndOtherExhaustionIs429) {
  EXPECT_EQ(HttpStatusOf(TooLarge("request body larger than 10 bytes")), 413);
  EXPECT_EQ(HttpStatusOf(TooLarge("anything")), 413);
  EXPECT_EQ(HttpStatusOf(absl::ResourceExhaustedError("at most 10; larger than 5")), 429);
  EXPECT_EQ(HttpStatusOf(absl::ResourceExhaustedError("too many subscriptions")), 429);
}

}  // namespace
}  // namespace cairn::server
