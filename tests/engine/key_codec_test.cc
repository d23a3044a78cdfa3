// The key codec (engine/src/key_codec.h): byte order equals value order,
// escaping round-trips and keeps keys prefix-free, composite keys are
// canonical whatever the field order.
#include "key_codec.h"

#include <algorithm>
#include <cctype>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace cairn::keys {
namespace {

using ::testing::HasSubstr;

std::string Key(std::string_view json) {
  auto k = EncodeKey(json);
  EXPECT_TRUE(k.ok()) << json << ": " << k.status();
  return k.ok() ? *k : std::string();
}

std::string Escaped(std::string_view s) {
  std::string out;
  AppendEscaped(s, &out);
  return out;
}

// Random bytes, biased towards the bytes the escaping treats specially.
std::string RandomBytes(std::mt19937_64& rng, size_t max_len) {
  static const char kSpecial[] = {'\0', '\x01', '\xFF', 'a'};
  std::string s(rng() % (max_len + 1), '\0');
  for (char& c : s) {
    c = rng() % 2 ? kSpecial[rng() % 4] : static_cast<char>(rng() % 256);
  }
  return s;
}

// A JSON string literal for `s` (ASCII letters and \u escapes only).
std::string JsonString(std::string_view s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (std::isalnum(c)) {
      out.push_back(static_cast<char>(c));
    } else {
      absl::StrAppend(&out, "\\u00", absl::Hex(c, absl::kZeroPad2));
    }
  }
  return out + "\"";
}

TEST(KeyCodecTest, IntegerOrderIsByteOrderOnRandomValues) {
  std::mt19937_64 rng(7);
  std::vector<int64_t> values = {INT64_MIN, -1, 0, 1, INT64_MAX};
  for (int i = 0; i < 2000; ++i) {
    int64_t v = static_cast<int64_t>(rng());
    values.push_back(i % 2 ? v : v % 1000);
  }
  for (size_t i = 0; i + 1 < values.size(); ++i) {
    int64_t a = values[i], b = values[i + 1];
    std::string ka = Key(absl::StrCat(a)), kb = Key(absl::StrCat(b));
    EXPECT_EQ(a < b, ka < kb) << a << " vs " << b;
    EXPECT_EQ(a == b, ka == kb) << a << " vs " << b;
  }
}

TEST(KeyCodecTest, StringOrderIsByteOrderOnRandomValues) {
  std::mt19937_64 rng(11);
  for (int i = 0; i < 2000; ++i) {
    // Code points below 0x80, NUL included: UTF-8 bytes equal code points.
    std::string a, b;
    for (size_t n = rng() % 6; n > 0; --n)
      a.push_back(static_cast<char>(rng() % 4 ? rng() % 3 : 'a'));
    for (size_t n = rng() % 6; n > 0; --n)
      b.push_back(static_cast<char>(rng() % 4 ? rng() % 3 : 'a'));
    if (a.empty() || b.empty()) continue;  // the empty string is no key
    std::string ka = Key(JsonString(a)), kb = Key(JsonString(b));
    EXPECT_EQ(a < b, ka < kb) << testing::PrintToString(a) << " vs " << testing::PrintToString(b);
    EXPECT_EQ(a == b, ka == kb);
  }
}

TEST(KeyCodecTest, EscapedOrderIsByteOrderAndRoundTrips) {
  std::mt19937_64 rng(3);
  for (int i = 0; i < 5000; ++i) {
    std::string a = RandomBytes(rng, 8), b = RandomBytes(rng, 8);
    std::string ea = Escaped(a), eb = Escaped(b);
    EXPECT_EQ(a < b, ea < eb);
    // Prefix-free: an escaped string followed by anything never starts with
    // another escaped string.
    if (a != b) {
      EXPECT_FALSE((ea + "tail").starts_with(eb)) << testing::PrintToString(a);
    }
    std::string tail = RandomBytes(rng, 4);
    std::string joined = ea + tail;
    std::string_view in = joined;
    std::string back;
    ASSERT_TRUE(ConsumeEscaped(&in, &back));
    EXPECT_EQ(back, a);
    EXPECT_EQ(in, tail);
  }
}

