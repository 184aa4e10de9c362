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
// `tag`: who the holder is, beyond its pid, so that a pid reused by an unrelated process is not
// taken for the holder that died (older builds wrote 0 here, which still reads right: 0
// means "judge by pid alone"):
//   bits  0..21  the pid of the process that wrote it (kRobustPidMask)
//   bits 22..31  the low 10 bits of that process's start time (field 22 of /proc/<pid>/stat,
//                clock ticks after boot; kRobustTagStartShift)
//   0 = no tag (free, or a holder that has not written its tag yet, or whose start time could
//   not be read): waiters judge the holder by its pid alone.
// Written by the holder right after its CAS on `state`, and cleared to 0 by the holder just
// before it releases `state`; a waiter trusts a tag only when its pid equals the holder pid
// in `state` (otherwise it is a dead holder's, left for the one that took over to replace).
// See docs/design/robust_mutex.md, "Owner identity".
#pragma once

#include <atomic>
#include <cstdint>

namespace shoal::layout {

inline constexpr uint32_t kRobustPidMask = (1u << 22) - 1;
inline constexpr uint32_t kRobustWaiters = 1u << 31;
inline constexpr uint32_t kRobustReservedBits = ~(kRobustPidMask | kRobustWaiters);
inline constexpr uint32_t kRobustTagStartShift = 22;
inline constexpr uint32_t kRobustTagStartMask = (1u << 10) - 1;  // after the shift

struct RobustMutexWord {
  std::atomic<uint32_t> state;  // the futex word: holder pid and the waiters bit (above)
  std::atomic<uint32_t> tag;    // the holder's pid and start time (above), or 0
};
static_assert(sizeof(RobustMutexWord) == 8);
static_assert(std::atomic<uint32_t>::is_always_lock_free);

}  // namespace shoal::layout
