// src/platform/futex.hpp — waits and wakes on a 32-bit word in shared memory (Linux futex).
// The building block of shoal's cross-process locks: nothing here knows about locks, owners,
// segments or sessions; it only sleeps until a word may have changed and wakes such sleepers.
// Nothing here throws. The contract for callers is docs/design/futex.md.
#pragma once

#include <atomic>
#include <cstdint>

#include "shoal/error.hpp"

namespace shoal::platform {

// The word lives in memory mapped by several processes, possibly built by different compilers
// or against another libstdc++: it must be exactly a naturally aligned uint32_t that the
// hardware changes atomically, with no lock or padding hidden inside std::atomic.
static_assert(std::atomic<uint32_t>::is_always_lock_free,
              "a futex word must be lock-free: a hidden lock would not be shared by processes");
static_assert(sizeof(std::atomic<uint32_t>) == sizeof(uint32_t),
              "a futex word is exactly 4 bytes, as the kernel reads it");
static_assert(alignof(std::atomic<uint32_t>) == alignof(uint32_t) && alignof(uint32_t) == 4,
              "a futex word is 4-byte aligned, as the kernel requires");

/// An absolute point on CLOCK_MONOTONIC, in nanoseconds since the clock's origin (boot).
/// Absolute, so a wait interrupted by a signal and retried with the same Deadline ends when it
/// was first meant to, however often it is retried. CLOCK_MONOTONIC, so setting the wall clock
/// neither shortens nor stretches a wait. (It does not advance during system suspend.)
/// `ns == kNeverNs` means no deadline; no finite deadline is kNeverNs, by construction of
/// after() and never(). A Deadline is only meaningful on the machine that made it: it is not
/// to be stored in shared memory for another boot.
struct Deadline {
  static constexpr uint64_t kNeverNs = UINT64_MAX;
  uint64_t ns = kNeverNs;

  /// A deadline that never passes: waits block until woken or interrupted.
  static constexpr Deadline never() noexcept { return Deadline{kNeverNs}; }

  /// `seconds` from now, for a timeout given in seconds (Python's float). Total on every
  /// non-NaN double and never overflows:
  ///  - +inf, and every finite value of 1.8e10 s (570 years) or more (1e300...), is never();
  ///    so is a shorter one whose end would reach the clock's 64-bit range;
  ///  - zero, negative values and -inf are a deadline that has already passed (a wait then
  ///    only checks the word, as a non-blocking try does);
  ///  - values below one nanosecond round down to now (already passed).
  /// NaN has no sensible meaning (neither "wait forever" nor "don't wait" is what a caller who
  /// computed a NaN meant), so it is kInvalidArgument, as CPython's own timeouts reject it.
  static Result<Deadline> after(double seconds) noexcept;

  /// `ns` nanoseconds from now, saturating at never().
  static Deadline after_ns(uint64_t ns) noexcept;

  bool is_never() const noexcept { return ns == kNeverNs; }
  /// True once CLOCK_MONOTONIC has reached ns. never() is never passed.
  bool passed() const noexcept;
  /// Nanoseconds left until the deadline: 0 once passed, kNeverNs for never().
  uint64_t remaining_ns() const noexcept;

  friend bool operator==(Deadline a, Deadline b) noexcept { return a.ns == b.ns; }
};

/// How a futex_wait returned. In every case but kTimedOut and kInterrupted the caller re-reads
/// the word and decides again: a futex wait promises nothing about the word's value.
enum class FutexWait : uint8_t {
  kWoken,         // the kernel returned 0: a futex_wake on this word, or a spurious wake-up
  kValueChanged,  // *word != expected when the kernel looked (EAGAIN): nothing to wait for
  kTimedOut,      // the deadline passed (ETIMEDOUT); the word may have changed meanwhile
  kInterrupted,   // a signal handler ran (EINTR); retry with the same Deadline after it
};

/// A short stable name ("woken", "value_changed", "timed_out", "interrupted") for messages.
const char* futex_wait_name(FutexWait w) noexcept;

/// Sleeps while *word == expected, until a futex_wake on the same word (from any process that
/// maps the same memory), the deadline, or a signal. The comparison and the going to sleep are
/// one atomic step in the kernel, so a waker that changes the word and then wakes can never be
/// missed: either this call sees the new value (kValueChanged) or it is asleep when the wake
/// comes (kWoken).
///
/// What must stay true:
///  - `word` is 4-byte aligned and mapped (readable) for the whole wait; a misaligned word is
///    kInvalidArgument, an unmapped one kSystem (EFAULT). Neither crashes.
///  - The futex is shared (no FUTEX_PRIVATE_FLAG): the kernel keys it by the memory object and
///    offset, so waiters and wakers in different processes, or in different mappings of one
///    memfd in the same process, meet. Wakers must use futex_wake below (also shared).
///  - The deadline is absolute CLOCK_MONOTONIC (FUTEX_WAIT_BITSET without
///    FUTEX_CLOCK_REALTIME); a passed deadline still compares the word first, so a changed word
///    gives kValueChanged, an unchanged one kTimedOut, without sleeping.
///  - EINTR is returned as kInterrupted, never retried here: the caller (Python) must run its
///    signal handlers, which may raise, before waiting again with the same Deadline.
///  - A waiter is never told that the process expected to wake it died: a wait with never()
///    on a word whose waker is gone sleeps until a signal. The lock layer waits in bounded
///    slices and checks the holder's liveness between them (docs/design/futex.md).
Result<FutexWait> futex_wait(const std::atomic<uint32_t>* word, uint32_t expected,
                             Deadline deadline) noexcept;

/// Wakes up to `count` (>= 1) waiters on `word`; returns how many the kernel woke (0 when none
/// was waiting). Change the word *before* waking (a release store or RMW), so that a waiter
/// that has not gone to sleep yet sees the new value instead of sleeping through the wake.
/// count < 1 is kInvalidArgument (the kernel would wake one for count 0). Same alignment and
/// mapping rules as futex_wait.
Result<int> futex_wake(const std::atomic<uint32_t>* word, int count) noexcept;

/// Wakes every waiter on `word` (count INT_MAX); returns how many were woken.
Result<int> futex_wake_all(const std::atomic<uint32_t>* word) noexcept;

}  // namespace shoal::platform
