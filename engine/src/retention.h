// Retention: the horizon (oldest answerable seq and timestamp), shared with
// the compaction filters that drop what fell out of it, and the merge
// operators that write the links those filters read. StoreImpl's
// UpdateHorizon, RetentionLoop, CompactNow, SetRetention and Retention are
// in retention.cc.
#ifndef CAIRN_ENGINE_RETENTION_H_
#define CAIRN_ENGINE_RETENTION_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string_view>

#include "absl/status/status.h"
#include "config.h"
#include "rocksdb/compaction_filter.h"
#include "rocksdb/merge_operator.h"

namespace cairn::internal {

// Retention horizon shared with the compaction filters.
struct Horizon {
  std::atomic<uint64_t> oldest_seq{0};        // seqs >= this are answerable
  std::atomic<uint64_t> oldest_timestamp{0};  // positions with ts >= this are
};

// The compaction filter of family `cf`: drops the records of that family
// that no answerable point can see any more (the rule per family is in
// retention.cc). Reads `horizon` on every call; it must outlive the filter.
// History and entity_seq are keyed newest first, and their filter carries
// the key before from one call to the next (a record's successor): one
// filter per compaction, from this factory.
std::unique_ptr<rocksdb::CompactionFilter> NewRetentionFilter(Cf cf, const Horizon* horizon);
std::shared_ptr<rocksdb::CompactionFilterFactory> NewRetentionFilterFactory(Cf cf,
                                                                            const Horizon* horizon);

// The merge operator of the history family (`cf` kHistory) or of entity_seq
// (kEntitySeq). A retention link -- a version's next_timestamp, an entry's
// superseded_seq -- is written, since format 5 only into a tombstone (the
// newest version or entry of a deleted entity, which retention removes when
// it sees no successor), when the successor arrives as a merge operand
// (LinkOperand: the u64, big-endian) instead of rewriting the whole record;
// the newest operand wins, and the merge sets the field in place
// (records::SetVersionNext / SetEntitySeqSuperseded). An operand whose record
// retention dropped in the meantime (an expired tombstone, the only record a
// link can outlive) merges into a tombstone stub at the same key: a delete
// version (seq 0), or an entry of a deleted entity, with the link set.
std::shared_ptr<rocksdb::MergeOperator> NewLinkMergeOperator(Cf cf);
std::string LinkOperand(uint64_t link);
// The merge operator of the family named `cf_name` (CfName, or a format-4
// family kLegacyHistory / kLegacyEntitySeq), or null: for tests and tools
// that open a store's RocksDB directly.
std::shared_ptr<rocksdb::MergeOperator> MergeOperatorOf(std::string_view cf_name);

// OUT_OF_RANGE for a request point the retention window no longer covers:
// "<what> is older than the retention window; oldest available seq is N"
// (or "timestamp is N"). `what` names the point, e.g. "from_seq 3".
enum class RetentionAxis { kSeq, kTimestamp };
absl::Status OlderThanRetention(std::string_view what, RetentionAxis axis, uint64_t oldest);

}  // namespace cairn::internal

#endif  // CAIRN_ENGINE_RETENTION_H_
