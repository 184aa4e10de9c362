// src/sync/robust_mutex.hpp — a mutual-exclusion lock on one 32-bit word in shared memory that
// survives the death of the process holding it.
//
// The word (layout::RobustMutexWord, src/layout/robust_mutex_layout.hpp) names the holder's
// process, so a waiter that has slept a bounded slice without being woken checks whether that
// process still lives and, if not, takes the lock over and is told so (Locked::kOwnerDied): it
// then holds the lock and must repair whatever the lock guards before it unlocks. Nothing is
// registered with the kernel (no robust list), so nothing depends on glibc's pthread layout.
// Design note: docs/design/robust_mutex.md.
//
// The word holds the holder's pid (not a thread id): every thread of the holding process counts
// as "this process". Not recursive: lock() by the holding process waits until its deadline
// (another thread of it may unlock), and try_lock() by it is kLockTimeout at once. A thread
// that dies holding the lock while its process lives is not detected (its process is alive).
//
// Protocol in short (bits in robust_mutex_layout.hpp): the word is one 64-bit pair of the
// holder's pid (with a waiters bit: the 32-bit futex word) and its tag (the low bits of its
// start time), changed only by CAS or exchange of the whole pair, so the tag always belongs to
// the pid beside it. Lock is one CAS 0 -> (pid, tag); a contended locker spins briefly, then sets
// the waiters bit and futex-waits in slices of 10 ms doubling to 200 ms; after a slice that timed
// out, and before giving up at the deadline, it checks the holder (platform::process_exited: no
// such pid, or a zombie not yet reaped; or a live pid whose start time is not the tag: a reused
// pid) and, if dead, takes over with one CAS from the pair it judged, so exactly one waiter wins
// (kOwnerDied) and a holder that reappeared with the same pid is never robbed. unlock exchanges
// 0 and calls futex_wake only when the waiters bit was set. "This process holds it" means the
// pid and the tag are this process's: a process that was given a dead holder's pid is not it.
//
// This process's pid is cached and reset in a forked child (pthread_atfork), so a child never
// looks like the holder of its parent's locks.
#pragma once

#include <atomic>
#include <cstdint>

#include "layout/robust_mutex_layout.hpp"
#include "platform/futex.hpp"
#include "shoal/error.hpp"

namespace shoal::sync {

namespace detail {
// The caches behind self_pid() and self_tag(), 0 until first asked and reset in a forked child
// (robust_mutex.cpp). Inline readers keep the lock fast paths free of calls.
extern std::atomic<uint32_t> g_self_pid;
extern std::atomic<uint32_t> g_self_tag;  // kNoTag: the start time could not be read
inline constexpr uint32_t kNoTag = UINT32_MAX;
uint32_t self_pid_slow() noexcept;
uint32_t self_tag_slow() noexcept;
}  // namespace detail

/// This process's pid, cached (getpid() is a system call) and reset in a forked child: what a
/// lock word and a heap's pending block record as their owner.
inline uint32_t self_pid() noexcept {
  const uint32_t p = detail::g_self_pid.load(std::memory_order_relaxed);
  return p != 0 ? p : detail::self_pid_slow();
}

/// This process's owner tag (the tag half of layout::RobustMutexWord: the low 32 bits of its
/// start time), 0 when /proc cannot give its start time. Cached; reset in a forked child.
inline uint32_t self_tag() noexcept {
  const uint32_t t = detail::g_self_tag.load(std::memory_order_relaxed);
  if (t == 0) return detail::self_tag_slow();
  return t == detail::kNoTag ? 0 : t;
}
/// The tag of a process that started at `start_time` (clock ticks after boot): its low 32 bits,
/// never 0 (0 means "no tag").
uint32_t robust_tag_of(uint64_t start_time) noexcept;
/// Whether the process named by `pid` and `tag` (a self_tag() it recorded; 0: judge by pid
/// alone) has certainly ended: exited, an unreaped zombie, or its pid now held by a process
/// with another start time. false for pid 0. For tables of owners (semaphores, barriers).
bool process_gone(uint32_t pid, uint32_t tag) noexcept;

/// How a lock was acquired.
enum class Locked : uint8_t {
  kOk,           // the lock was free, or released by a live holder
  kOwnerDied,    // the previous holder's process died holding it: repair, then unlock
  kInterrupted,  // only from lock(deadline, true): a signal interrupted the wait; not held
};

/// A view of a RobustMutexWord that some mapping holds; copying the view shares the lock.
class RobustMutex {
 public:
  explicit RobustMutex(layout::RobustMutexWord* w) noexcept : w_(w) {}

