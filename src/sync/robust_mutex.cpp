// src/sync/robust_mutex.cpp — the lock protocol of robust_mutex.hpp on one futex word.
// Design note: docs/design/robust_mutex.md.
#include "sync/robust_mutex.hpp"

#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <string>

#include "platform/platform.hpp"
#include "platform/spin.hpp"

namespace shoal::sync {
namespace {

using layout::kRobustPidMask;
using layout::kRobustReservedBits;
using layout::kRobustWaiters;

// The first futex slice after which a waiter checks whether the holder lives, and the longest
// one it doubles to: the worst extra latency after a holder's death (or a waker that died
// between its unlock and its wake) is about one long slice.
constexpr uint64_t kFirstSliceNs = 10'000'000;   // 10 ms
constexpr uint64_t kMaxSliceNs = 200'000'000;    // 200 ms

void reset_pid_in_child() noexcept {
  detail::g_self_pid.store(0, std::memory_order_relaxed);
  detail::g_self_tag.store(0, std::memory_order_relaxed);
}

// Registered while the library's static objects are constructed, before main() and so before
// any fork that could matter; a fork that ran earlier (another static constructor) leaves 0 in
// the child anyway. Async-signal-safe: one atomic store.
[[maybe_unused]] const bool g_atfork_registered =
    ::pthread_atfork(nullptr, nullptr, reset_pid_in_child) == 0;


std::string hex32(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}

std::string where(const void* word) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%p", word);
  return buf;
}

bool valid_pair(uint64_t p) noexcept {
  const uint32_t v = layout::robust_state(p);
  if ((v & kRobustReservedBits) != 0) return false;
  return v == 0 ? layout::robust_tag(p) == 0 : (v & kRobustPidMask) != 0;
}

Status corrupt(const void* word, uint64_t p) {
  return {Errc::kCorrupt,
          "robust mutex at " + where(word) + " holds state " + hex32(layout::robust_state(p)) +
              " tag " + hex32(layout::robust_tag(p)) +
              ", which no lock state uses (a holder pid in bits 0-21 and the waiters bit 31 "
              "only; the waiters bit or a tag never without a holder): the memory that holds "
              "the lock was overwritten"};
}

Status timed_out(uint32_t holder, bool self_held, uint32_t me) {
  if (self_held) {
    return {Errc::kLockTimeout,
            "the lock is held by this process (pid " + std::to_string(me) +
                ") and was not released before the deadline (the lock is not recursive)"};
  }
  return {Errc::kLockTimeout, "the lock is held by process " + std::to_string(holder) +
                                  ", which is alive, and was not released before the deadline"};
}

// Whether the holder (holder, tag) of a pair has certainly ended. The tag was written with the
// pid in one CAS, so it is that holder's: a live process with that pid but another start time
// got the pid after the holder died. A holder with this process's pid but not its tag is dead
// for certain (two live processes never share a pid), whatever /proc says.
bool holder_gone(uint32_t holder, uint32_t tag, uint32_t me, uint32_t my_tag) noexcept {
  if (holder == me) return tag != my_tag;
  if (platform::process_exited(static_cast<pid_t>(holder))) return true;
  if (tag == 0) return false;  // the holder could not read its start time: the pid alone
  const uint64_t start = platform::process_start_time(static_cast<pid_t>(holder));
  if (start == 0) return false;  // /proc cannot say (or it exited just now: the next check)
  return robust_tag_of(start) != tag;
}

// Spins before the first sleep: a holder on another core usually releases within a few hundred
// nanoseconds (a counter update under the lock), and a futex sleep and wake costs two system
// calls and a context switch on each side. The budget adapts (platform::AdaptiveSpin, one per
// process for every robust mutex): up to 20 us, for holds of a few us (a dict resize, a large
// value's copy) and a holder briefly interrupted; down to 2 us (about the fixed 100 pauses this
// used to spin on x86-64) when spins keep failing, because holders hold long (a user's `with
// d.lock:` block) or are not running (more runnable processes than cores), so that a waiter
// then sleeps almost at once instead of burning its core. docs/design/robust_mutex.md, "Spinning".
constexpr uint64_t kSpinMinNs = 2'000;
constexpr uint64_t kSpinMaxNs = 20'000;
constinit platform::AdaptiveSpin g_spin(kSpinMinNs, kSpinMaxNs);

}  // namespace