TEST(KeyCodecTest, MalformedEscapesAreRefused) {
  std::string out;
  for (std::string_view bad :
       {std::string_view("abc"), std::string_view("a\0", 2), std::string_view("a\0\x02", 3)}) {
    std::string_view in = bad;
    EXPECT_FALSE(ConsumeEscaped(&in, &out)) << testing::PrintToString(std::string(bad));
  }
}

TEST(KeyCodecTest, U64IsBigEndianAndOrdered) {
  std::string out;
  AppendU64(0x0102030405060708, &out);
  EXPECT_EQ(out, std::string("\x01\x02\x03\x04\x05\x06\x07\x08", 8));
  std::mt19937_64 rng(5);
  for (int i = 0; i < 1000; ++i) {
    uint64_t a = rng(), b = rng() >> (rng() % 64);
    EXPECT_EQ(a < b, SeqKey(a) < SeqKey(b));
    std::string k = SeqKey(a);
    std::string_view in = k;
    uint64_t back = 0;
    ASSERT_TRUE(ConsumeU64(&in, &back));
    EXPECT_EQ(back, a);
    EXPECT_TRUE(in.empty());
  }
  std::string_view short_in = "1234567";
  uint64_t v;
  EXPECT_FALSE(ConsumeU64(&short_in, &v));
}

TEST(KeyCodecTest, NumbersOtherThanInt64KeepTheirText) {
  for (std::string_view text :
       {"1.50", "1e3", "-0.0", "18446744073709551616", "9223372036854775808", "123.4500"}) {
    auto json = KeyToJson(Key(text));
    ASSERT_TRUE(json.ok()) << json.status();
    EXPECT_EQ(*json, text);
  }
  // An int64 is an int64 whatever its text's range: 2^63 - 1 and -2^63 too.
  EXPECT_EQ(*KeyToJson(Key("9223372036854775807")), "9223372036854775807");
  EXPECT_EQ(*KeyToJson(Key("-9223372036854775808")), "-9223372036854775808");
  // Different number text is a different key: cairn does not round.
  EXPECT_NE(Key("1.5"), Key("1.50"));
}

TEST(KeyCodecTest, CompositeKeysAreCanonical) {
  std::string a = Key(R"({"USER_ID":123,"FISCAL_CODE":"X"})");
  std::string b = Key(R"({ "FISCAL_CODE" : "X", "USER_ID" : 123 })");
  EXPECT_EQ(a, b);
  EXPECT_EQ(*KeyToJson(a), R"({"FISCAL_CODE":"X","USER_ID":123})");
  EXPECT_EQ(KeyLength(a + "rest"), a.size());
  // Scalars of every kind inside a composite key.
  std::string all = Key(R"({"n":null,"f":false,"t":true,"i":-5,"x":2.5,"s":"a\u0000b"})");
  EXPECT_EQ(*KeyToJson(all), R"({"f":false,"i":-5,"n":null,"s":"a\u0000b","t":true,"x":2.5})");
  // Composite keys order by their sorted fields, then values.
  EXPECT_LT(Key(R"({"a":1,"b":2})"), Key(R"({"a":1,"b":3})"));
  EXPECT_LT(Key(R"({"a":1,"b":9})"), Key(R"({"a":2,"b":0})"));
}

