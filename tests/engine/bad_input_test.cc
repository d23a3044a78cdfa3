// Bad input (DESIGN §6, §7): an invalid event rejects its whole batch with
// INVALID_ARGUMENT naming the event's index and what is wrong with it, and
// nothing of the batch is applied -- not the good events before or after it,
// not the seq counter, not the log (re-sending the good events later applies
// them; they are not duplicates).
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cairn/store.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "test_util.h"

namespace cairn {
namespace {

using ::testing::HasSubstr;

constexpr uint64_t kT0 = 1700000000000000;

struct BadCase {
  std::string name;
  Event event;
  std::vector<std::string> message;  // each must appear in the error
};

Event Good(int n) {
  return {.source = "s",
          .collection = "c",
          .key = absl::StrCat("\"good-", n, "\""),
          .position = {kT0 + static_cast<uint64_t>(n), 0},
          .payload = R"({"ok":true})"};
}

std::vector<BadCase> BadCases() {
  Event base{.source = "s",
             .collection = "c",
             .key = "\"bad\"",
             .position = {kT0, 1},
             .payload = R"({"v":1})"};
  std::vector<BadCase> cases;
  auto add = [&](std::string name, std::vector<std::string> message, auto edit) {
    Event e = base;
    edit(e);
    cases.push_back({std::move(name), std::move(e), std::move(message)});
  };
  add("empty key", {"key is empty"}, [](Event& e) { e.key = ""; });
  add("empty string key", {"key is empty"}, [](Event& e) { e.key = R"("")"; });
  add("empty composite key", {"key is empty"}, [](Event& e) { e.key = "{}"; });
  add("unknown op", {"unknown op 9"}, [](Event& e) { e.op = static_cast<Op>(9); });
  add("unknown op 0", {"unknown op 0"}, [](Event& e) { e.op = static_cast<Op>(0); });
  add("patch not an object", {"payload of patch", "must be a JSON object"}, [](Event& e) {
    e.op = Op::kPatch;
    e.payload = R"([{"v":1}])";
  });
  add("upsert not an object", {"payload of upsert", "must be a JSON object"},
      [](Event& e) { e.payload = R"("text")"; });
  add("timestamp overflow", {"position overflow"},
      [](Event& e) { e.position.timestamp = UINT64_MAX; });
  add("tick overflow", {"position overflow"}, [](Event& e) { e.position.tick = UINT64_MAX; });
  add("invalid UTF-8 in key", {"key", "encoding"}, [](Event& e) { e.key = "\"k\xC3\x28\""; });
  add("invalid UTF-8 in composite key", {"key", "encoding"},
      [](Event& e) { e.key = "{\"id\":\"\xFF\"}"; });
  add("invalid UTF-8 in collection", {"collection", "UTF-8"},
      [](Event& e) { e.collection = "c\xE2\x82"; });
  add("invalid UTF-8 in source", {"source", "UTF-8"}, [](Event& e) { e.source = "\x80s"; });
  add("overlong UTF-8 in collection", {"collection", "UTF-8"},
      [](Event& e) { e.collection = "c\xE0\x80\xAF"; });  // '/' in three bytes
  add("UTF-16 surrogate in source", {"source", "UTF-8"},
      [](Event& e) { e.source = "s\xED\xA0\x80"; });
  add("code point beyond U+10FFFF in collection", {"collection", "UTF-8"},
      [](Event& e) { e.collection = "\xF4\x90\x80\x80"; });
  add("invalid UTF-8 in payload", {"payload of upsert", "encoding"},
      [](Event& e) { e.payload = "{\"v\":\"\xED\xA0\x80\"}"; });  // a UTF-16 surrogate
  add("nested object in key", {"key field 'a'", "must be a scalar"},
      [](Event& e) { e.key = R"({"a":{"b":1},"c":2})"; });
  add("array in key", {"key field 'c'", "must be a scalar"},
      [](Event& e) { e.key = R"({"a":1,"c":[1,2]})"; });
  add("array as key", {"key", "must be a scalar"}, [](Event& e) { e.key = "[1,2]"; });
  add("null key", {"key is null"}, [](Event& e) { e.key = "null"; });
  add("key field twice", {"key field 'a' appears twice"},
      [](Event& e) { e.key = R"({"a":1,"a":2})"; });
  add("malformed key", {"key is not valid JSON"}, [](Event& e) { e.key = "abc"; });
  add("malformed payload", {"payload of upsert", "invalid JSON"},
      [](Event& e) { e.payload = R"({"v":)"; });
  add("trailing text after payload", {"payload of upsert", "unexpected text after the value"},
      [](Event& e) { e.payload = R"({"v":1} {"w":2})"; });
  add("empty payload", {"payload of upsert", "invalid JSON"}, [](Event& e) { e.payload = ""; });
  add("empty source", {"source is empty"}, [](Event& e) { e.source = ""; });
  add("empty collection", {"collection is empty"}, [](Event& e) { e.collection = ""; });
  add("truncate with a key", {"key must be empty for truncate"},
      [](Event& e) { e.op = Op::kTruncate; });
  // Nesting is refused before any recursive code runs (a stack overflow
  // before the bound existed).
  auto nested = [](int levels, const char* open, const char* close, const char* inner = "") {
    std::string out;
    for (int i = 0; i < levels; ++i) out += open;
    out += inner;
    for (int i = 0; i < levels; ++i) out += close;
    return out;
  };
  add("payload nested 100,000 levels", {"payload of upsert", "nest deeper than 512"},
      [&](Event& e) { e.payload = nested(100000, "{\"a\":", "}", "1"); });
  add("payload nested 513 levels", {"payload of upsert", "nest deeper than 512"},
      [&](Event& e) { e.payload = nested(513, "{\"a\":", "}", "1"); });
  add("patch nested 100,000 levels", {"payload of patch", "nest deeper than 512"}, [&](Event& e) {
    e.op = Op::kPatch;
    e.payload = nested(100000, "{\"a\":", "}", "1");
  });
  add("key nested 100,000 levels", {"key", "nest deeper than 64"},
      [&](Event& e) { e.key = nested(100000, "[", "]"); });
  add("source with a control character", {"source", "control character"},
      [](Event& e) { e.source = "s\x01"; });
  add("collection of 257 bytes", {"collection is 257 bytes long; the limit is 256"},
      [](Event& e) { e.collection = std::string(257, 'c'); });
  return cases;
}

TEST(BadInputTest, InvalidEventRejectsTheWholeBatchNamingIt) {
  TempDir dir;
  auto store = Store::Open(dir.path(), Options{});
  ASSERT_TRUE(store.ok()) << store.status();
  // Some committed state first, so "nothing changed" is not "still empty".
  ASSERT_TRUE((*store)->Ingest({Good(1000)}, {}).ok());
  int n = 0;
  for (const BadCase& c : BadCases()) {
    SCOPED_TRACE(c.name);
    // The bad event at index 0, 1 or 2 of a batch of three.
    size_t bad_index = static_cast<size_t>(n % 3);
    std::vector<Event> batch;
    std::vector<Event> good;
    for (size_t i = 0; i < 3; ++i) {
      if (i == bad_index) {
        batch.push_back(c.event);
      } else {
        good.push_back(Good(++n));
        batch.push_back(good.back());
      }
    }
    const uint64_t last_seq = (*store)->LastSeq();
    const SourceStats before = (*store)->Stats().sources["s"];

    auto r = (*store)->Ingest(batch, {.durable = true});
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
    if (r.ok()) continue;  // accepted (a failure already): the checks below do not apply
    std::string message(r.status().message());
    EXPECT_THAT(message, HasSubstr(absl::StrCat("event ", bad_index, ": ")));
    for (const std::string& m : c.message) EXPECT_THAT(message, HasSubstr(m));

    // Nothing applied.
    EXPECT_EQ((*store)->LastSeq(), last_seq);
    const SourceStats after = (*store)->Stats().sources["s"];
    EXPECT_EQ(after.accepted, before.accepted);
    EXPECT_EQ(after.duplicates, before.duplicates);
    EXPECT_EQ(after.conflicts, before.conflicts);
    EXPECT_EQ(after.rejected_batches, before.rejected_batches + 1);  // the good events' source
    for (const Event& g : good) {
      EXPECT_EQ((*store)->Get(g.collection, g.key).status().code(), absl::StatusCode::kNotFound);
      auto h = (*store)->History(g.collection, g.key, {});
      ASSERT_TRUE(h.ok()) << h.status();
      EXPECT_TRUE(h->empty());
    }
    EXPECT_EQ((*store)->Get("c", "\"bad\"").status().code(), absl::StatusCode::kNotFound);
    // Not in the log either: sent alone now, the good events are new.
    auto ok = (*store)->Ingest(good, {});
    ASSERT_TRUE(ok.ok()) << ok.status();
    EXPECT_EQ(ok->applied, good.size());
    EXPECT_EQ(ok->duplicates, 0u);
    EXPECT_EQ(ok->first_seq, last_seq + 1);
    for (const Event& g : good) EXPECT_TRUE((*store)->Get(g.collection, g.key).ok());
  }
  // The rejections survive a restart with the next commit's counters.
  auto rejected = (*store)->Stats().sources["s"].rejected_batches;
  EXPECT_EQ(rejected, BadCases().size());
  store->reset();
  auto reopened = Store::Open(dir.path(), Options{});
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  EXPECT_EQ((*reopened)->Stats().sources["s"].rejected_batches, rejected);
  EXPECT_EQ((*reopened)->Get("c", "\"bad\"").status().code(), absl::StatusCode::kNotFound);
}

// An empty key is rejected on reads too, as INVALID_ARGUMENT, not NOT_FOUND.
TEST(BadInputTest, ReadsRejectInvalidKeys) {
  TempDir dir;
  auto store = Store::Open(dir.path(), Options{});
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ((*store)->Get("c", "").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*store)->Get("c", R"({"a":[1]})").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*store)->History("c", "\"\xFF\"", {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*store)->NewSnapshot({.key_prefix = "x"}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(
      (*store)->NewSnapshot({.as_of_seq = 0, .as_of_position = Position{1, 1}}).status().code(),
      absl::StatusCode::kInvalidArgument);
  std::string deep(100000, '[');
  deep += std::string(100000, ']');
  EXPECT_EQ((*store)->Get("c", deep).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*store)->History("c", deep, {}).status().code(), absl::StatusCode::kInvalidArgument);
  SubscribeOptions so;
  so.filter.keys = {deep};
  EXPECT_THAT((*store)->Subscribe(so).status().message(), HasSubstr("filter.keys[0]"));
  auto id = (*store)->PutSource({.name = "s", .format = "canonical"});
  ASSERT_TRUE(id.ok());
  auto session = (*store)->OpenSession("s", "c", SessionMode::kStream);
  ASSERT_TRUE(session.ok()) << session.status();
  EXPECT_THAT(
      (*store)->SessionUpsert(*session, {{"\"k\"", "{\"a\":" + deep + "}"}}).status().message(),
      HasSubstr("nest deeper than 512"));
  EXPECT_EQ((*store)->SessionUpsert(*session, {{deep, "{}"}}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// Ranges and starts that cannot be answered are errors, never an empty or
// endless answer.
TEST(BadInputTest, ReadsRejectRangesTheyCannotAnswer) {
  TempDir dir;
  auto store = Store::Open(dir.path(), Options{});
  ASSERT_TRUE(store.ok()) << store.status();
  ASSERT_TRUE((*store)->Ingest({Good(1), Good(2)}, {}).ok());
  auto h = (*store)->History("c", "\"good-1\"", {.from_seq = 10, .to_seq = 2});
  EXPECT_THAT(h.status().message(), HasSubstr("from_seq 10 is after to_seq 2"));
  h = (*store)->History("c", "\"good-1\"",
                        {.from_position = Position{kT0 + 5, 0}, .to_position = Position{kT0, 0}});
  EXPECT_EQ(h.status().code(), absl::StatusCode::kInvalidArgument);
  for (uint64_t from : {uint64_t{3}, uint64_t{1000000000}, UINT64_MAX}) {
    SubscribeOptions so;
    so.start = SubscribeOptions::Start::kFromSeq;
    so.from_seq = from;
    auto sub = (*store)->Subscribe(so);
    EXPECT_EQ(sub.status().code(), absl::StatusCode::kOutOfRange) << from;
    EXPECT_THAT(sub.status().message(), HasSubstr("after the last committed seq 2")) << from;
  }
  SubscribeOptions at_last;
  at_last.start = SubscribeOptions::Start::kFromSeq;
  at_last.from_seq = 2;
  EXPECT_TRUE((*store)->Subscribe(at_last).ok());
}

TEST(BadInputTest, ErrorMessagesQuoteAtMostAnExcerpt) {
  TempDir dir;
  auto store = Store::Open(dir.path(), Options{});
  ASSERT_TRUE(store.ok()) << store.status();
  auto e = (*store)->Get("c", "\"" + std::string(20000, 'k') + "\"");
  EXPECT_EQ(e.status().code(), absl::StatusCode::kNotFound);
  EXPECT_LT(e.status().message().size(), 300u) << e.status().message().substr(0, 300);
  EXPECT_THAT(std::string(e.status().message()), HasSubstr("(20002 bytes)"));
  EXPECT_EQ(Excerpt("\xC3\xA9\xC3\xA9", 3), "\xC3\xA9\xE2\x80\xA6 (4 bytes)");
}

// IngestBatches gives each batch exactly what Ingest one after another
// gives it: its own result or error (a bad batch among good ones rejects only
// itself), applied in order (a later batch sees the earlier ones: duplicates,
// conflicts, patches), with the same seqs and the same end state.
TEST(BadInputTest, IngestBatchesIsIngestOneAfterAnother) {
  auto make = [] {
    std::vector<Store::Batch> b(5);
    b[0].events = {Good(1), Good(2)};
    b[1].events = {Good(3), Good(4)};
    b[1].events[1].key = "";           // rejects batch 1 only
    b[2].events = {Good(1), Good(5)};  // a duplicate of batch 0, a new one
    Event conflict = Good(2);
    conflict.payload = R"({"ok":false})";
    b[3].events = {conflict};
    Event patch = Good(6);
    patch.key = Good(1).key;
    patch.op = Op::kPatch;
    patch.payload = R"({"n":1})";
    b[4].events = {patch, Good(3)};  // batch 1's good event was never applied
    b[4].options.durable = true;
    return b;
  };
  TempDir one_dir, all_dir;
  auto one = Store::Open(one_dir.path(), {});
  auto all = Store::Open(all_dir.path(), {});
  ASSERT_TRUE(one.ok() && all.ok());
  std::vector<absl::StatusOr<IngestResult>> expected;
  for (Store::Batch& b : make()) expected.push_back((*one)->Ingest(b.events, b.options));
  std::vector<absl::StatusOr<IngestResult>> got = (*all)->IngestBatches(make());
  ASSERT_EQ(got.size(), expected.size());
  for (size_t i = 0; i < got.size(); ++i) {
    SCOPED_TRACE(absl::StrCat("batch ", i));
    ASSERT_EQ(got[i].ok(), expected[i].ok()) << got[i].status();
    if (!got[i].ok()) {
      EXPECT_EQ(got[i].status(), expected[i].status());
      continue;
    }
    EXPECT_EQ(got[i]->first_seq, expected[i]->first_seq);
    EXPECT_EQ(got[i]->last_seq, expected[i]->last_seq);
    EXPECT_EQ(got[i]->applied, expected[i]->applied);
    EXPECT_EQ(got[i]->duplicates, expected[i]->duplicates);
    EXPECT_EQ(got[i]->conflicts, expected[i]->conflicts);
    EXPECT_EQ(got[i]->outcomes, expected[i]->outcomes);
  }
  EXPECT_EQ(got[1].status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(got[1].status().message()), HasSubstr("event 1"));
  EXPECT_EQ(got[2]->duplicates, 1u);
  EXPECT_EQ(got[3]->conflicts, 1u);
  EXPECT_EQ(got[4]->applied, 2u);
  for (int n : {1, 2, 3, 5}) {
    auto a = (*one)->Get("c", Good(n).key);
    auto b = (*all)->Get("c", Good(n).key);
    ASSERT_TRUE(a.ok() && b.ok()) << n;
    EXPECT_EQ(a->document, b->document) << n;
    EXPECT_EQ(a->seq, b->seq) << n;
  }
  EXPECT_EQ((*all)->Get("c", Good(1).key)->document, R"({"ok":true,"n":1})");
  EXPECT_EQ((*all)->Get("c", Good(4).key).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ((*all)->Stats().last_seq, (*one)->Stats().last_seq);
}

}  // namespace
}  // namespace cairn
