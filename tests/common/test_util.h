// Helpers every test binary shares (tests/common, the cairn_test_common
// target).
#ifndef CAIRN_TESTS_COMMON_TEST_UTIL_H_
#define CAIRN_TESTS_COMMON_TEST_UTIL_H_

#include <stdlib.h>

#include <filesystem>
#include <string>

namespace cairn {

// A fresh directory under /tmp, removed with everything in it on destruction.
class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/cairn-test-XXXXXX";
    const char* p = mkdtemp(tmpl);
    path_ = p ? p : "";
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  // A path inside the directory (not created).
  std::string Sub(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

}  // namespace cairn

#endif  // CAIRN_TESTS_COMMON_TEST_UTIL_H_
