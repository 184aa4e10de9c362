// src/sync/recursive_lock.hpp — the recursive robust lock protocol over a
// layout::RecursiveMutexState (src/layout/sync_layout.hpp) in any mapping: shoal::RecursiveMutex
// (its own sync segment) and a container's write lock (inside the container's heap) are both
// this. The holder is a thread: the word names its process (pid and tag, robust_mutex.hpp) and
// `owner_thread` the thread in it; `count` is the depth. If the holder's process dies, the next
// lock takes the word over (Locked::kOwnerDied) and starts again at depth 1 (invariant S4).
// Design note: docs/design/sync.md ("RecursiveMutex").
#pragma once

#include <pthread.h>

#include <cstdint>

#include "layout/sync_layout.hpp"
#include "sync/robust_mutex.hpp"

namespace shoal::sync {

class RecursiveLock {
 public:
  explicit RecursiveLock(layout::RecursiveMutexState* st) noexcept : st_(st) {}

  /// This thread's identity inside its process: pthread_self(), read from the thread pointer
  /// (no system call, no thread_local lookup). Distinct among the live threads of a process,
  /// which is all this lock needs: it is compared only once the word names this process.
  static uint64_t this_thread() noexcept { return static_cast<uint64_t>(::pthread_self()); }

  /// owner_thread equals this thread only if this thread wrote it while holding the word (it
  /// is cleared before every release), so the two reads need no lock.
  bool held_by_this_thread() const noexcept {
    return RobustMutex(&st_->lock.word).held_by_this_process() &&
           st_->owner_thread.load(std::memory_order_relaxed) == this_thread();
  }
  /// The depth when this thread holds it, else 0.
  uint32_t depth() const noexcept {
    return held_by_this_thread() ? st_->count.load(std::memory_order_relaxed) : 0;
  }

  /// Takes the lock: a free word in one CAS (depth 1), again by its holding thread (depth + 1),
  /// else RobustMutex::lock_quiet (another thread of this process is waited for like any
  /// holder). kOk or kOwnerDied: held, depth() says whether this call took the word (1) or
  /// re-entered; kInterrupted, kLockTimeout (empty message), kCorrupt, kInvalidArgument (depth
  /// overflow): not taken.
  Result<Locked> lock(platform::Deadline deadline, bool interruptible) noexcept {
    RobustMutex m(&st_->lock.word);
    if (m.try_lock_fast()) {
      take();
      return Locked::kOk;
    }
    if (held_by_this_thread()) {
      const uint32_t c = st_->count.load(std::memory_order_relaxed);
      if (c == UINT32_MAX) return Status{Errc::kInvalidArgument, "recursive lock: depth overflow"};
      st_->count.store(c + 1, std::memory_order_relaxed);
      return Locked::kOk;
    }
    Result<Locked> r = m.lock_quiet(deadline, interruptible);
    if (r.has_value() && r.value() != Locked::kInterrupted) take();  // overwrites a dead holder's
    return r;
  }

  /// Releases one level; the word itself at depth 1. false (nothing changed) when this thread
  /// does not hold it.
  bool unlock() noexcept {
    if (!held_by_this_thread()) return false;
    const uint32_t c = st_->count.load(std::memory_order_relaxed);
    if (c > 1) {
      st_->count.store(c - 1, std::memory_order_relaxed);
      return true;
    }
    st_->count.store(0, std::memory_order_relaxed);
    st_->owner_thread.store(0, std::memory_order_relaxed);
    RobustMutex m(&st_->lock.word);
    if (!m.unlock_fast()) m.unlock();  // waiters to wake: the full release
    return true;
  }

 private:
  void take() noexcept {
    st_->count.store(1, std::memory_order_relaxed);
    st_->owner_thread.store(this_thread(), std::memory_order_relaxed);
  }
  layout::RecursiveMutexState* st_;
};

}  // namespace shoal::sync
