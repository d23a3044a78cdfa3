// The store's on-disk format version (kFormatVersion, config.h): recorded in
// every store, assumed for stores written before it was recorded, and a
// store of another version is refused naming both versions.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cairn/store.h"
#include "cairn/version.h"
#include "config.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "key_codec.h"
#include "rocksdb/db.h"
#include "test_util.h"

namespace cairn {
namespace {

using ::testing::HasSubstr;

Event Upsert(int key) {
  return {.source = "s",
          .collection = "c",
          .key = std::to_string(key),
          .position = {static_cast<uint64_t>(key), 0},
          .payload = R"({"v":1})"};
}

// Runs `fn` on the store's default (meta) family with plain RocksDB.
template <typename Fn>
void WithMeta(const std::string& path, Fn fn) {
  std::vector<rocksdb::ColumnFamilyDescriptor> cfs;
  for (const char* name : internal::kCfNames)
    cfs.emplace_back(name, rocksdb::ColumnFamilyOptions());
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw = nullptr;
  ASSERT_TRUE(rocksdb::DB::Open(rocksdb::DBOptions(), path, cfs, &handles, &raw).ok());
  std::unique_ptr<rocksdb::DB> db(raw);
  fn(db.get(), handles[internal::kMeta]);
  for (auto* h : handles) ASSERT_TRUE(db->DestroyColumnFamilyHandle(h).ok());
}

std::string U64(uint64_t v) {
  std::string out;
  keys::AppendU64(v, &out);
  return out;
}

TEST(FormatVersionTest, EveryStoreRecordsItsVersion) {
  TempDir dir;
  {
    auto store = Store::Open(dir.path(), Options{});
    ASSERT_TRUE(store.ok()) << store.status();
  }
  WithMeta(dir.path(), [](rocksdb::DB* db, rocksdb::ColumnFamilyHandle* meta) {
    std::string v;
    ASSERT_TRUE(db->Get(rocksdb::ReadOptions(), meta, internal::kMetaFormatVersion, &v).ok());
    EXPECT_EQ(v, U64(internal::kFormatVersion));
  });
}

// The cairn version is in the store's metadata: the one that created it, and
// the one that opened it last (reported as the previous one by the next
// open, so an operator sees an upgrade or a downgrade in Stats).
TEST(FormatVersionTest, TheStoreRecordsWhichCairnCreatedAndOpenedIt) {
  TempDir dir;
  {
    auto store = Store::Open(dir.path(), Options{});
    ASSERT_TRUE(store.ok()) << store.status();
    StoreStats::Versions v = (*store)->Stats().versions;
    EXPECT_EQ(v.cairn, kVersion);
    EXPECT_EQ(v.format, internal::kFormatVersion);
    EXPECT_EQ(v.created_by, kVersion);
    EXPECT_EQ(v.previously_opened_by, "");
    ASSERT_TRUE((*store)->Ingest({Upsert(1)}, {}).ok());
  }
  {
    auto store = Store::Open(dir.path(), Options{});
    ASSERT_TRUE(store.ok()) << store.status();
    StoreStats::Versions v = (*store)->Stats().versions;
    EXPECT_EQ(v.created_by, kVersion);
    EXPECT_EQ(v.previously_opened_by, kVersion);
  }
  // As an older cairn that recorded versions left it.
  WithMeta(dir.path(), [](rocksdb::DB* db, rocksdb::ColumnFamilyHandle* meta) {
    ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), meta, internal::kMetaCreatedBy, "0.0.7").ok());
    ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), meta, internal::kMetaOpenedBy, "0.0.9").ok());
  });
  {
    auto store = Store::Open(dir.path(), Options{});
    ASSERT_TRUE(store.ok()) << store.status();
    StoreStats::Versions v = (*store)->Stats().versions;
    EXPECT_EQ(v.created_by, "0.0.7");
    EXPECT_EQ(v.previously_opened_by, "0.0.9");
    EXPECT_EQ((*store)->LastSeq(), 1u);
  }
  WithMeta(dir.path(), [](rocksdb::DB* db, rocksdb::ColumnFamilyHandle* meta) {
    std::string v;
    ASSERT_TRUE(db->Get(rocksdb::ReadOptions(), meta, internal::kMetaOpenedBy, &v).ok());
    EXPECT_EQ(v, kVersion);
    ASSERT_TRUE(db->Get(rocksdb::ReadOptions(), meta, internal::kMetaCreatedBy, &v).ok());
    EXPECT_EQ(v, "0.0.7");
  });
  // A store written before stores recorded the cairn version has no creator.
  WithMeta(dir.path(), [](rocksdb::DB* db, rocksdb::ColumnFamilyHandle* meta) {
    ASSERT_TRUE(db->Delete(rocksdb::WriteOptions(), meta, internal::kMetaCreatedBy).ok());
    ASSERT_TRUE(db->Delete(rocksdb::WriteOptions(), meta, internal::kMetaOpenedBy).ok());
  });
  auto store = Store::Open(dir.path(), Options{});
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ((*store)->Stats().versions.created_by, "");
  EXPECT_EQ((*store)->Stats().versions.previously_opened_by, "");
}

