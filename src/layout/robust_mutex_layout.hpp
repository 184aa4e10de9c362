// src/layout/robust_mutex_layout.hpp — the shared state of a RobustMutex (src/sync/).
//
// 8 bytes, 4-byte aligned, zero = unlocked and never locked (a fresh zero-filled segment holds
// valid unlocked mutexes). The protocol: the comment at the top of src/sync/robust_mutex.hpp
// and docs/design/robust_mutex.md.
//
// `state`, the futex word (native byte order):
//   bits  0..21  holder pid (kRobustPidMask); 0 = free. Linux never hands out a pid of
//                pid_max or more, and pid_max is at most PID_MAX_LIMIT = 2^22 on 64-bit
//                kernels (/proc/sys/kernel/pid_max), so every pid fits.
//   bits 22..30  reserved, always 0 (a word with any of them set is corrupt).
//   bit  31      kRobustWaiters: some process may be asleep on the word, so unlock wakes one.
// Valid states: 0 (free), pid (held, nobody waits), pid | kRobustWaiters (held, may have
// waiters), with pid != 0. kRobustWaiters alone, or any reserved bit, is corrupt.
// `reserved`: written 0 and never read by this version (room for a holder generation that
// would close the pid-reuse window; see the design note's open issues).
#pragma once

#include <atomic>
#include <cstdint>

namespace shoal::layout {

inline constexpr uint32_t kRobustPidMask = (1u << 22) - 1;
inline constexpr uint32_t kRobustWaiters = 1u << 31;
inline constexpr uint32_t kRobustReservedBits = ~(kRobustPidMask | kRobustWaiters);

struct RobustMutexWord {
  std::atomic<uint32_t> state;  // the futex word: holder pid and the waiters bit (above)
  uint32_t reserved;            // 0
};
static_assert(sizeof(RobustMutexWord) == 8);
static_assert(std::atomic<uint32_t>::is_always_lock_free);

}  // namespace shoal::layout
