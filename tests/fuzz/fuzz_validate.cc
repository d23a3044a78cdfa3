// F1: request validation -- what every ingest path passes through before
// anything is written: canonical event lines (the CLI's and the HTTP API's
// input) decoded, then validated and canonicalized by Store::Prepare on a
// real store. Prepare writes nothing; a batch it refuses names the event.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

#include "cairn/formats.h"
#include "cairn/store.h"

namespace {

// One store for the whole run, never closed (its directory is removed at
// exit; the process ends with it open, as after a crash).
cairn::Store* OpenStore() {
  static cairn::Store* store = [] {
    static std::string dir;
    char tmpl[] = "/tmp/cairn-fuzz-validate-XXXXXX";
    const char* p = mkdtemp(tmpl);
    if (p == nullptr) std::abort();
    dir = p;
    auto s = cairn::Store::Open(dir + "/store", cairn::Options{});
    if (!s.ok()) std::abort();
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
    });
    return s->release();
  }();
  return store;
}

const cairn::SourceDefinition kApp{.name = "app", .format = "canonical"};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  cairn::Store* store = OpenStore();
  std::string_view in(reinterpret_cast<const char*>(data), size);
  auto events = cairn::formats::Decode(kApp, in);
  if (!events.ok()) return 0;
  auto prepared = store->Prepare({.events = std::move(*events), .options = {}});
  if (!prepared.ok() && prepared.status().message().empty()) std::abort();
  if (store->LastSeq() != 0) std::abort();  // Prepare wrote nothing
  return 0;
}