uint32_t robust_tag_of(uint64_t start_time) noexcept {
  const auto t = static_cast<uint32_t>(start_time);
  return t == 0 ? 1 : t;
}

namespace detail {

// This process's pid, 0 until first asked. getpid() is a system call in glibc >= 2.25, and the
// fast path must stay one CAS. A forked child resets it (reset_pid_in_child), so that it never
// takes its parent's locks for its own; only threads exist otherwise, and they share the pid.
std::atomic<uint32_t> g_self_pid{0};
// This process's tag, 0 until first asked; kNoTag when its start time could not be read (then
// the word's tag stays 0: waiters judge by pid alone).
std::atomic<uint32_t> g_self_tag{0};

uint32_t self_tag_slow() noexcept {
  uint32_t t = g_self_tag.load(std::memory_order_relaxed);
  if (t == 0) {
    const uint32_t me = self_pid();
    const uint64_t start = platform::process_start_time(static_cast<pid_t>(me));
    t = start == 0 ? kNoTag : robust_tag_of(start);
    g_self_tag.store(t, std::memory_order_relaxed);
  }
  return t == kNoTag ? 0 : t;
}

uint32_t self_pid_slow() noexcept {
  pid_t now = ::getpid();
  // A process-local fact, not shared data: Linux never gives a pid of PID_MAX_LIMIT or more.
  SHOAL_ASSERT(now > 0 && static_cast<uint32_t>(now) <= kRobustPidMask);
  const auto p = static_cast<uint32_t>(now);
  g_self_pid.store(p, std::memory_order_relaxed);
  return p;
}

}  // namespace detail

bool process_gone(uint32_t pid, uint32_t tag) noexcept {
  if (pid == 0) return false;
  if (pid == self_pid()) return tag != self_tag();
  return holder_gone(pid, tag, 0, 0);
}

Result<Locked> RobustMutex::lock(platform::Deadline deadline) noexcept {
  return lock(deadline, false);
}

namespace {

// lock() and lock_quiet(): `quiet` leaves a timeout's message empty.
Result<Locked> lock_word(layout::RobustMutexWord* w, platform::Deadline deadline,
                         bool interruptible, bool quiet) noexcept {
  std::atomic<uint64_t>& pair = w->pair;
  const uint32_t me = self_pid();
  const uint32_t my_tag = self_tag();
  uint64_t p = 0;
  if (pair.compare_exchange_strong(p, layout::robust_pair(me, my_tag), std::memory_order_acquire,
                                   std::memory_order_relaxed)) {
    return Locked::kOk;
  }
  // The waiters bit this caller sets when it takes the lock: once it has slept, other waiters
  // may sleep too whose bit the unlock that woke it cleared, so it must set it again.
  uint32_t mine = me;
  uint64_t slice = kFirstSliceNs;
  bool check_holder = false;  // set after a slice that timed out
  platform::SpinWait spin(g_spin);
  for (;;) {
    if (!valid_pair(p)) return corrupt(&pair, p);
    const uint32_t v = layout::robust_state(p);
    if (v == 0) {
      if (pair.compare_exchange_weak(p, layout::robust_pair(mine, my_tag),
                                     std::memory_order_acquire, std::memory_order_relaxed)) {
        return Locked::kOk;
      }
      continue;  // p holds the pair that beat us
    }
    const uint32_t holder = v & kRobustPidMask;
    const uint32_t tag = layout::robust_tag(p);
    const bool self_held = holder == me && tag == my_tag;
    const bool expired = deadline.passed();
    if ((check_holder || expired) && !self_held && holder_gone(holder, tag, me, my_tag)) {
      // One CAS from the pair we judged: of all waiters that judged it, exactly one wins; the
      // rest see the new holder and wait on. A process that has since been given the dead
      // holder's pid wrote its own tag with it, so the CAS fails rather than rob it. Always
      // with the waiters bit: the dead holder will never wake those asleep.
      if (pair.compare_exchange_strong(p, layout::robust_pair(me | kRobustWaiters, my_tag),
                                       std::memory_order_acquire, std::memory_order_relaxed)) {
        return Locked::kOwnerDied;
      }
      continue;
    }
    if (expired) {
      if (quiet) return Status{Errc::kLockTimeout, std::string()};
      return timed_out(holder, self_held, me);
    }
    check_holder = false;
    if (!spin.spun() && !self_held) {
      // Bounded by the caller's deadline too: a lock with a timeout never spins past it.
      (void)spin.spin(
          [&] {
            p = pair.load(std::memory_order_relaxed);
            return layout::robust_state(p) == 0;
          },
          deadline);
      continue;
    }
    if ((v & kRobustWaiters) == 0) {
      if (!pair.compare_exchange_weak(p, p | layout::robust_pair(kRobustWaiters, 0),
                                      std::memory_order_relaxed, std::memory_order_relaxed)) {
        continue;
      }
    }
    platform::Deadline slice_end = platform::Deadline::after_ns(slice);
    if (deadline.ns < slice_end.ns) slice_end = deadline;
    mine = me | kRobustWaiters;
    Result<platform::FutexWait> r =
        platform::futex_wait(w->futex_word(), v | kRobustWaiters, slice_end);
    if (!r.has_value()) return r.status();
    if (r.value() == platform::FutexWait::kInterrupted && interruptible) {
      return Locked::kInterrupted;
    }
    if (r.value() == platform::FutexWait::kTimedOut) {
      check_holder = true;
      slice = std::min(slice * 2, kMaxSliceNs);
    }
    spin.slept(r);  // the first sleep an unlock ended tells the budget when that came
    // kWoken, kValueChanged, kInterrupted (retried with the same deadline): read again.
    p = pair.load(std::memory_order_relaxed);
  }
}

}  // namespace

