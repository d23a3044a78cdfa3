// The Aria feed through the incremental SSE decoder: any chunking, any line
// ending, any interleaving of its load and change events, any batching gives
// the same end state (DESIGN §3 order independence, §6 sse-feed).
#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include "format_test_util.h"
#include "gmock/gmock.h"

namespace cairn::formats {
namespace {

using ::testing::HasSubstr;

const SourceDefinition kBilling{.name = "billing", .format = "sse-feed"};

const std::map<std::string, std::string> kExpected = {
    {"1001", R"({"acct_no":1001,"status":"ACTIVE","plan":"gold","balance":99.0})"},
    {"1002", R"({"acct_no":1002,"status":"ACTIVE","plan":"silver","balance":0})"},
    {"1003", R"({"acct_no":1003,"status":"ACTIVE","plan":"platinum","balance":10})"},
};

// Feeds `text` to a fresh decoder in random chunks of 1..max_chunk bytes.
absl::StatusOr<std::vector<Event>> FeedChunked(const std::string& text, std::mt19937& rng,
                                               size_t max_chunk) {
  SseDecoder decoder(kBilling);
  std::vector<Event> out;
  std::uniform_int_distribution<size_t> size(1, max_chunk);
  for (size_t at = 0; at < text.size();) {
    size_t n = std::min(size(rng), text.size() - at);
    if (absl::Status s = decoder.Feed(std::string_view(text).substr(at, n), &out); !s.ok()) {
      return s;
    }
    at += n;
  }
  if (absl::Status s = decoder.Finish(&out); !s.ok()) return s;
  return out;
}

// The feed's events as text blocks (each ending with its blank line).
std::vector<std::string> Blocks(const std::string& text) {
  std::vector<std::string> blocks;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find("\n\n", start);
    if (end == std::string::npos) end = text.size();
    std::string block = text.substr(start, end - start);
    if (block.find("event:") != std::string::npos) blocks.push_back(block + "\n\n");
    start = end + 2;
  }
  return blocks;
}

std::string Replace(std::string s, const std::string& from, const std::string& to) {
  for (size_t at = 0; (at = s.find(from, at)) != std::string::npos; at += to.size()) {
    s.replace(at, from.size(), to);
  }
  return s;
}

class SseTest : public StoreFixture {
 protected:
  // Ingests `events` in random batches into a fresh store and returns its
  // account collection.
  std::map<std::string, std::string> IngestInBatches(std::vector<Event> events, std::mt19937& rng,
                                                     int round) {
    auto store = Store::Open(dir_.Sub("round" + std::to_string(round)), Options{});
    EXPECT_TRUE(store.ok()) << store.status();
    std::uniform_int_distribution<size_t> batch(1, 4);
    for (size_t at = 0; at < events.size();) {
      size_t n = std::min(batch(rng), events.size() - at);
      std::vector<Event> part(events.begin() + at, events.begin() + at + n);
      auto r = (*store)->Ingest(part, {});
      EXPECT_TRUE(r.ok()) << r.status();
      at += n;
    }
    std::map<std::string, std::string> out;
    EXPECT_TRUE((*store)
                    ->Snapshot({.collection = "account"},
                               [&](const Entity& e) {
                                 EXPECT_TRUE(e.complete) << e.key;
                                 out[e.key] = e.document;
                                 return true;
                               })
                    .ok());
    return out;
  }
};

TEST_F(SseTest, AnyChunkingAndLineEnding) {
  std::string feed = ReadFixture("seeds/aria-feed.sse");
  auto whole = Decode(kBilling, feed);
  ASSERT_TRUE(whole.ok()) << whole.status();
  std::mt19937 rng(7);
  int round = 0;
  for (std::string ending : {"\n", "\r\n", "\r"}) {
    std::string text = Replace(feed, "\n", ending);
    for (size_t max_chunk : {1, 2, 3, 7, 64, 4096}) {
      SCOPED_TRACE(testing::Message() << "ending " << ending.size() << " chunk " << max_chunk);
      auto events = FeedChunked(text, rng, max_chunk);
      ASSERT_TRUE(events.ok()) << events.status();
      ASSERT_EQ(events->size(), whole->size());
      for (size_t i = 0; i < events->size(); ++i) {
        EXPECT_EQ((*events)[i].key, (*whole)[i].key);
        EXPECT_EQ((*events)[i].payload, (*whole)[i].payload);
        EXPECT_EQ((*events)[i].position, (*whole)[i].position);
        EXPECT_EQ((*events)[i].op, (*whole)[i].op);
      }
      if (max_chunk == 3) {
        EXPECT_EQ(IngestInBatches(*events, rng, round++), kExpected);
      }
    }
  }
}

TEST_F(SseTest, AnyInterleavingGivesTheSameEndState) {
  std::vector<std::string> blocks = Blocks(ReadFixture("seeds/aria-feed.sse"));
  ASSERT_EQ(blocks.size(), 8u);
  std::mt19937 rng(42);
  for (int round = 0; round < 40; ++round) {
    std::shuffle(blocks.begin(), blocks.end(), rng);
    std::string text = ": shuffled\n";
    for (const std::string& b : blocks) text += b;
    auto events = FeedChunked(text, rng, 1 + round * 3);
    ASSERT_TRUE(events.ok()) << events.status();
    ASSERT_EQ(events->size(), 8u);
    EXPECT_EQ(IngestInBatches(*events, rng, round), kExpected) << text;
  }
}

TEST_F(SseTest, SpecDetails) {
  // Comments, an id field, no space after the colon, retry, an event without
  // data (ignored), and a last event without its blank line.
  std::string text =
      ": hello\n"
      "retry: 1000\n\n"
      "event: create\nid: e-1\n"
      "data:{\"entity\":\"account\",\"key\":7,\"timestamp\":1700000000000,"
      "\"tick\":1}\n"
      "data: {\"a\":1}\n";
  auto events = Decode(kBilling, text);
  ASSERT_TRUE(events.ok()) << events.status();
  ASSERT_EQ(events->size(), 1u);
  const Event& e = (*events)[0];
  EXPECT_EQ(e.event_id, "e-1");
  EXPECT_EQ(e.key, "7");
  EXPECT_EQ(e.position.timestamp,
            1700000000000000u);  // numeric header timestamps are ms
  EXPECT_EQ(e.payload, R"({"a":1})");
  EXPECT_THAT(e.raw, HasSubstr("event: create\n"));

  // Errors stick: after a bad event the decoder keeps reporting it.
  SseDecoder decoder(kBilling);
  std::vector<Event> out;
  absl::Status s = decoder.Feed("event: upsert\ndata: {}\ndata: {}\n\n", &out);
  EXPECT_THAT(s.message(), HasSubstr("record 0: line 1: event: unknown event type 'upsert'"));
  EXPECT_EQ(decoder.Feed("\n", &out), s);
  EXPECT_TRUE(out.empty());
}

// SSE ignores unknown lines, so a payload in the wrong format (binary, a
// Debezium file) decoded to zero events and was accepted as an empty batch.
TEST_F(SseTest, APayloadWithoutAnyEventIsAnError) {
  for (const auto& [payload, line] : std::vector<std::pair<std::string, int>>{
           {"{\"before\":null,\"after\":{\"id\":1},\"op\":\"c\"}\n", 1},
           {std::string("\x7f"
                        "ELF\x02\x01\x01\0\0\0",
                        10),
            1},
           {": comment\r\nretry: 5\r\n\r\nevent: create\r\n\r\n", 4},
           {"event: create\nid: 3\n\n", 1}}) {
    SCOPED_TRACE(payload);
    auto r = Decode(kBilling, payload);
    EXPECT_TRUE(absl::IsInvalidArgument(r.status())) << r.status();
    EXPECT_THAT(std::string(r.status().message()),
                HasSubstr(absl::StrCat("line ", line, ": no SSE event found")));
  }
  // What a live stream may send between events is no error.
  for (const std::string payload :
       {"", "\n\n", ": keep-alive\n\n", "retry: 1000\n\n", "id: 7\n\n"}) {
    auto r = Decode(kBilling, payload);
    ASSERT_TRUE(r.ok()) << payload << ": " << r.status();
    EXPECT_TRUE(r->empty());
  }
}

// `retry:` is kept for the reader (a connector reconnects after it); a value
// that is not all digits is ignored, as the SSE spec says.
TEST_F(SseTest, RetryIsKeptForTheReader) {
  SseDecoder decoder(kBilling);
  std::vector<Event> out;
  EXPECT_EQ(decoder.retry_millis(), std::nullopt);
  ASSERT_TRUE(decoder.Feed("retry: 2500\n\n", &out).ok());
  EXPECT_EQ(decoder.retry_millis(), 2500u);
  ASSERT_TRUE(decoder.Feed("retry: 1s\nretry: -4\nretry:\n\n", &out).ok());
  EXPECT_EQ(decoder.retry_millis(), 2500u);
  ASSERT_TRUE(decoder
                  .Feed("id: 7\nretry: 300\nevent: load\ndata: {\"entity\":\"account\",\"key\":1,"
                        "\"timestamp\":1,\"tick\":1}\ndata: {}\n\n",
                        &out)
                  .ok());
  EXPECT_EQ(decoder.retry_millis(), 300u);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].event_id, "7");
}

}  // namespace
}  // namespace cairn::formats