  /// Blocks until this process holds the lock (kOk; kOwnerDied when it took the lock over from
  /// a holder that died), or the deadline passes (kLockTimeout, naming the holder's pid).
  /// Signals that interrupt the wait are retried with the same deadline. A word that holds no
  /// valid state is kCorrupt and left as found, never a crash. The word must stay mapped and
  /// 4-byte aligned (segments guarantee it); a futex error is returned as the wrapper gives it.
  Result<Locked> lock(platform::Deadline deadline = platform::Deadline::never()) noexcept;
  /// lock(deadline), but with `interruptible` a signal that interrupts a futex wait returns
  /// Locked::kInterrupted at once (the lock not held), so that the caller (Python) can run its
  /// signal handlers and call again with the same deadline.
  Result<Locked> lock(platform::Deadline deadline, bool interruptible) noexcept;
  /// lock() with a deadline that has passed: kLockTimeout at once when held by a live process.
  Result<Locked> try_lock() noexcept;
  /// The uncontended path alone, inline: one CAS of a free word to this process. true: held
  /// (as lock()'s kOk); false: nothing changed, call lock() (held by someone, or corrupt).
  bool try_lock_fast() noexcept {
    uint64_t free_pair = 0;
    return w_->pair.compare_exchange_strong(free_pair,
                                            layout::robust_pair(self_pid(), self_tag()),
                                            std::memory_order_acquire, std::memory_order_relaxed);
  }
  /// lock(deadline, interruptible), but a timeout is kLockTimeout with an empty message (for
  /// callers that turn it into a status anyway: no string is built on each contended try).
  Result<Locked> lock_quiet(platform::Deadline deadline, bool interruptible) noexcept;
  /// Releases the lock and wakes a waiter if one may sleep. Only the holding process may call
  /// it: when the word names another process (a caller bug, or corrupt memory), debug builds
  /// abort and release builds leave the word alone (never release someone else's lock).
  void unlock() noexcept;
  /// The uncontended release alone, inline: one CAS of this process's pair, with no waiters bit,
  /// to 0. true: released; false: nothing changed, call unlock() (waiters to wake, or not held).
  bool unlock_fast() noexcept {
    uint64_t mine = layout::robust_pair(self_pid(), self_tag());
    return w_->pair.compare_exchange_strong(mine, 0, std::memory_order_release,
                                            std::memory_order_relaxed);
  }
  /// True if the word names this process as its holder: its pid and its tag (a process given a
  /// dead holder's pid is not the holder).
  bool held_by_this_process() const noexcept;
  /// The pid the word names as holder, 0 when free (messages, tests; may be stale at once).
  uint32_t holder_pid() const noexcept;

 private:
  layout::RobustMutexWord* w_;
};

/// RAII holder: locks in the constructor (throwing LockTimeoutError or CorruptSegmentError),
/// unlocks in the destructor. owner_died() says whether the caller must repair.
class RobustLock {
 public:
  explicit RobustLock(RobustMutex m,
                      platform::Deadline deadline = platform::Deadline::never());
  ~RobustLock() { m_.unlock(); }
  RobustLock(const RobustLock&) = delete;
  RobustLock& operator=(const RobustLock&) = delete;
  bool owner_died() const noexcept { return died_; }

 private:
  RobustMutex m_;
  bool died_ = false;
};

}  // namespace shoal::sync