TEST(KeyCodecTest, BadKeysNameTheProblem) {
  struct Case {
    std::string_view json;
    std::string_view error;
  } cases[] = {
      {"", "key is empty"},
      {"\"\"", "key is empty"},
      {"null", "key is null"},
      {"{}", "composite key has no fields"},
      {R"({"a":{"b":1}})", "key field 'a' must be a scalar"},
      {R"({"a":[1]})", "key field 'a' must be a scalar"},
      {"[1]", "must be a scalar"},
      {R"({"a":1,"a":2})", "key field 'a' appears twice"},
      {"{\"a\":", "key is not valid JSON"},
  };
  for (const Case& c : cases) {
    auto k = EncodeKey(c.json);
    ASSERT_FALSE(k.ok()) << c.json;
    EXPECT_EQ(k.status().code(), absl::StatusCode::kInvalidArgument) << c.json;
    EXPECT_THAT(std::string(k.status().message()), HasSubstr(c.error)) << c.json;
  }
  EXPECT_EQ(KeyToJson("\x7F").status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(KeyLength("\x30\x01"), 0u);  // an integer cut short
}

// Format 5 keys an entity's versions and entries newest first: a later
// position (then source) or seq sorts before; each key's suffix reads back
// as written, and its timestamp alone as ParseHistorySuffix reads it.
TEST(KeyCodecTest, HistoryAndEntitySeqKeysSortNewestFirst) {
  const std::string e = EntityPrefix("acct", Key("1"));
  const std::vector<std::pair<Position, std::string>> ascending = {
      {{5, 0}, ""},  {{5, 0}, "a"}, {{5, 0}, std::string("a\0", 2)}, {{5, 0}, "b"},
      {{5, 1}, "a"}, {{6, 0}, "a"}, {{UINT64_MAX, UINT64_MAX}, "z"}};
  for (size_t i = 0; i + 1 < ascending.size(); ++i) {
    EXPECT_GT(HistoryKey(e, ascending[i].first, ascending[i].second),
              HistoryKey(e, ascending[i + 1].first, ascending[i + 1].second))
        << i;
  }
  for (const auto& [pos, source] : ascending) {
    std::string k = HistoryKey(e, pos, source);
    ASSERT_TRUE(k.starts_with(HistoryPositionPrefix(e, pos)));
    Position p;
    std::string s;
    ASSERT_TRUE(ParseHistorySuffix(std::string_view(k).substr(e.size()), &p, &s));
    EXPECT_EQ(p, pos);
    EXPECT_EQ(s, source);
    uint64_t ts = 0;
    ASSERT_TRUE(HistorySuffixTimestamp(std::string_view(k).substr(e.size()), &ts));
    EXPECT_EQ(ts, pos.timestamp);
  }
  uint64_t unused = 0;
  EXPECT_FALSE(HistorySuffixTimestamp("short", &unused));
  for (uint64_t seq : {uint64_t{0}, uint64_t{1}, uint64_t{42}, UINT64_MAX - 1}) {
    EXPECT_GT(EntitySeqKey(e, seq), EntitySeqKey(e, seq + 1));
    uint64_t back = 0;
    ASSERT_TRUE(
        ParseEntitySeqSuffix(std::string_view(EntitySeqKey(e, seq)).substr(e.size()), &back));
    EXPECT_EQ(back, seq);
  }
}

TEST(KeyCodecTest, EntityPrefixesNeverNest) {
  // Every pair of distinct (collection, key) entities: neither prefix starts
  // the other, so per-entity range scans never see another entity.
  std::vector<std::string> prefixes;
  for (std::string_view c : {std::string_view("a"), std::string_view("a\0", 2),
                             std::string_view("ab"), std::string_view("b")}) {
    for (std::string_view k :
         {"1", "12", "\"1\"", "\"1\\u0000\"", R"({"x":1})", R"({"x":1,"y":2})"}) {
      std::string key = Key(k);
      std::string p = EntityPrefix(c, key);
      EXPECT_EQ(EntityPrefixLength(HistoryKey(p, {5, 6}, "src")), p.size());
      EXPECT_EQ(EntityPrefixLength(EntitySeqKey(p, 9)), p.size());
      prefixes.push_back(p);
    }
  }
  for (const auto& p : prefixes) {
    for (const auto& q : prefixes) {
      if (p != q) {
        EXPECT_FALSE(q.starts_with(p));
      }
    }
  }
}

TEST(KeyCodecTest, StringKeyPrefixMatchesExactlyTheStringsThatStartWithIt) {
  std::string prefix = StringKeyPrefix("ACC-");
  EXPECT_TRUE(Key("\"ACC-1\"").starts_with(prefix));
  EXPECT_TRUE(Key("\"ACC-\"").starts_with(prefix));
  EXPECT_FALSE(Key("\"ACB-1\"").starts_with(prefix));
  EXPECT_FALSE(Key("\"AC\"").starts_with(prefix));
  EXPECT_FALSE(Key("12").starts_with(prefix));
}

TEST(KeyCodecTest, PrefixSuccessorBoundsEveryKeyWithThePrefix) {
  EXPECT_EQ(PrefixSuccessor("ab"), "ac");
  EXPECT_EQ(PrefixSuccessor(std::string("a\xFF", 2)), "b");
  EXPECT_EQ(PrefixSuccessor(std::string("\xFF\xFF", 2)), "");
  std::mt19937_64 rng(13);
  for (int i = 0; i < 1000; ++i) {
    std::string p = RandomBytes(rng, 4), tail = RandomBytes(rng, 4);
    std::string succ = PrefixSuccessor(p);
    if (succ.empty()) continue;
    EXPECT_LT(p + tail, succ);
    EXPECT_GT(succ, p);
  }
}

TEST(KeyCodecTest, MetaAndStagingKeysRoundTrip) {
  std::string key = TruncateMarkerKey(std::string_view("acc\0x", 5), {17, 4}, "billing");
  EXPECT_TRUE(key.starts_with(internal::kMetaTruncatePrefix));
  std::string collection, source;
  Position pos;
  ASSERT_TRUE(ParseTruncateMarkerKey(key, &collection, &pos, &source));
  EXPECT_EQ(collection, std::string_view("acc\0x", 5));
  EXPECT_EQ(pos, (Position{17, 4}));
  EXPECT_EQ(source, "billing");
  EXPECT_FALSE(ParseTruncateMarkerKey(key + "x", &collection, &pos, &source));
  EXPECT_FALSE(ParseTruncateMarkerKey(key.substr(0, key.size() - 1), &collection, &pos, &source));
  EXPECT_FALSE(ParseTruncateMarkerKey("session/x", &collection, &pos, &source));

  EXPECT_EQ(MetaName(SessionKey("s1"), internal::kMetaSessionPrefix), "s1");
  EXPECT_EQ(MetaName(CheckpointKey("cp"), internal::kMetaCheckpointPrefix), "cp");
  EXPECT_EQ(MetaName(RegistryKey("src"), internal::kMetaRegistryPrefix), "src");
  EXPECT_EQ(MetaName(SourceStatsKey("src"), internal::kMetaSourcePrefix), "src");
  // The meta prefixes never start one another's keys.
  for (std::string_view a :
       {internal::kMetaSourcePrefix, internal::kMetaTruncatePrefix, internal::kMetaRegistryPrefix,
        internal::kMetaSessionPrefix, internal::kMetaCheckpointPrefix}) {
    for (std::string_view b :
         {internal::kMetaSourcePrefix, internal::kMetaTruncatePrefix, internal::kMetaRegistryPrefix,
          internal::kMetaSessionPrefix, internal::kMetaCheckpointPrefix}) {
      if (a != b) {
        EXPECT_FALSE(b.starts_with(a)) << a << " " << b;
      }
    }
  }
  // One session's staging range never holds another's keys.
  std::string k = Key("1");
  EXPECT_TRUE(StagingKey("ab", k).starts_with(StagingPrefix("ab")));
  EXPECT_FALSE(StagingKey("abc", k).starts_with(StagingPrefix("ab")));
  EXPECT_FALSE(StagingKey(std::string_view("ab\0", 3), k).starts_with(StagingPrefix("ab")));
}

}  // namespace
}  // namespace cairn::keys
