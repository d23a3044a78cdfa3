// The L1 workload both soaks run (soak.cc against a real cairnd,
// engine_soak.cc on the embedded store), and its command-line flags.
#ifndef CAIRN_TESTS_SOAK_WORKLOAD_H_
#define CAIRN_TESTS_SOAK_WORKLOAD_H_

#include <CLI/CLI.hpp>

namespace cairn::soak {

struct Workload {
  double minutes = 10;
  int rate = 2000;  // events per second
  int subscribers = 8;
  int keys = 100000;  // distinct entities
  int retention_seconds = 60;
};

// --minutes, --rate, --subscribers (at least `min_subscribers`), --keys,
// --retention-seconds.
inline void AddWorkloadFlags(CLI::App& app, Workload& w, int min_subscribers) {
  app.add_option("--minutes", w.minutes, "how long")->check(CLI::PositiveNumber);
  app.add_option("--rate", w.rate, "events per second")->check(CLI::Range(100, 100000));
  app.add_option("--subscribers", w.subscribers)->check(CLI::Range(min_subscribers, 64));
  app.add_option("--keys", w.keys, "distinct entities")->check(CLI::PositiveNumber);
  app.add_option("--retention-seconds", w.retention_seconds)->check(CLI::PositiveNumber);
}

}  // namespace cairn::soak

#endif  // CAIRN_TESTS_SOAK_WORKLOAD_H_
