// What the benchmarks take from the environment.
#ifndef CAIRN_BENCH_BENCH_ENV_H_
#define CAIRN_BENCH_BENCH_ENV_H_

#include <stdlib.h>

#include <cstddef>

#include "cairn/options.h"

namespace cairn::bench {

// CAIRN_BENCH_MEMORY_BUDGET_MIB: the memory budget of the stores the
// benchmarks open (Options::memory_budget; 0 turns it off), so the cost of
// the budget is measured by running one binary both ways. Unset: the
// default budget.
inline size_t MemoryBudget() {
  const char* mib = getenv("CAIRN_BENCH_MEMORY_BUDGET_MIB");
  return mib ? static_cast<size_t>(strtoull(mib, nullptr, 10)) << 20 : Options{}.memory_budget;
}

inline Options StoreOptions() { return Options{.memory_budget = MemoryBudget()}; }

}  // namespace cairn::bench

#endif  // CAIRN_BENCH_BENCH_ENV_H_
