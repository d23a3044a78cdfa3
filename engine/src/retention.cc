// Retention: the compaction filter of every family and the horizon that
// drives it.
#include "retention.h"

#include <algorithm>
#include <optional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "cairn/status.h"
#include "crash_point.h"
#include "key_codec.h"
#include "records.h"
#include "rocks_status.h"
#include "store_impl.h"

namespace cairn::internal {
namespace {

// The record before this one in a compaction's key order, for the families
// keyed newest first (history, entity_seq): when it is of the same entity, it
// is a later version or entry than this one -- the record's successor, or
// one after it when the successor is in files this compaction does not
// read. Either bounds the successor from above, which is all retention
// needs: a record whose bound is older than the window has a successor
// older than the window too.
class Successor {
 public:
  // Records `key` (with its entity prefix `n` bytes long) and returns the
  // suffix of the record before it when that one is of the same entity.
  std::optional<std::string> Advance(std::string_view key, size_t n) {
    std::optional<std::string> out;
    if (n > 0 && n <= key.size()) {
      // Entity prefixes are prefix-free: sharing the first n bytes is being
      // of the same entity.
      if (have_ && last_.size() > n && key.compare(0, n, last_, 0, n) == 0 &&
          std::string_view(last_) != key) {
        out = last_.substr(n);
      }
      last_.assign(key);
      have_ = true;
    }
    return out;
  }

 private:
  bool have_ = false;
  std::string last_;
};

class RetentionFilter : public rocksdb::CompactionFilter {
 public:
  RetentionFilter(Cf cf, const Horizon* h) : cf_(cf), horizon_(h) {}
  bool Filter(int, const rocksdb::Slice& key, const rocksdb::Slice& value, std::string*,
              bool*) const override {
    bool drop = Expired(key, value);
    if (drop) CrashPoint("retention.purge");
    return drop;
  }
  const char* Name() const override { return "cairn.RetentionFilter"; }

 private:
  // Whether retention removes the record (DESIGN §5).
  bool Expired(const rocksdb::Slice& key, const rocksdb::Slice& value) const {
    std::string_view k(key.data(), key.size());
    std::string_view v(value.data(), value.size());
    uint64_t oldest_seq = horizon_->oldest_seq.load(std::memory_order_relaxed);
    uint64_t oldest_ts = horizon_->oldest_timestamp.load(std::memory_order_relaxed);
    switch (cf_) {
      case kLog: {
        std::string source;
        uint64_t ts;
        return keys::ConsumeEscaped(&k, &source) && keys::ConsumeU64(&k, &ts) && ts < oldest_ts;
      }
      case kChanges: {
        uint64_t seq;
        return keys::ConsumeU64(&k, &seq) && seq < oldest_seq;
      }
      case kHistory: {
        // Keep a version while a point inside the window can still see it:
        // its successor must itself be older than the window. The successor
        // is the record met just before (keys are newest first), or the
        // version's own link: a tombstone's, a late version's, or one
        // written before format 5.
        size_t n = keys::EntityPrefixLength(k);
        std::optional<std::string> later = successor_.Advance(k, n);
        auto next = records::PeekVersionNext(v);
        if (!next || n == 0) return false;
        if (*next != records::kNone) return *next < oldest_ts;
        uint64_t ts;
        if (later) return keys::HistorySuffixTimestamp(*later, &ts) && ts < oldest_ts;
        // The newest version as far as this compaction sees: removable only
        // as an expired tombstone. (One that has a successor has its link,
        // perhaps not merged yet: a link outliving its tombstone merges into
        // a stub, NewLinkMergeOperator.)
        auto ver = records::DecodeVersion(v);
        return ver.ok() && !ver->after && keys::HistorySuffixTimestamp(k.substr(n), &ts) &&
               ts < oldest_ts;
      }
      case kEntitySeq: {
        size_t n = keys::EntityPrefixLength(k);
        std::optional<std::string> later = successor_.Advance(k, n);
        auto superseded = records::PeekEntitySeqSuperseded(v);
        if (!superseded || n == 0) return false;
        if (*superseded != records::kNone) return *superseded <= oldest_seq;
        uint64_t seq;
        if (later) return keys::ParseEntitySeqSuffix(*later, &seq) && seq <= oldest_seq;
        auto e = records::DecodeEntitySeq(v);
        return e.ok() && e->deleted() && keys::ParseEntitySeqSuffix(k.substr(n), &seq) &&
               seq < oldest_seq && e->position.timestamp < oldest_ts;
      }
      case kState: {
        // Tombstones leave once the delete is older than the window on both
        // axes; live state is never removed.
        auto s = records::DecodeState(v);
        return s.ok() && !s->doc && s->seq < oldest_seq && s->position.timestamp < oldest_ts;
      }
      default:
        return false;
    }
  }

