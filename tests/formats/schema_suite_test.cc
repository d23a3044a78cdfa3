// JSON Schema conformance: the official JSON Schema Test Suite (Debian's
// json-schema-test-suite) run through the validation a bitbroker source
// applies to each record's entity (formats::ValidateJsonSchema: cairn's
// registration checks, then valijson), for draft-04 (schemas declaring it in
// "$schema") and draft-07 (the default). Every case must give the suite's
// answer, except cases whose schema cairn refuses at registration by design:
// references to remote schemas (refRemote, and the cases that validate
// against the draft's meta-schema by its URL) -- cairn fetches nothing. The
// report lists per keyword how many cases passed, failed or were refused.
#include <dirent.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "cairn/formats.h"
#include "gtest/gtest.h"
#include "rapidjson/document.h"
#include "rapidjson/schema.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"

namespace cairn::formats {
namespace {

struct Tally {
  int passed = 0;
  int failed = 0;
  int refused = 0;  // the schema was refused at registration
  std::vector<std::string> failures;
};

std::string Json(const rapidjson::Value& v) {
  rapidjson::StringBuffer b;
  rapidjson::Writer<rapidjson::StringBuffer> w(b);
  v.Accept(w);
  return b.GetString();
}

std::vector<std::string> KeywordFiles(const std::string& dir) {
  std::vector<std::string> out;
  if (DIR* d = opendir(dir.c_str())) {
    while (dirent* e = readdir(d)) {
      std::string name = e->d_name;
      if (name.size() > 5 && name.substr(name.size() - 5) == ".json") out.push_back(name);
    }
    closedir(d);
  }
  std::sort(out.begin(), out.end());
  return out;
}

// The alternative measured against valijson: RapidJSON's own validator.
// OK when valid, INVALID_ARGUMENT when not.
absl::Status RapidJsonValidate(std::string_view schema, std::string_view instance) {
  rapidjson::Document sd;
  sd.Parse(schema.data(), schema.size());
  if (sd.HasParseError()) return absl::InvalidArgumentError("unusable: schema");
  rapidjson::SchemaDocument compiled(sd);
  rapidjson::Document d;
  d.Parse(instance.data(), instance.size());
  rapidjson::SchemaValidator v(compiled);
  if (d.Accept(v)) return absl::OkStatus();
  return absl::InvalidArgumentError("does not conform");
}

using Validate = absl::Status (*)(std::string_view, std::string_view);

std::map<std::string, Tally> RunDraft(const std::string& draft,
                                      Validate validate = &ValidateJsonSchema,
                                      const std::string& only = "") {
  std::map<std::string, Tally> tallies;
  const std::string dir = absl::StrCat(CAIRN_SCHEMA_SUITE_DIR, "/", draft);
  for (const std::string& file : KeywordFiles(dir)) {
    if (!only.empty() && file != only) continue;
    std::ifstream in(dir + "/" + file);
    std::stringstream ss;
    ss << in.rdbuf();
    rapidjson::Document groups;
    groups.Parse(ss.str().c_str());
    if (!groups.IsArray()) continue;
    Tally& t = tallies[file.substr(0, file.size() - 5)];
    for (auto& group : groups.GetArray()) {
      rapidjson::Value& sv = group["schema"];
      if (draft == "draft4" && sv.IsObject() && !sv.HasMember("$schema")) {
        sv.AddMember("$schema", "http://json-schema.org/draft-04/schema#", groups.GetAllocator());
      }
      std::string schema = Json(sv);
      for (const auto& test : group["tests"].GetArray()) {
        bool want = test["valid"].GetBool();
        absl::Status s = validate(schema, Json(test["data"]));
        std::string what =
            absl::StrCat(group["description"].GetString(), " / ", test["description"].GetString());
        if (!s.ok() && !absl::IsInvalidArgument(s)) {
          ++t.failed;
          t.failures.push_back(absl::StrCat(what, ": ", s.ToString()));
        } else if (!s.ok() && absl::StrContains(s.message(), "is not local")) {
          ++t.refused;  // a remote reference: documented as unsupported
        } else if (!s.ok() && (absl::StrContains(s.message(), "references loop back") ||
                               absl::StrContains(s.message(), "not a JSON object") ||
                               absl::StrContains(s.message(), "points to no schema") ||
                               absl::StrContains(s.message(), "unusable"))) {
          ++t.refused;
          t.failures.push_back(absl::StrCat(what, ": refused: ", s.message()));
        } else if (s.ok() == want) {
          ++t.passed;
        } else {
          ++t.failed;
          t.failures.push_back(absl::StrCat(what, ": expected ", want ? "valid" : "invalid"));
        }
      }
    }
  }
  return tallies;
}

void Report(const std::string& draft, const std::map<std::string, Tally>& tallies) {
  int passed = 0, failed = 0, refused = 0;
  std::cout << draft << ": keyword passed/failed/refused\n";
  for (const auto& [keyword, t] : tallies) {
    std::cout << "  " << keyword << " " << t.passed << "/" << t.failed << "/" << t.refused << "\n";
    passed += t.passed;
    failed += t.failed;
    refused += t.refused;
  }
  std::cout << "  total " << passed << "/" << failed << "/" << refused << "\n";
}

// Runs a draft through cairn's path, reports it, and fails on every case
// that did not give the suite's answer.
void ExpectConformance(const std::string& draft) {
  auto tallies = RunDraft(draft);
  ASSERT_FALSE(tallies.empty()) << "no suite at " << CAIRN_SCHEMA_SUITE_DIR;
  Report(draft, tallies);
  for (const auto& [keyword, t] : tallies) {
    for (const std::string& f : t.failures) ADD_FAILURE() << keyword << ": " << f;
  }
}

TEST(SchemaSuiteTest, Draft4) { ExpectConformance("draft4"); }

TEST(SchemaSuiteTest, Draft7) { ExpectConformance("draft7"); }

// Not a check of cairn: the same suite through RapidJSON's validator, to show
// why cairn validates with valijson (the counts are in the README). Each
// keyword runs in a child process: RapidJSON 1.1 crashes on some of them,
// which are reported as such.
TEST(SchemaSuiteTest, RapidJsonValidatorForComparison) {
  for (const char* draft : {"draft4", "draft7"}) {
    const std::string dir = absl::StrCat(CAIRN_SCHEMA_SUITE_DIR, "/", draft);
    std::cout << draft << " through rapidjson/schema.h: keyword passed/failed\n";
    int passed = 0, failed = 0;
    std::vector<std::string> crashed;
    for (const std::string& file : KeywordFiles(dir)) {
      int fds[2];
      ASSERT_EQ(pipe(fds), 0);
      pid_t pid = fork();
      if (pid == 0) {
        close(fds[0]);
        auto t = RunDraft(draft, &RapidJsonValidate, file);
        int counts[2] = {t.begin()->second.passed, t.begin()->second.failed};
        ssize_t n = write(fds[1], counts, sizeof counts);
        _exit(n == sizeof counts ? 0 : 1);
      }
      close(fds[1]);
      int counts[2] = {0, 0};
      ssize_t n = read(fds[0], counts, sizeof counts);
      close(fds[0]);
      int status = 0;
      waitpid(pid, &status, 0);
      std::string keyword = file.substr(0, file.size() - 5);
      if (n != sizeof counts || !WIFEXITED(status)) {
        crashed.push_back(keyword);
        std::cout << "  " << keyword << " crashed\n";
        continue;
      }
      passed += counts[0];
      failed += counts[1];
      std::cout << "  " << keyword << " " << counts[0] << "/" << counts[1] << "\n";
    }
    std::cout << "  total " << passed << "/" << failed << ", " << crashed.size()
              << " keywords crashed\n";
  }
}

}  // namespace
}  // namespace cairn::formats
