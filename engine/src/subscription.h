// The store's pull subscription (Store::Subscribe): an optional snapshot,
// then the change feed after a seq, filtered.
#ifndef CAIRN_ENGINE_SUBSCRIPTION_H_
#define CAIRN_ENGINE_SUBSCRIPTION_H_

#include <memory>
#include <string>
#include <vector>

#include "cairn/store.h"

namespace cairn::internal {

class StoreImpl;

// Reads changes after `start_seq` (after `snapshot`, when given, has been
// delivered). `key_bytes` and `prefix_bytes` are the filter's keys and
// prefix in key-codec form.
std::unique_ptr<Subscription> NewStoreSubscription(StoreImpl* store, SubscribeOptions options,
                                                   std::vector<std::string> key_bytes,
                                                   std::string prefix_bytes,
                                                   std::unique_ptr<SnapshotCursor> snapshot,
                                                   uint64_t start_seq);

}  // namespace cairn::internal

#endif  // CAIRN_ENGINE_SUBSCRIPTION_H_
