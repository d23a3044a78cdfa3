// Writes the seed corpora of the F1 fuzz targets into DIR/<target>/ (at
// least 20 seeds each): records and lines of the fixtures under
// ../shared/fixtures for the decoders and the JSON layer, keys in every
// spelling the model tests use, documents and patches from the model's
// generator, canonical event lines, and real stored records dumped from a
// store the model's events were ingested into.
//
// Usage: fuzz_seeds FIXTURES_DIR OUT_DIR
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cairn/formats.h"
#include "cairn/store.h"
#include "config.h"
#include "model.h"
#include "records.h"
#include "rocksdb/db.h"

namespace cairn::fuzz {
namespace {

namespace fs = std::filesystem;

class Corpus {
 public:
  Corpus(fs::path dir) : dir_(std::move(dir)) { fs::create_directories(dir_); }
  void Add(const std::string& bytes) {
    std::ofstream(dir_ / absl::StrCat("seed-", n_++), std::ios::binary) << bytes;
  }
  size_t size() const { return n_; }

 private:
  fs::path dir_;
  size_t n_ = 0;
};

std::string Read(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream ss(text);
  for (std::string line; std::getline(ss, line);) {
    if (!line.empty() && line[0] != '#') out.push_back(line);
  }
  return out;
}

// Nesting far past the bound (json_doc.h kMaxDocumentDepth): refused here
// before any recursive code sees it; `make fuzz-unbounded` runs the targets
// on these seeds in a build without the bound, where they overflow the stack.
constexpr size_t kDeep = 100000;
std::string DeepArray() { return std::string(kDeep, '[') + std::string(kDeep, ']'); }
std::string DeepObject() {
  std::string s;
  for (size_t i = 0; i < kDeep; ++i) s += R"({"a":)";
  return s + "1" + std::string(kDeep, '}');
}

char FormatByte(std::string_view format) {
  for (size_t i = 0; i < std::size(formats::kFormatNames); ++i) {
    if (format == formats::kFormatNames[i]) return static_cast<char>(i);
  }
  std::abort();
}

void Check(const absl::Status& s, const char* what) {
  if (s.ok()) return;
  std::fprintf(stderr, "fuzz_seeds: %s: %s\n", what, s.ToString().c_str());
  std::exit(1);
}

std::vector<model::ModelEvent> ModelEvents(size_t n) {
  std::mt19937 rng(20261207);
  std::vector<model::ModelEvent> out(n);
  for (size_t i = 0; i < n; ++i) {
    out[i].source = "app";
    out[i].entity = {i % 3 ? "acct" : "item", rng() % model::Keys().size()};
    out[i].position = {1700000000000000 + i, i % 4};
    out[i].Randomize(rng, 17);
  }
  return out;
}

// Stored records: the model's events ingested into a store, then every
// column family's values read back (selector bytes as fuzz_records.cc).
void RecordSeeds(const fs::path& tmp, Corpus* out) {
  fs::create_directories(tmp);
  std::string path = (tmp / "store").string();
  {
    auto store = Store::Open(path, Options{});
    Check(store.status(), "open");
    std::vector<Event> events;
    for (const model::ModelEvent& m : ModelEvents(60)) events.push_back(m.ToEvent());
    Check((*store)->Ingest(std::move(events), {}).status(), "ingest");
    Check((*store)->PutSource({.name = "dbz", .format = "debezium", .key_fields = {{"t", {"id"}}}}),
          "put source");
    // Merged: the retention links (a tombstone's) are folded into the records.
    Check((*store)->CompactNow(), "compact");
  }
  std::vector<rocksdb::ColumnFamilyDescriptor> cfs;
  for (const char* name : internal::kCfNames) cfs.push_back({name, rocksdb::ColumnFamilyOptions()});
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw = nullptr;
  rocksdb::Status opened =
      rocksdb::DB::OpenForReadOnly(rocksdb::Options(), path, cfs, &handles, &raw);
  if (!opened.ok()) Check(absl::InternalError(opened.ToString()), "open read-only");
  std::unique_ptr<rocksdb::DB> db(raw);
  const std::map<std::string, std::vector<char>> selectors = {
      {internal::CfName(internal::kLog), {0}},
      {internal::CfName(internal::kState), {1}},
      {internal::CfName(internal::kHistory), {2, 10, 12}},
      {internal::CfName(internal::kChanges), {3, 4}},
      {internal::CfName(internal::kEntitySeq), {5, 11, 13}}};
  for (size_t cf = 0; cf < handles.size(); ++cf) {
    auto sel = selectors.find(internal::kCfNames[cf]);
    std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(rocksdb::ReadOptions(), handles[cf]));
    size_t n = 0;
    for (it->SeekToFirst(); it->Valid() && n < 8; it->Next(), ++n) {
      std::string value = it->value().ToString();
      if (sel != selectors.end()) {
        for (char s : sel->second) out->Add(std::string(1, s) + value);
      } else if (it->key().starts_with("registry/")) {
        out->Add(std::string(1, 8) + value);
      }
    }
  }
  for (auto* h : handles) db->DestroyColumnFamilyHandle(h);
  for (const model::ModelEvent& m : ModelEvents(6)) {
    out->Add(std::string(1, 9) + records::EncodeStagedEvent(m.ToEvent()));
  }
}

int Run(const fs::path& fixtures, const fs::path& out) {
  fs::remove_all(out);
  // Decoders: each record (line) of each fixture, and each whole file,
  // prefixed with its format's byte.
  Corpus decode(out / "decode"), json(out / "json"), sse(out / "sse");
  const std::vector<std::pair<std::string, std::string>> files = {
      {"seeds/debezium-kafka.jsonl", "debezium"},
      {"flink/debezium-postgres-data-replica-identity.txt", "debezium"},
      {"flink/debezium-postgres-data-schema-exclude.txt", "debezium"},
      {"seeds/goldengate.jsonl", "goldengate"},
      {"flink/ogg-data.txt", "goldengate"},
      {"seeds/infosphere-basic.jsonl", "infosphere"},
      {"seeds/aria-feed.sse", "sse-feed"},
      {"seeds/omnia-datapoints.json", "datapoints"},
      {"seeds/bitbroker-upsert.json", "bitbroker"},
      {"seeds/bitbroker-delete.json", "bitbroker"}};
  for (const auto& [file, format] : files) {
    std::string text = Read(fixtures / file);
    if (text.empty()) {
      std::fprintf(stderr, "fuzz_seeds: %s is missing or empty\n", (fixtures / file).c_str());
      return 1;
    }
    char f = FormatByte(format);
    decode.Add(f + text);
    if (format == "sse-feed") {
      // Whole, and cut into chunks of 1, 7 and 64 bytes.
      for (std::string cuts : {std::string(1, '\0'), std::string("\x03\x01\x07\x40", 4)}) {
        sse.Add(cuts + text);
      }
      continue;
    }
    if (format == "debezium" || format == "goldengate" || format == "infosphere") {
      size_t n = 0;
      for (const std::string& line : Lines(text)) {
        if (n++ < 6) decode.Add(f + line);
        json.Add(line);
      }
    } else {
      json.Add(text);
    }
  }
  // What the fuzzers found: records whose compact JSON is not their spelling.
  decode.Add(std::string(1, FormatByte("bitbroker")) + R"("\u000es")");
  decode.Add(std::string(1, FormatByte("datapoints")) +
             R"({"data":{"items":[ {"id":"a","datapoints":[)"
             R"({"time":"2018-11-30T10:00:00Z", "value":1.50}]}]}})");
  json.Add(DeepArray());
  json.Add(DeepObject());
  decode.Add(std::string(1, FormatByte("canonical")) +
             R"({"collection":"things","key":1,"op":"upsert","position":{"timestamp":1},)"
             R"("payload":)" +
             DeepObject() + "}");
  std::vector<model::ModelEvent> events = ModelEvents(40);
  std::mt19937 lines(11);  // how canonical lines spell what is optional
  for (size_t i = 0; i < 8; ++i) {
    decode.Add(FormatByte("canonical") + model::CanonicalLine(events[i], lines));
  }
  // SSE streams made of canonical-looking events, in several chunkings.
  for (size_t i = 0; i < 18; ++i) {
    std::string stream =
        absl::StrCat(": comment\r\nid: ", i,
                     "\nevent: change\ndata: ", model::ToText(events[i].payload), "\n\n");
    sse.Add(std::string(1, static_cast<char>(i % 4)) + std::string(i % 4, static_cast<char>(i)) +
            stream);
  }
  // Keys: every spelling of the model's keys, and some that are refused.
  Corpus key(out / "key");
  for (const model::KeySpec& k : model::Keys()) {
    for (const std::string& s : k.spellings) key.Add(s);
  }
  for (const char* k : {"0", "-0", "18446744073709551615", "-9223372036854775808", "1e3", "\"\"",
                        "\"a\\u0000b\"", "{}", "[1]", "null", "true", "{\"a\":{\"b\":1}}",
                        // What the fuzzers found (tests/engine/json_doc_test.cc).
                        "\"a\\uDE0E\"", "{\"\\uDFFF\":1}"}) {
    key.Add(k);
  }
  key.Add(DeepObject());
  // Documents, patches (doc NUL patch) and canonical event lines.
  Corpus merge(out / "merge_patch"), validate(out / "validate");
  std::mt19937 rng(7);
  for (size_t i = 0; i < 24; ++i) {
    std::string doc = model::ToText(model::RandomDocument(rng));
    json.Add(doc);
    merge.Add(doc + '\0' + model::ToText(model::RandomPatch(rng)));
  }
  merge.Add(std::string(R"({"b":"a_1","b":2,"a":"y"})") + '\0' + R"({"a":{"c":null},"b":null})");
  merge.Add(std::string(R"({"a":1})") + '\0' + DeepObject());
  for (size_t i = 0; i + 2 <= events.size(); i += 2) {
    validate.Add(model::CanonicalLine(events[i], lines) + "\n" +
                 model::CanonicalLine(events[i + 1], lines) + "\n");
  }
  Corpus recs(out / "records");
  RecordSeeds(out / "tmp", &recs);
  fs::remove_all(out / "tmp");
  for (const Corpus* c : {&decode, &json, &sse, &key, &merge, &validate, &recs}) {
    if (c->size() < 20) {
      std::fprintf(stderr, "fuzz_seeds: a corpus has only %zu seeds\n", c->size());
      return 1;
    }
  }
  std::printf(
      "fuzz seeds: decode %zu, sse %zu, key %zu, json %zu, merge_patch %zu, validate %zu, "
      "records %zu\n",
      decode.size(), sse.size(), key.size(), json.size(), merge.size(), validate.size(),
      recs.size());
  return 0;
}

}  // namespace
}  // namespace cairn::fuzz

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: fuzz_seeds FIXTURES_DIR OUT_DIR\n");
    return 2;
  }
  return cairn::fuzz::Run(argv[1], argv[2]);
}