Result<Locked> RobustMutex::lock(platform::Deadline deadline, bool interruptible) noexcept {
  return lock_word(w_, deadline, interruptible, false);
}

Result<Locked> RobustMutex::lock_quiet(platform::Deadline deadline, bool interruptible) noexcept {
  return lock_word(w_, deadline, interruptible, true);
}

Result<Locked> RobustMutex::try_lock() noexcept {
  // A deadline that has passed: the loop above takes a free word, checks a live-looking holder
  // once, and otherwise returns kLockTimeout without spinning or sleeping.
  return lock(platform::Deadline{0});
}

void RobustMutex::unlock() noexcept {
  std::atomic<uint64_t>& pair = w_->pair;
  const uint64_t p = pair.load(std::memory_order_relaxed);
  if ((layout::robust_state(p) & kRobustPidMask) != self_pid() ||
      layout::robust_tag(p) != self_tag() || !valid_pair(p)) {
#ifndef NDEBUG
    // Almost always a caller that unlocks what it does not hold (a double unlock, or a child
    // unlocking its parent's lock after fork): a bug here, so debug builds stop at it.
    ::shoal::detail::assert_fail("RobustMutex::unlock by a process that does not hold the lock",
                                 __FILE__, __LINE__);
#endif
    return;  // release builds: never release another process's lock
  }
  // Only this process can clear its own pair (a waiter takes over only from a dead holder), so
  // the exchange releases our hold; it also returns any waiters bit set since the load.
  const uint64_t old = pair.exchange(0, std::memory_order_release);
  if ((layout::robust_state(old) & kRobustWaiters) != 0) {
    // A failed wake (the word unmapped under us is a caller bug; nothing else fails) leaves
    // waiters asleep on a free word until their slice ends: late, never wrong.
    (void)platform::futex_wake(w_->futex_word(), 1);
  }
}

bool RobustMutex::held_by_this_process() const noexcept {
  const uint64_t p = w_->pair.load(std::memory_order_relaxed);
  return (layout::robust_state(p) & kRobustPidMask) == self_pid() &&
         layout::robust_tag(p) == self_tag();
}

uint32_t RobustMutex::holder_pid() const noexcept {
  return layout::robust_state(w_->pair.load(std::memory_order_relaxed)) & kRobustPidMask;
}

RobustLock::RobustLock(RobustMutex m, platform::Deadline deadline) : m_(m) {
  Result<Locked> r = m_.lock(deadline);
  if (!r.has_value()) r.status().throw_if_error();
  died_ = r.value() == Locked::kOwnerDied;
}

}  // namespace shoal::sync
