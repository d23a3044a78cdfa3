// Helpers for the format tests: a store in a temporary directory, fixture
// files, and decode-then-ingest in one call.
#ifndef CAIRN_TESTS_FORMATS_FORMAT_TEST_UTIL_H_
#define CAIRN_TESTS_FORMATS_FORMAT_TEST_UTIL_H_

#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>

#include "cairn/formats.h"
#include "cairn/store.h"
#include "gtest/gtest.h"
#include "test_util.h"

namespace cairn::formats {

inline std::string ReadFixture(const std::string& relative) {
  std::ifstream in(std::string(CAIRN_FIXTURES_DIR) + "/" + relative, std::ios::binary);
  EXPECT_TRUE(in.good()) << "cannot read fixture " << relative;
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class StoreFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    auto s = Store::Open(dir_.path(), Options{});
    ASSERT_TRUE(s.ok()) << s.status();
    store_ = *std::move(s);
  }

  // Decodes `payload` as `source` and ingests it as one batch.
  absl::StatusOr<IngestResult> Ingest(const SourceDefinition& source, std::string_view payload) {
    auto events = Decode(source, payload);
    if (!events.ok()) return events.status();
    return store_->Ingest(*std::move(events), {});
  }

  // Every entity of `collection`: canonical key -> document.
  std::map<std::string, std::string> Content(const std::string& collection) {
    std::map<std::string, std::string> out;
    absl::Status s = store_->Snapshot({.collection = collection}, [&](const Entity& e) {
      out[e.key] = e.document;
      return true;
    });
    EXPECT_TRUE(s.ok()) << s;
    return out;
  }

  TempDir dir_;
  std::unique_ptr<Store> store_;
};

}  // namespace cairn::formats

#endif  // CAIRN_TESTS_FORMATS_FORMAT_TEST_UTIL_H_
