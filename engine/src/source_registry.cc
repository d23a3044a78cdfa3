// The source registry (persisted in the meta family).
#include "absl/strings/str_cat.h"
#include "cairn/status.h"
#include "json_doc.h"
#include "key_codec.h"
#include "rocks_status.h"
#include "store_impl.h"

namespace cairn::internal {

absl::Status StoreImpl::ValidateSource(const SourceDefinition& s) {
  CAIRN_RETURN_IF_ERROR(CheckName("source name", s.name));
  if (std::find_if(std::begin(kFormats), std::end(kFormats),
                   [&](const char* f) { return s.format == f; }) == std::end(kFormats)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "source '", s.name, "': unknown format '", s.format,
        "' (debezium, goldengate, infosphere, sse-feed, datapoints, bitbroker, canonical)"));
  }
  for (const auto& [collection, fields] : s.key_fields) {
    if (collection.empty() || fields.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "source '", s.name, "': key_fields needs a collection and at least one field"));
    }
  }
  for (const auto& [collection, schema] : s.json_schemas) {
    auto doc = json::Parse(schema);
    if (!doc.ok() || !doc->IsObject()) {
      return absl::InvalidArgumentError(absl::StrCat("source '", s.name, "': json_schemas[",
                                                     collection, "] is not a JSON object"));
    }
  }
  return absl::OkStatus();
}

absl::Status StoreImpl::PutSource(const SourceDefinition& source) {
  CAIRN_RETURN_IF_ERROR(ValidateSource(source));
  rocksdb::WriteOptions wo;
  wo.sync = true;
  return FromRocks(
      db_->Put(wo, cfs_[kMeta], keys::RegistryKey(source.name), records::Encode(source)),
      "put source");
}

absl::StatusOr<SourceDefinition> StoreImpl::GetSource(std::string_view name) {
  std::string v;
  rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), cfs_[kMeta], keys::RegistryKey(name), &v);
  if (s.IsNotFound()) {
    return absl::NotFoundError(
        absl::StrCat("source '", AbslView(Excerpt(name)), "' is not registered"));
  }
  CAIRN_RETURN_IF_ERROR(FromRocks(s, "get source"));
  return records::DecodeSource(v);
}

absl::StatusOr<std::vector<SourceDefinition>> StoreImpl::ListSources() {
  std::vector<SourceDefinition> out;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), cfs_[kMeta]));
  for (it->Seek(kMetaRegistryPrefix); it->Valid() && it->key().starts_with(kMetaRegistryPrefix);
       it->Next()) {
    CAIRN_ASSIGN_OR_RETURN(SourceDefinition d, records::DecodeSource(it->value().ToStringView()));
    out.push_back(std::move(d));
  }
  CAIRN_RETURN_IF_ERROR(FromRocks(it->status(), "list sources"));
  return out;
}

absl::Status StoreImpl::RemoveSource(std::string_view name) {
  CAIRN_RETURN_IF_ERROR(GetSource(name).status());
  rocksdb::WriteOptions wo;
  wo.sync = true;
  return FromRocks(db_->Delete(wo, cfs_[kMeta], keys::RegistryKey(name)), "remove source");
}

}  // namespace cairn::internal