  Cf cf_;
  const Horizon* horizon_;
  // Only the families keyed newest first use it; a filter made per
  // compaction (RetentionFilterFactory) sees that compaction's keys in order.
  mutable Successor successor_;
};

// One filter per compaction (and per subcompaction), each run by one thread
// over its keys in order: what Successor needs.
class RetentionFilterFactory : public rocksdb::CompactionFilterFactory {
 public:
  RetentionFilterFactory(Cf cf, const Horizon* h) : cf_(cf), horizon_(h) {}
  std::unique_ptr<rocksdb::CompactionFilter> CreateCompactionFilter(
      const rocksdb::CompactionFilter::Context&) override {
    return std::make_unique<RetentionFilter>(cf_, horizon_);
  }
  const char* Name() const override { return "cairn.RetentionFilterFactory"; }

 private:
  Cf cf_;
  const Horizon* horizon_;
};

class LinkMergeOperator : public rocksdb::MergeOperator {
 public:
  explicit LinkMergeOperator(Cf cf) : cf_(cf) {}

  bool FullMergeV2(const MergeOperationInput& in, MergeOperationOutput* out) const override {
    std::string_view last = in.operand_list.back().ToStringView();
    uint64_t link = 0;
    if (!keys::ConsumeU64(&last, &link) || !last.empty()) return false;
    if (in.existing_value == nullptr) {
      out->new_value =
          cf_ == kHistory
              ? records::Encode(records::VersionValue{.op = Op::kDelete, .next_timestamp = link})
              : records::Encode(records::EntitySeqValue{.superseded_seq = link});
      return true;
    }
    std::string_view base = in.existing_value->ToStringView();
    auto merged = cf_ == kHistory ? records::SetVersionNext(base, link)
                                  : records::SetEntitySeqSuperseded(base, link);
    if (!merged.ok()) return false;  // a corrupt record: the read fails, never guesses
    out->new_value = *std::move(merged);
    return true;
  }

  bool PartialMerge(const rocksdb::Slice&, const rocksdb::Slice&, const rocksdb::Slice& right,
                    std::string* new_value, rocksdb::Logger*) const override {
    new_value->assign(right.data(), right.size());  // the newest link wins
    return true;
  }

  const char* Name() const override {
    return cf_ == kHistory ? "cairn.HistoryNextLink" : "cairn.EntitySeqSupersededLink";
  }

