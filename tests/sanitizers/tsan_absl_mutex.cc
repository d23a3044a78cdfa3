// TSan builds only (CAIRN_SANITIZE=thread): tells ThreadSanitizer what
// absl::Mutex and absl::CondVar do.
//
// Debian's abseil is built without TSan, so its Mutex synchronizes through
// atomics and futexes that TSan never sees, and every access a Mutex guards
// would be reported as a race. This file, linked whole into every binary of
// a TSan build, interposes the Mutex and CondVar entry points: each calls the
// library's own (found with dlsym(RTLD_NEXT)) between the annotations TSan
// provides for foreign mutexes (sanitizer/tsan_interface.h), as abseil does
// itself when it is built with TSan. Accesses made inside a lock operation
// (abseil evaluates waiters' conditions there) are ignored, as abseil's own
// annotations have them ignored.
#include <dlfcn.h>
#include <sanitizer/tsan_interface.h>

#include <cstdio>
#include <cstdlib>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace {

template <typename F>
F Next(const char* symbol) {
  void* p = dlsym(RTLD_NEXT, symbol);
  if (p == nullptr) {
    std::fprintf(stderr, "tsan_absl_mutex: %s not found\n", symbol);
    std::abort();
  }
  return reinterpret_cast<F>(p);
}

// Entry points call each other inside abseil (AwaitWithTimeout calls
// AwaitWithDeadline, through the interposed symbol): only the outermost
// call on a thread annotates.
thread_local int depth = 0;
struct Outer {
  const bool outer = depth++ == 0;
  ~Outer() { --depth; }
};

// Stands for "released, then acquired again" around a wait.
void Released(void* mu) {
  __tsan_mutex_pre_unlock(mu, 0);
  __tsan_mutex_post_unlock(mu, 0);
  __tsan_mutex_pre_lock(mu, 0);
}

}  // namespace