TEST(FormatVersionTest, AStoreWrittenBeforeVersionsIsVersionOne) {
  TempDir dir;
  {
    auto store = Store::Open(dir.path(), Options{});
    ASSERT_TRUE(store.ok());
    ASSERT_TRUE((*store)->Ingest({Upsert(1), Upsert(2)}, {}).ok());
  }
  // As the previous commit's binary left it: no version key.
  WithMeta(dir.path(), [](rocksdb::DB* db, rocksdb::ColumnFamilyHandle* meta) {
    ASSERT_TRUE(db->Delete(rocksdb::WriteOptions(), meta, internal::kMetaFormatVersion).ok());
  });
  auto store = Store::Open(dir.path(), Options{});
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ((*store)->LastSeq(), 2u);
  auto e = (*store)->Get("c", "2");
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->document, R"({"v":1})");
}

TEST(FormatVersionTest, AnotherVersionIsRefusedNamingBoth) {
  TempDir dir;
  {
    auto store = Store::Open(dir.path(), Options{});
    ASSERT_TRUE(store.ok());
    ASSERT_TRUE((*store)->Ingest({Upsert(1)}, {}).ok());
  }
  for (uint64_t version : {uint64_t{0}, internal::kFormatVersion + 1, uint64_t{99}}) {
    WithMeta(dir.path(), [&](rocksdb::DB* db, rocksdb::ColumnFamilyHandle* meta) {
      ASSERT_TRUE(
          db->Put(rocksdb::WriteOptions(), meta, internal::kMetaFormatVersion, U64(version)).ok());
    });
    auto store = Store::Open(dir.path(), Options{});
    ASSERT_FALSE(store.ok()) << version;
    EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(std::string(store.status().message()),
                HasSubstr(absl::StrCat("format version ", version, "; this cairn reads version ",
                                       internal::kFormatVersion)));
  }
  WithMeta(dir.path(), [](rocksdb::DB* db, rocksdb::ColumnFamilyHandle* meta) {
    ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), meta, internal::kMetaFormatVersion, "xyz").ok());
  });
  EXPECT_EQ(Store::Open(dir.path(), Options{}).status().code(), absl::StatusCode::kDataLoss);
}

// Format 3 keeps a log record only for a truncate (an event is logged by its
// history version); the record holds the whole truncate, so one sent again is
// judged like any event: the same one is a duplicate, one that differs only
// in its snapshot flag a conflict.
TEST(FormatVersionTest, ATruncateSentAgainIsJudgedByTheWholeEvent) {
  TempDir dir;
  auto store = Store::Open(dir.path(), Options{});
  ASSERT_TRUE(store.ok()) << store.status();
  ASSERT_TRUE((*store)->Ingest({Upsert(1)}, {}).ok());
  Event truncate{
      .source = "s", .collection = "c", .position = {5, 0}, .op = Op::kTruncate, .snapshot = true};
  auto first = (*store)->Ingest({truncate}, {});
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->applied, 1u);
  auto again = (*store)->Ingest({truncate, Upsert(6)}, {});
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->duplicates, 1u);
  EXPECT_EQ(again->conflicts, 0u);
  truncate.snapshot = false;
  auto differs = (*store)->Ingest({truncate}, {});
  ASSERT_TRUE(differs.ok()) << differs.status();
  EXPECT_EQ(differs->conflicts, 1u);
  EXPECT_EQ(differs->duplicates, 0u);
}

}  // namespace
}  // namespace cairn
