// The JSON document layer (engine/src/json_doc.h): number text survives a
// parse and serialize exactly, merge patch is RFC 7396, and nesting and
// encoding bounds are enforced with a message naming them.
#include "json_doc.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "cairn/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace cairn::json {
namespace {

using ::testing::HasSubstr;

std::string RoundTrip(std::string_view text) {
  auto doc = Parse(text);
  EXPECT_TRUE(doc.ok()) << text << ": " << doc.status();
  return doc.ok() ? Serialize(*doc) : std::string();
}

TEST(JsonDocTest, NumberTextIsKeptExactly) {
  for (std::string_view n :
       {"0", "-0", "1.0", "1.50", "1e3", "1E+03", "-2.5e-7", "18446744073709551616",
        "123456789012345678901234567890.000000000000000000001", "9007199254740993"}) {
    std::string doc = absl::StrCat(R"({"n":)", AbslView(n), "}");
    EXPECT_EQ(RoundTrip(doc), doc) << n;
    auto parsed = Parse(doc);
    ASSERT_TRUE(parsed.ok());
    ASSERT_TRUE(IsNumber((*parsed)["n"]));
    EXPECT_EQ(NumberText((*parsed)["n"]), n);
  }
  // Numbers in arrays and nested objects too; strings are not numbers.
  EXPECT_EQ(RoundTrip(R"({"a":[1.10,{"b":2e2}],"s":"1.10"})"),
            R"({"a":[1.10,{"b":2e2}],"s":"1.10"})");
  auto d = Parse(R"({"s":"1.10"})");
  EXPECT_FALSE(IsNumber((*d)["s"]));
}

TEST(JsonDocTest, SerializeIsCompactAndEscapes) {
  EXPECT_EQ(RoundTrip("{ \"a\" : [ true , false , null ] ,\n \"b\" : \"x\\ty\\u0000\" }"),
            R"({"a":[true,false,null],"b":"x\ty\u0000"})");
  // Non-ASCII stays UTF-8; a string starting with 0xFF cannot occur (it is
  // not UTF-8), so no string is ever mistaken for a number.
  EXPECT_EQ(RoundTrip(R"({"é":"ü"})"), R"({"é":"ü"})");
  EXPECT_FALSE(Parse("{\"a\":\"\xFF"
                     "1\"}")
                   .ok());
}

// RFC 7396 Appendix A, every example.
TEST(JsonDocTest, MergePatchFollowsRfc7396) {
  struct Case {
    std::string_view target, patch, result;
  } cases[] = {
      {R"({"a":"b"})", R"({"a":"c"})", R"({"a":"c"})"},
      {R"({"a":"b"})", R"({"b":"c"})", R"({"a":"b","b":"c"})"},
      {R"({"a":"b"})", R"({"a":null})", R"({})"},
      {R"({"a":"b","b":"c"})", R"({"a":null})", R"({"b":"c"})"},
      {R"({"a":["b"]})", R"({"a":"c"})", R"({"a":"c"})"},
      {R"({"a":"c"})", R"({"a":["b"]})", R"({"a":["b"]})"},
      {R"({"a":{"b":"c"}})", R"({"a":{"b":"d","c":null}})", R"({"a":{"b":"d"}})"},
      {R"({"a":[{"b":"c"}]})", R"({"a":[1]})", R"({"a":[1]})"},
      {R"(["a","b"])", R"(["c","d"])", R"(["c","d"])"},
      {R"({"a":"b"})", R"(["c"])", R"(["c"])"},
      {R"({"a":"foo"})", "null", "null"},
      {R"({"a":"foo"})", R"("bar")", R"("bar")"},
      {R"({"e":null})", R"({"a":1})", R"({"e":null,"a":1})"},
      {R"([1,2])", R"({"a":"b","c":null})", R"({"a":"b"})"},
      {R"({})", R"({"a":{"bb":{"ccc":null}}})", R"({"a":{"bb":{}}})"},
  };
  for (const Case& c : cases) {
    auto target = Parse(c.target);
    auto patch = Parse(c.patch);
    ASSERT_TRUE(target.ok() && patch.ok()) << c.target << " " << c.patch;
    MergePatch(*target, *patch, target->GetAllocator());
    EXPECT_EQ(Serialize(*target), c.result) << c.target << " + " << c.patch;
  }
}

TEST(JsonDocTest, ApplyMergePatchTreatsNoDocumentAsEmptyAndKeepsNumbers) {
  auto r = ApplyMergePatch("", R"({"a":1.50})");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, R"({"a":1.50})");
  r = ApplyMergePatch(R"({"a":1.50,"b":{"c":1e3}})", R"({"b":{"d":2.0}})");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, R"({"a":1.50,"b":{"c":1e3,"d":2.0}})");
  EXPECT_FALSE(ApplyMergePatch("{", "{}").ok());
  EXPECT_FALSE(ApplyMergePatch("{}", "{").ok());
}

// Found by fuzz_merge_patch: a document that repeats a name kept a copy of
// the member a null patch removed, so the patch applied twice differed.
TEST(JsonDocTest, ANullPatchRemovesEveryCopyOfARepeatedName) {
  auto r = ApplyMergePatch(R"({"b":"x","b":2,"a":"y"})", R"({"b":null})");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, R"({"a":"y"})");
}

