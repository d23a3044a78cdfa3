// Latency histograms recorded by the write path (StoreStats::Latencies):
// lock-free, one relaxed atomic add per bucket, count and sum.
#ifndef CAIRN_ENGINE_LATENCY_H_
#define CAIRN_ENGINE_LATENCY_H_

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>

#include "cairn/stats.h"

namespace cairn::internal {

class LatencyRecorder {
 public:
  using Clock = std::chrono::steady_clock;

  void Record(Clock::time_point start) {
    auto micros = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - start);
    Record(static_cast<uint64_t>(std::max<int64_t>(0, micros.count())));
  }
  void Record(uint64_t micros) {
    const auto& bounds = LatencyHistogram::kBoundsMicros;
    size_t i = std::lower_bound(bounds.begin(), bounds.end(), micros) - bounds.begin();
    counts_[i].fetch_add(1, std::memory_order_relaxed);
    sum_.fetch_add(micros, std::memory_order_relaxed);
  }

  // A copy; a record made meanwhile may be in its bucket and not yet in
  // the sum.
  LatencyHistogram Read() const {
    LatencyHistogram h;
    for (size_t i = 0; i < counts_.size(); ++i) {
      h.counts[i] = counts_[i].load(std::memory_order_relaxed);
      h.count += h.counts[i];  // the buckets' sum: _count equals the +Inf bucket
    }
    h.sum_micros = sum_.load(std::memory_order_relaxed);
    return h;
  }

 private:
  std::array<std::atomic<uint64_t>, LatencyHistogram::kBoundsMicros.size() + 1> counts_{};
  std::atomic<uint64_t> sum_{0};
};

}  // namespace cairn::internal

#endif  // CAIRN_ENGINE_LATENCY_H_
