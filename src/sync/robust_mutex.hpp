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
// Not recursive: a thread that locks twice deadlocks until its deadline. A thread that dies
// holding the lock while its process lives is not detected (its process is alive).
#pragma once

#include <cstdint>

#include "layout/robust_mutex_layout.hpp"
#include "platform/futex.hpp"
#include "shoal/error.hpp"

namespace shoal::sync {

/// How a lock was acquired.
enum class Locked : uint8_t {
  kOk,         // the lock was free, or released by a live holder
  kOwnerDied,  // the previous holder's process died holding it: repair, then unlock
};

/// A view of a RobustMutexWord that some mapping holds; copying the view shares the lock.
class RobustMutex {
 public:
  explicit RobustMutex(layout::RobustMutexWord* w) noexcept : w_(w) {}

  /// Blocks until this process holds the lock, or the deadline passes (kLockTimeout). Signals
  /// that interrupt the wait are retried with the same deadline. A word that holds no valid
  /// state is kCorrupt, never a crash.
  Result<Locked> lock(platform::Deadline deadline = platform::Deadline::never()) noexcept;
  /// lock() with a deadline that has passed: kLockTimeout at once when held by a live process.
  Result<Locked> try_lock() noexcept;
  /// Releases the lock and wakes a waiter. Only the holder may call it.
  void unlock() noexcept;
  /// True if the word names this process as its holder (for assertions).
  bool held_by_this_process() const noexcept;

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
