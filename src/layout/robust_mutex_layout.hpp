// src/layout/robust_mutex_layout.hpp — the shared state of a RobustMutex (src/sync/).
//
// 8 bytes, 4-byte aligned, zero = unlocked and never locked (a fresh zero-filled segment holds
// valid unlocked mutexes). Field meanings, invariants and the protocol: the comment at the top
// of src/sync/robust_mutex.hpp and docs/design/robust_mutex.md.
#pragma once

#include <atomic>
#include <cstdint>

namespace shoal::layout {

struct RobustMutexWord {
  std::atomic<uint32_t> state;  // the futex word: holder pid and flag bits (robust_mutex.cpp)
  uint32_t reserved;            // 0
};
static_assert(sizeof(RobustMutexWord) == 8);
static_assert(std::atomic<uint32_t>::is_always_lock_free);

}  // namespace shoal::layout
