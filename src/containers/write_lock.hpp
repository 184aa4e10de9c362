// src/containers/write_lock.hpp — taking a container's write lock, shared by shoal::Dict and
// shoal::List: the robust recursive lock in the container's header, and, when this thread
// enters it first, the repair of a dead (or failed) writer's operation; and the release that
// refuses a thread that does not hold it.
#pragma once

#include <string>

#include "shoal/error.hpp"
#include "shoal/heap.hpp"
#include "shoal/sync.hpp"
#include "sync/recursive_lock.hpp"

namespace shoal::containers {

/// Takes the lock at `state` (Dict::lock / List::lock). On the first entry of this thread it
/// runs `recover()` (true when it completed or rolled back an operation), then, when the
/// previous holder died, reclaims the dead writer's pending blocks that no operation kept:
/// after the recovery committed the ones it keeps, and under the lock, so nothing allocates
/// meanwhile. A repair that throws releases the lock again.
template <class Recover>
SyncStatus lock_and_repair(layout::RecursiveMutexState* state, Heap& heap, Deadline deadline,
                           bool interruptible, Recover&& recover) {
  sync::RecursiveLock lk(state);
  Result<sync::Locked> r = lk.lock(platform::Deadline{deadline.ns}, interruptible);
  if (!r.has_value()) {
    if (r.status().code() == Errc::kLockTimeout) return SyncStatus::kTimeout;
    r.status().throw_if_error();
  }
  if (r.value() == sync::Locked::kInterrupted) return SyncStatus::kInterrupted;
  if (lk.depth() > 1) return SyncStatus::kOk;  // re-entered: as this thread left it
  bool repaired = false;
  try {
    repaired = recover();
    if (r.value() == sync::Locked::kOwnerDied) (void)heap.check();
  } catch (...) {
    (void)lk.unlock();
    throw;
  }
  return r.value() == sync::Locked::kOwnerDied || repaired ? SyncStatus::kOwnerDied
                                                            : SyncStatus::kOk;
}

/// Releases the lock at `state` once: InvalidArgumentError naming `what` (the method, e.g.
/// "Dict::unlock") and `who` when the calling thread does not hold it.
inline void unlock_held(layout::RecursiveMutexState* state, const char* what, const char* who) {
  if (!sync::RecursiveLock(state).unlock()) {
    throw_error(Errc::kInvalidArgument, std::string(what) + ": this thread does not hold the " +
                                            who + "'s lock");
  }
}

}  // namespace shoal::containers