 private:
  Cf cf_;
};

}  // namespace

std::shared_ptr<rocksdb::MergeOperator> NewLinkMergeOperator(Cf cf) {
  return std::make_shared<LinkMergeOperator>(cf);
}

std::shared_ptr<rocksdb::MergeOperator> MergeOperatorOf(std::string_view cf_name) {
  for (Cf cf : {kHistory, kEntitySeq}) {
    if (cf_name == CfName(cf)) return NewLinkMergeOperator(cf);
  }
  if (cf_name == kLegacyHistory) return NewLinkMergeOperator(kHistory);
  if (cf_name == kLegacyEntitySeq) return NewLinkMergeOperator(kEntitySeq);
  return nullptr;
}

std::string LinkOperand(uint64_t link) {
  std::string out;
  keys::AppendU64(link, &out);
  return out;
}

absl::Status OlderThanRetention(std::string_view what, RetentionAxis axis, uint64_t oldest) {
  return absl::OutOfRangeError(
      absl::StrCat(AbslView(what), " is older than the retention window; oldest available ",
                   axis == RetentionAxis::kSeq ? "seq" : "timestamp", " is ", oldest));
}

std::unique_ptr<rocksdb::CompactionFilter> NewRetentionFilter(Cf cf, const Horizon* horizon) {
  return std::make_unique<RetentionFilter>(cf, horizon);
}

std::shared_ptr<rocksdb::CompactionFilterFactory> NewRetentionFilterFactory(
    Cf cf, const Horizon* horizon) {
  return std::make_shared<RetentionFilterFactory>(cf, horizon);
}

absl::Status StoreImpl::UpdateHorizon() {
  const RetentionOptions r = Retention();
  if (!r.max_age && !r.max_commits) return absl::OkStatus();
  uint64_t last = LastSeq();
  uint64_t oldest_seq = horizon_.oldest_seq.load();
  uint64_t oldest_ts = horizon_.oldest_timestamp.load();
  if (r.max_commits && last > *r.max_commits) {
    oldest_seq = std::max(oldest_seq, last - *r.max_commits + 1);
  }
  if (r.max_age) {
    uint64_t now = options_.now_micros();
    uint64_t age = static_cast<uint64_t>(absl::ToInt64Microseconds(*r.max_age));
    uint64_t cutoff = now > age ? now - age : 0;
    oldest_ts = std::max(oldest_ts, cutoff);
    // Seqs are committed in time order: binary search the first change
    // committed at or after the cutoff.
    uint64_t lo = std::max<uint64_t>(oldest_seq, 1), hi = last + 1;
    while (lo < hi) {
      uint64_t mid = lo + (hi - lo) / 2;
      std::string v;
      rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), cfs_[kChanges], keys::SeqKey(mid), &v);
      if (s.IsNotFound()) {
        lo = mid + 1;  // already removed: older than any earlier cutoff
        continue;
      }
      CAIRN_RETURN_IF_ERROR(FromRocks(s, "retention search"));
      CAIRN_ASSIGN_OR_RETURN(records::ChangeValue c, records::DecodeChange(v));
      if (c.commit_micros < cutoff) {
        lo = mid + 1;
      } else {
        hi = mid;
      }
    }
    oldest_seq = std::max(oldest_seq, lo);
  }
  std::string v;
  keys::AppendU64(oldest_seq, &v);
  keys::AppendU64(oldest_ts, &v);
  // Persist before compaction may act on it, so a restart never answers a
  // point whose data is already gone.
  CAIRN_RETURN_IF_ERROR(
      FromRocks(db_->Put(rocksdb::WriteOptions(), cfs_[kMeta], kMetaHorizon, v), "put horizon"));
  CrashPoint("retention.after_horizon");
  horizon_.oldest_seq.store(oldest_seq);
  horizon_.oldest_timestamp.store(oldest_ts);
  return absl::OkStatus();
}

void StoreImpl::RetentionLoop() {
  absl::MutexLock l(&retention_mu_);
  absl::Time next_horizon = absl::Now() + options_.retention_interval;
  // With a background error pending (BackgroundErrors, which wakes this
  // thread): a resume a second later, and every second until one works.
  std::optional<absl::Time> next_resume;
  while (!stopping_) {
    if (bg_errors_->pending() && !next_resume) next_resume = absl::Now() + absl::Seconds(1);
    retention_cv_.WaitWithDeadline(
        &retention_mu_, next_resume ? std::min(next_horizon, *next_resume) : next_horizon);
    if (stopping_) break;
    retention_mu_.Unlock();
    if (next_resume && absl::Now() >= *next_resume) {
      if (bg_errors_->pending()) Resume();
      next_resume.reset();
    }
    if (absl::Now() >= next_horizon) {
      UpdateHorizon().IgnoreError();  // retried next interval
      next_horizon = absl::Now() + options_.retention_interval;
    }
    retention_mu_.Lock();
  }
}

absl::Status StoreImpl::CompactNow() {
  CAIRN_RETURN_IF_ERROR(UpdateHorizon());
  rocksdb::CompactRangeOptions cro;
  cro.bottommost_level_compaction = rocksdb::BottommostLevelCompaction::kForce;
  for (size_t cf = 0; cf < kNumCfs; ++cf) {
    CAIRN_RETURN_IF_ERROR(FromRocks(db_->CompactRange(cro, cfs_[cf], nullptr, nullptr), "compact"));
  }
  return absl::OkStatus();
}

absl::Status StoreImpl::SetRetention(const RetentionOptions& retention) {
  if (retention.max_age && *retention.max_age <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("retention max_age must be positive");
  }
  if (retention.max_commits && *retention.max_commits == 0) {
    return absl::InvalidArgumentError("retention max_commits must be positive");
  }
  std::string v;
  keys::AppendU64(retention.max_age ? absl::ToInt64Microseconds(*retention.max_age) : 0, &v);
  keys::AppendU64(retention.max_commits.value_or(0), &v);
  rocksdb::WriteOptions wo;
  wo.sync = true;
  CAIRN_RETURN_IF_ERROR(FromRocks(db_->Put(wo, cfs_[kMeta], kMetaRetention, v), "put retention"));
  absl::MutexLock l(&retention_opts_mu_);
  options_.retention = retention;
  return absl::OkStatus();
}

RetentionOptions StoreImpl::Retention() {
  absl::MutexLock l(&retention_opts_mu_);
  return options_.retention;
}

}  // namespace cairn::internal
