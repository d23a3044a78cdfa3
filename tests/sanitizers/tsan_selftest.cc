// TSan builds only: shows the build can see a race and does not see one
// where an absl::Mutex guards the access (tsan_absl_mutex.cc at work).
// Without an argument two threads increment a counter under an
// absl::Mutex: no report. With one they also increment an unguarded
// counter: TSan must report the race (ctest: tsan.detects_a_race, WILL_FAIL).
#include <thread>

#include "absl/synchronization/mutex.h"

namespace {
absl::Mutex mu;
int guarded = 0;
int unguarded = 0;
}  // namespace

int main(int argc, char**) {
  auto work = [&] {
    for (int i = 0; i < 1000; ++i) {
      {
        absl::MutexLock lock(&mu);
        ++guarded;
      }
      if (argc > 1) ++unguarded;
    }
  };
  std::thread a(work), b(work);
  a.join();
  b.join();
  return guarded == 2000 ? 0 : 1;
}