// Found by fuzz_merge_patch: a patch that repeats a name applies its last
// occurrence, so applying it twice gives what applying it once did.
TEST(JsonDocTest, APatchThatRepeatsANameAppliesItsLastOccurrence) {
  const char* patch = R"({"b":{"c":null,"c":1e3,"n":"basic"},"d":1,"d":null})";
  auto once = ApplyMergePatch(R"({"d":0})", patch);
  ASSERT_TRUE(once.ok()) << once.status();
  EXPECT_EQ(*once, R"({"b":{"c":1e3,"n":"basic"}})");
  auto twice = ApplyMergePatch(*once, patch);
  ASSERT_TRUE(twice.ok()) << twice.status();
  EXPECT_EQ(*twice, *once);
  // Many members: the hashed check.
  std::string big = "{";
  for (int i = 0; i < 40; ++i) absl::StrAppend(&big, "\"k", i % 20, "\":", i, ",");
  big.back() = '}';
  auto r = ApplyMergePatch("", big);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*ApplyMergePatch(*r, big), *r);
  EXPECT_THAT(*r, ::testing::StartsWith(R"({"k0":20,"k1":21,)"));
}

// Found by fuzz_key: RapidJSON decodes a lone surrogate escape into bytes
// that are not UTF-8 (and that protobuf refuses); a pair is a character.
TEST(JsonDocTest, LoneSurrogateEscapesAreRefused) {
  // A lone low surrogate (RapidJSON refuses a lone high one itself).
  for (const char* text : {R"({"a":"\uDE0E"})", R"({"\uDFFF":1})", R"(["x\uDC00"])"}) {
    auto d = Parse(text);
    ASSERT_FALSE(d.ok()) << text;
    EXPECT_THAT(d.status().message(), ::testing::HasSubstr("lone UTF-16 surrogate")) << text;
    EXPECT_FALSE(CanonicalObject(text).ok()) << text;
  }
  for (const char* text : {R"({"a":"x\uD800"})", R"(["\uDBFF"])"}) {
    EXPECT_FALSE(Parse(text).ok()) << text;
  }
  auto pair = CanonicalObject(R"({"a":"\uD83D\uDE00"})");
  ASSERT_TRUE(pair.ok()) << pair.status();
  EXPECT_EQ(*pair, "{\"a\":\"\xF0\x9F\x98\x80\"}");
}

TEST(JsonDocTest, CanonicalObjectRefusesWhatIsNotAnObject) {
  EXPECT_EQ(*CanonicalObject(" { \"b\" : 1 , \"a\" : 2 } "), R"({"b":1,"a":2})");
  for (std::string_view bad : {"[1]", "1", "\"s\"", "null", "", "{\"a\":1} x"}) {
    auto r = CanonicalObject(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

// CanonicalObject keeps a compact text without escapes as it is and
// re-serializes anything else: both must give what Serialize(Parse(text))
// gives, and refuse what Parse refuses.
TEST(JsonDocTest, CanonicalObjectFastPathEqualsTheFullParse) {
  for (std::string_view text : {
           R"({})",
           R"({"a":1})",
           R"({"a":1.50,"b":[true,false,null,{"c":"x y"}],"é":"ü"})",
           R"({"dup":1,"dup":2})",
           R"({"s":"with \"quote\" and \\ and \u00e9 and \/"})",
           " {\"a\" : 1 } ",
           R"({"a":"tab\tinside"})",
           R"({"n":-0.0e+10,"big":123456789012345678901234567890})",
       }) {
    auto expected = Parse(text);
    ASSERT_TRUE(expected.ok()) << text;
    auto got = CanonicalObject(text);
    ASSERT_TRUE(got.ok()) << text << ": " << got.status();
    EXPECT_EQ(*got, Serialize(*expected)) << text;
  }
  std::string deep = std::string(kMaxDocumentDepth, '[') + std::string(kMaxDocumentDepth, ']');
  for (std::string bad :
       {std::string(R"({"a":1}x)"), std::string(R"({"a":})"), std::string("{\"a\":\"\xC3\x28\"}"),
        std::string(R"([1])"), std::string(R"("s")"), R"({"x":)" + deep + "}",
        std::string("{\"a\":\"raw\x01control\"}")}) {
    auto got = CanonicalObject(bad);
    EXPECT_FALSE(got.ok()) << bad;
    EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    if (Parse(bad).ok()) {
      EXPECT_THAT(std::string(got.status().message()), HasSubstr("must be a JSON object"));
    } else {
      EXPECT_EQ(got.status().message(), Parse(bad).status().message()) << bad;
    }
  }
}

TEST(JsonDocTest, NestingBoundIsEnforcedBeforeAnyRecursion) {
  auto nested = [](int depth) { return std::string(depth, '[') + std::string(depth, ']'); };
  EXPECT_TRUE(Parse(nested(kMaxDocumentDepth)).ok());
  auto deep = Parse(nested(kMaxDocumentDepth + 1));
  ASSERT_FALSE(deep.ok());
  EXPECT_EQ(deep.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(deep.status().message()), HasSubstr("512"));
  // Far past the bound (what crashed cairnd once): refused, no stack overflow.
  EXPECT_FALSE(Parse(nested(1000000)).ok());
  EXPECT_FALSE(Parse(nested(kMaxKeyDepth + 1), kMaxKeyDepth).ok());
  EXPECT_TRUE(Parse(nested(kMaxKeyDepth), kMaxKeyDepth).ok());
}

TEST(JsonDocTest, ParseErrorsNameTheOffset) {
  auto r = Parse(R"({"a":1,})");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("offset 7"));
  EXPECT_FALSE(Parse("{\"a\":\"\xC3\x28\"}").ok());  // invalid UTF-8
}

}  // namespace
}  // namespace cairn::json
