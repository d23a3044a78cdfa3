// Named subscription checkpoints (persisted in the meta family).
#include "absl/strings/str_cat.h"
#include "cairn/status.h"
#include "crash_point.h"
#include "key_codec.h"
#include "rocks_status.h"
#include "store_impl.h"

namespace cairn::internal {

// A checkpoint's value: the seq (8 bytes, big-endian), then its scope: the
// number of collections (8 bytes) and each as (length, bytes), 8-byte
// lengths. A value of the seq alone (written before scopes existed) has the
// every-collection scope.
namespace {

using keys::CheckpointKey;

std::string EncodeCheckpoint(const Store::CheckpointInfo& c) {
  std::string v;
  keys::AppendU64(c.seq, &v);
  keys::AppendU64(c.collections.size(), &v);
  for (const std::string& name : c.collections) {
    keys::AppendU64(name.size(), &v);
    v += name;
  }
  return v;
}

absl::StatusOr<Store::CheckpointInfo> DecodeCheckpoint(std::string_view in) {
  Store::CheckpointInfo c;
  uint64_t n = 0;
  if (!keys::ConsumeU64(&in, &c.seq)) return absl::DataLossError("malformed checkpoint");
  if (in.empty()) return c;
  if (!keys::ConsumeU64(&in, &n) || n > in.size()) {
    return absl::DataLossError("malformed checkpoint scope");
  }
  for (uint64_t i = 0; i < n; ++i) {
    uint64_t len = 0;
    if (!keys::ConsumeU64(&in, &len) || len > in.size()) {
      return absl::DataLossError("malformed checkpoint scope");
    }
    c.collections.emplace_back(in.substr(0, len));
    in.remove_prefix(len);
  }
  return c;
}

}  // namespace

absl::Status StoreImpl::PutCheckpoint(
    std::string_view name, uint64_t seq, const std::vector<std::string>& collections,
    const std::function<absl::Status(const CheckpointInfo&)>& may_move) {
  CAIRN_RETURN_IF_ERROR(CheckName("checkpoint name", name));
  for (const std::string& c : collections) CAIRN_RETURN_IF_ERROR(CheckName("collection", c));
  if (seq > LastSeq()) {
    return absl::InvalidArgumentError(
        absl::StrCat("checkpoint seq ", seq, " is beyond the last committed seq ", LastSeq()));
  }
  // One writer at a time: the ownership check and the write are one step.
  absl::MutexLock l(&checkpoint_mu_);
  CheckpointInfo c{.seq = seq};
  auto existing = GetCheckpointInfo(name);
  if (existing.ok()) {
    if (may_move) CAIRN_RETURN_IF_ERROR(may_move(*existing));
    c.collections = std::move(existing->collections);  // moving keeps the scope
  } else if (absl::IsNotFound(existing.status())) {
    c.collections = collections;  // created for this scope, kept sorted and unique
    std::sort(c.collections.begin(), c.collections.end());
    c.collections.erase(std::unique(c.collections.begin(), c.collections.end()),
                        c.collections.end());
  } else {
    return existing.status();
  }
  rocksdb::WriteOptions wo;
  wo.sync = true;
  CrashPoint("checkpoint.before_write");
  CAIRN_RETURN_IF_ERROR(FromRocks(
      db_->Put(wo, cfs_[kMeta], CheckpointKey(name), EncodeCheckpoint(c)), "put checkpoint"));
  CrashPoint("checkpoint.after_write");
  return absl::OkStatus();
}

absl::StatusOr<Store::CheckpointInfo> StoreImpl::GetCheckpointInfo(std::string_view name) {
  std::string v;
  rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), cfs_[kMeta], CheckpointKey(name), &v);
  if (s.IsNotFound()) {
    return absl::NotFoundError(absl::StrCat("no checkpoint named '", AbslView(Excerpt(name)), "'"));
  }
  CAIRN_RETURN_IF_ERROR(FromRocks(s, "get checkpoint"));
  return DecodeCheckpoint(v);
}

absl::StatusOr<std::map<std::string, Store::CheckpointInfo>> StoreImpl::ListCheckpointInfos() {
  std::map<std::string, CheckpointInfo> out;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), cfs_[kMeta]));
  for (it->Seek(kMetaCheckpointPrefix); it->Valid() && it->key().starts_with(kMetaCheckpointPrefix);
       it->Next()) {
    CAIRN_ASSIGN_OR_RETURN(CheckpointInfo c, DecodeCheckpoint(it->value().ToStringView()));
    out[std::string(keys::MetaName(it->key().ToStringView(), kMetaCheckpointPrefix))] =
        std::move(c);
  }
  CAIRN_RETURN_IF_ERROR(FromRocks(it->status(), "list checkpoints"));
  return out;
}

absl::Status StoreImpl::DeleteCheckpoint(std::string_view name) {
  absl::MutexLock l(&checkpoint_mu_);
  CAIRN_RETURN_IF_ERROR(GetCheckpointInfo(name).status());
  rocksdb::WriteOptions wo;
  wo.sync = true;
  return FromRocks(db_->Delete(wo, cfs_[kMeta], CheckpointKey(name)), "delete checkpoint");
}

}  // namespace cairn::internal
