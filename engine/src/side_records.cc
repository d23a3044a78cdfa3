// Side records (Store::PutSideRecord, IngestOptions::side_records): small
// named values of the layers above the engine, in the meta family under
// kMetaSidePrefix. A batch's side records are put by ApplyBatch
// (store_write.cc), inside the batch's save point: they commit with it or
// not at all.
#include "absl/strings/str_cat.h"
#include "cairn/status.h"
#include "key_codec.h"
#include "rocks_status.h"
#include "store_impl.h"

namespace cairn::internal {
namespace {

absl::Status CheckSideRecord(const std::string& what, std::string_view name, size_t value_size) {
  if (name.empty() || name.size() > kMaxSideRecordName) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ".name must be 1 to ", kMaxSideRecordName, " bytes, not ", name.size()));
  }
  if (value_size > kMaxSideRecordValue) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ".value is ", value_size, " bytes, more than ", kMaxSideRecordValue));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status StoreImpl::CheckSideRecords(const std::vector<SideRecord>& records) {
  if (records.size() > kMaxSideRecordsPerBatch) {
    return absl::InvalidArgumentError(absl::StrCat(
        records.size(), " side records, more than a batch takes (", kMaxSideRecordsPerBatch, ")"));
  }
  for (size_t i = 0; i < records.size(); ++i) {
    CAIRN_RETURN_IF_ERROR(CheckSideRecord(absl::StrCat("side_records[", i, "]"), records[i].name,
                                          records[i].value.size()));
  }
  return absl::OkStatus();
}

absl::Status StoreImpl::PutSideRecord(std::string_view name, std::string_view value) {
  CAIRN_RETURN_IF_ERROR(CheckSideRecord("side record", name, value.size()));
  rocksdb::WriteOptions wo;
  wo.sync = true;
  return FromRocks(db_->Put(wo, cfs_[kMeta], keys::SideRecordKey(name), value), "put side record");
}

absl::StatusOr<std::string> StoreImpl::GetSideRecord(std::string_view name) {
  CAIRN_RETURN_IF_ERROR(CheckSideRecord("side record", name, 0));
  std::string value;
  rocksdb::Status s =
      db_->Get(rocksdb::ReadOptions(), cfs_[kMeta], keys::SideRecordKey(name), &value);
  if (s.IsNotFound()) {
    return absl::NotFoundError(absl::StrCat("no side record \"", Excerpt(name), "\""));
  }
  CAIRN_RETURN_IF_ERROR(FromRocks(s, "get side record"));
  return value;
}

absl::StatusOr<std::vector<SideRecord>> StoreImpl::ListSideRecords(std::string_view prefix) {
  std::vector<SideRecord> out;
  std::string start = keys::SideRecordKey(prefix);
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), cfs_[kMeta]));
  for (it->Seek(start); it->Valid() && it->key().starts_with(start); it->Next()) {
    if (out.size() == kMaxSideRecordsListed) {
      return absl::ResourceExhaustedError(absl::StrCat("more than ", kMaxSideRecordsListed,
                                                       " side records start with \"",
                                                       Excerpt(prefix), "\""));
    }
    std::string_view key(it->key().data(), it->key().size());
    key.remove_prefix(kMetaSidePrefix.size());
    out.push_back({std::string(key), it->value().ToString()});
  }
  CAIRN_RETURN_IF_ERROR(FromRocks(it->status(), "list side records"));
  return out;
}

absl::StatusOr<size_t> StoreImpl::DeleteSideRecords(std::string_view prefix) {
  CAIRN_ASSIGN_OR_RETURN(std::vector<SideRecord> records, ListSideRecords(prefix));
  rocksdb::WriteBatch wb;
  for (const SideRecord& r : records) {
    CAIRN_RETURN_IF_ERROR(
        FromRocks(wb.Delete(cfs_[kMeta], keys::SideRecordKey(r.name)), "delete side record"));
  }
  if (records.empty()) return 0;
  rocksdb::WriteOptions wo;
  wo.sync = true;
  CAIRN_RETURN_IF_ERROR(WriteResuming(wo, &wb, "delete side records"));
  return records.size();
}

}  // namespace cairn::internal
