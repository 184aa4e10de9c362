// src/layout/robust_mutex_layout.hpp — the shared state of a RobustMutex (src/sync/).
//
// 8 bytes, 8-byte aligned, one 64-bit atomic `pair`; zero = unlocked and never locked (a fresh
// zero-filled segment holds valid unlocked mutexes). The protocol: the comment at the top of
// src/sync/robust_mutex.hpp and docs/design/robust_mutex.md.
//
// pair bits 0..31, `state`, also the futex word (the 4 bytes that hold them: futex_word()):
//   bits  0..21  holder pid (kRobustPidMask); 0 = free. Linux never hands out a pid of
//                pid_max or more, and pid_max is at most PID_MAX_LIMIT = 2^22 on 64-bit
//                kernels (/proc/sys/kernel/pid_max), so every pid fits.
//   bits 22..30  reserved, always 0 (a word with any of them set is corrupt).
//   bit  31      kRobustWaiters: some process may be asleep on the word, so unlock wakes one.
// pair bits 32..63, `tag`: who the holder is beyond its pid, so that a pid reused by an
//   unrelated process is never taken for the holder that had it: the low 32 bits of the
//   holder's start time (field 22 of /proc/<pid>/stat, clock ticks after boot; 0 stored as 1,
//   see sync::robust_tag_of), or 0 when the holder could not read its start time (then it is
//   judged by its pid alone).
// Valid pairs: 0 (free); (pid, tag) and (pid | kRobustWaiters, tag) with pid != 0. A free word
// has tag 0. Every change of holder writes the pid and the tag together, in one CAS or exchange
// of the pair, so the tag always belongs to the pid beside it. kRobustWaiters without a holder,
// a reserved bit, or a tag beside a free state is corrupt.
// Version history: before sync layout 2 and heap layout 2 the two halves were written by two
// stores and the tag held the pid in its low 22 bits (docs/design/robust_mutex.md).
#pragma once

#include <atomic>
#include <bit>
#include <cstdint>

namespace shoal::layout {

inline constexpr uint32_t kRobustPidMask = (1u << 22) - 1;
inline constexpr uint32_t kRobustWaiters = 1u << 31;
inline constexpr uint32_t kRobustReservedBits = ~(kRobustPidMask | kRobustWaiters);

inline constexpr uint64_t robust_pair(uint32_t state, uint32_t tag) noexcept {
  return uint64_t{state} | (uint64_t{tag} << 32);
}
inline constexpr uint32_t robust_state(uint64_t pair) noexcept {
  return static_cast<uint32_t>(pair);
}
inline constexpr uint32_t robust_tag(uint64_t pair) noexcept {
  return static_cast<uint32_t>(pair >> 32);
}

struct alignas(8) RobustMutexWord {
  std::atomic<uint64_t> pair;  // state (low half) and tag (high half), above

  uint32_t state() const noexcept { return robust_state(pair.load(std::memory_order_acquire)); }
  uint32_t tag() const noexcept { return robust_tag(pair.load(std::memory_order_acquire)); }
  /// Tests, fuzzers and tools only (the protocol changes the pair by CAS).
  void store(uint32_t state, uint32_t tag = 0) noexcept {
    pair.store(robust_pair(state, tag), std::memory_order_release);
  }
  /// The 32-bit futex word: the 4 bytes of the pair that hold `state`. Only the kernel reads
  /// through it (futex_wait compares it, futex_wake names it); C++ code reads the pair.
  std::atomic<uint32_t>* futex_word() noexcept {
    constexpr int kOffset = std::endian::native == std::endian::little ? 0 : 4;
    return reinterpret_cast<std::atomic<uint32_t>*>(reinterpret_cast<char*>(&pair) + kOffset);
  }
};
static_assert(sizeof(RobustMutexWord) == 8 && alignof(RobustMutexWord) == 8);
static_assert(std::atomic<uint64_t>::is_always_lock_free);

}  // namespace shoal::layout