namespace absl {
ABSL_NAMESPACE_BEGIN

Mutex::~Mutex() {
  static auto real = Next<void (*)(Mutex*)>("_ZN4absl7debian35MutexD2Ev");
  Outer o;
  if (o.outer) __tsan_mutex_destroy(this, 0);
  real(this);
}

void Mutex::Lock() {
  static auto real = Next<void (*)(Mutex*)>("_ZN4absl7debian35Mutex4LockEv");
  Outer o;
  if (o.outer) __tsan_mutex_pre_lock(this, 0);
  real(this);
  if (o.outer) __tsan_mutex_post_lock(this, 0, 0);
}

bool Mutex::TryLock() {
  static auto real = Next<bool (*)(Mutex*)>("_ZN4absl7debian35Mutex7TryLockEv");
  Outer o;
  if (o.outer) __tsan_mutex_pre_lock(this, __tsan_mutex_try_lock);
  bool locked = real(this);
  if (o.outer)
    __tsan_mutex_post_lock(this, locked ? __tsan_mutex_try_lock : __tsan_mutex_try_lock_failed, 0);
  return locked;
}

void Mutex::Unlock() {
  static auto real = Next<void (*)(Mutex*)>("_ZN4absl7debian35Mutex6UnlockEv");
  Outer o;
  if (o.outer) __tsan_mutex_pre_unlock(this, 0);
  real(this);
  if (o.outer) __tsan_mutex_post_unlock(this, 0);
}

void Mutex::ReaderLock() {
  static auto real = Next<void (*)(Mutex*)>("_ZN4absl7debian35Mutex10ReaderLockEv");
  Outer o;
  if (o.outer) __tsan_mutex_pre_lock(this, __tsan_mutex_read_lock);
  real(this);
  if (o.outer) __tsan_mutex_post_lock(this, __tsan_mutex_read_lock, 0);
}

void Mutex::ReaderUnlock() {
  static auto real = Next<void (*)(Mutex*)>("_ZN4absl7debian35Mutex12ReaderUnlockEv");
  Outer o;
  if (o.outer) __tsan_mutex_pre_unlock(this, __tsan_mutex_read_lock);
  real(this);
  if (o.outer) __tsan_mutex_post_unlock(this, __tsan_mutex_read_lock);
}

void Mutex::LockWhen(const Condition& cond) {
  static auto real =
      Next<void (*)(Mutex*, const Condition&)>("_ZN4absl7debian35Mutex8LockWhenERKNS0_9ConditionE");
  Outer o;
  if (o.outer) __tsan_mutex_pre_lock(this, 0);
  real(this, cond);
  if (o.outer) __tsan_mutex_post_lock(this, 0, 0);
}

void Mutex::Await(const Condition& cond) {
  static auto real =
      Next<void (*)(Mutex*, const Condition&)>("_ZN4absl7debian35Mutex5AwaitERKNS0_9ConditionE");
  Outer o;
  if (o.outer) Released(this);
  real(this, cond);
  if (o.outer) __tsan_mutex_post_lock(this, 0, 0);
}

bool Mutex::AwaitWithTimeout(const Condition& cond, absl::Duration timeout) {
  static auto real = Next<bool (*)(Mutex*, const Condition&, absl::Duration)>(
      "_ZN4absl7debian35Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  Outer o;
  if (o.outer) Released(this);
  bool met = real(this, cond, timeout);
  if (o.outer) __tsan_mutex_post_lock(this, 0, 0);
  return met;
}

bool Mutex::AwaitWithDeadline(const Condition& cond, absl::Time deadline) {
  static auto real = Next<bool (*)(Mutex*, const Condition&, absl::Time)>(
      "_ZN4absl7debian35Mutex17AwaitWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  Outer o;
  if (o.outer) Released(this);
  bool met = real(this, cond, deadline);
  if (o.outer) __tsan_mutex_post_lock(this, 0, 0);
  return met;
}

bool Mutex::LockWhenWithTimeout(const Condition& cond, absl::Duration timeout) {
  static auto real = Next<bool (*)(Mutex*, const Condition&, absl::Duration)>(
      "_ZN4absl7debian35Mutex19LockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  Outer o;
  if (o.outer) __tsan_mutex_pre_lock(this, 0);
  bool met = real(this, cond, timeout);
  if (o.outer) __tsan_mutex_post_lock(this, 0, 0);
  return met;
}

bool Mutex::LockWhenWithDeadline(const Condition& cond, absl::Time deadline) {
  static auto real = Next<bool (*)(Mutex*, const Condition&, absl::Time)>(
      "_ZN4absl7debian35Mutex20LockWhenWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  Outer o;
  if (o.outer) __tsan_mutex_pre_lock(this, 0);
  bool met = real(this, cond, deadline);
  if (o.outer) __tsan_mutex_post_lock(this, 0, 0);
  return met;
}

bool Mutex::ReaderTryLock() {
  static auto real = Next<bool (*)(Mutex*)>("_ZN4absl7debian35Mutex13ReaderTryLockEv");
  Outer o;
  const unsigned flags = __tsan_mutex_read_lock | __tsan_mutex_try_lock;
  if (o.outer) __tsan_mutex_pre_lock(this, flags);
  bool locked = real(this);
  if (o.outer)
    __tsan_mutex_post_lock(
        this, locked ? flags : __tsan_mutex_read_lock | __tsan_mutex_try_lock_failed, 0);
  return locked;
}

void Mutex::ReaderLockWhen(const Condition& cond) {
  static auto real = Next<void (*)(Mutex*, const Condition&)>(
      "_ZN4absl7debian35Mutex14ReaderLockWhenERKNS0_9ConditionE");
  Outer o;
  if (o.outer) __tsan_mutex_pre_lock(this, __tsan_mutex_read_lock);
  real(this, cond);
  if (o.outer) __tsan_mutex_post_lock(this, __tsan_mutex_read_lock, 0);
}

void CondVar::Wait(Mutex* mu) {
  static auto real = Next<void (*)(CondVar*, Mutex*)>("_ZN4absl7debian37CondVar4WaitEPNS0_5MutexE");
  Outer o;
  if (o.outer) Released(mu);
  real(this, mu);
  if (o.outer) __tsan_mutex_post_lock(mu, 0, 0);
}

bool CondVar::WaitWithDeadline(Mutex* mu, absl::Time deadline) {
  static auto real = Next<bool (*)(CondVar*, Mutex*, absl::Time)>(
      "_ZN4absl7debian37CondVar16WaitWithDeadlineEPNS0_5MutexENS0_4TimeE");
  Outer o;
  if (o.outer) Released(mu);
  bool timed_out = real(this, mu, deadline);
  if (o.outer) __tsan_mutex_post_lock(mu, 0, 0);
  return timed_out;
}

bool CondVar::WaitWithTimeout(Mutex* mu, absl::Duration timeout) {
  static auto real = Next<bool (*)(CondVar*, Mutex*, absl::Duration)>(
      "_ZN4absl7debian37CondVar15WaitWithTimeoutEPNS0_5MutexENS0_8DurationE");
  Outer o;
  if (o.outer) Released(mu);
  bool timed_out = real(this, mu, timeout);
  if (o.outer) __tsan_mutex_post_lock(mu, 0, 0);
  return timed_out;
}

ABSL_NAMESPACE_END
}  // namespace absl
