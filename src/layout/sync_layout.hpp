// src/layout/sync_layout.hpp — the shared state of the synchronisation objects of
// include/shoal/sync.hpp (Mutex, RecursiveMutex, Semaphore, Event, Condition, Barrier,
// SharedValue). Design note: docs/design/sync.md.
//
// Each object is one segment of kind `sync` (ObjectKind::kSync) of kSyncSegmentBytes data
// bytes: a 64-byte SyncHeader, then at offset kSyncBodyOffset the state of its type. A fresh
// zero-filled body is a valid initial state for every type except the fields the creator
// writes (listed per type) before it makes any handle, so before any other process can attach.
//
//   data + 0        data + 64
//   +---------------+------------------------------------------------------+
//   | SyncHeader    | MutexState | RecursiveMutexState | SemaphoreState |...|
//   +---------------+------------------------------------------------------+
//
// Invariants (H: checked on attach by parse_sync_header, on a local copy; S: kept by the
// protocol, see the design note):
//   H1  magic == kSyncMagic, version == kSyncVersion (else kIncompatible), reserved fields 0
//   H2  type is one of SyncType; the segment holds at least kSyncSegmentBytes
//   H3  semaphore: initial <= kSemaphoreMax, flags only kSemBounded | kSemTracked, bounded
//       implies tracked; barrier: 1 <= parties <= kBarrierSlots, timeout >= 0 (or +inf),
//       not NaN; value: itemsize in
//       {1, 2, 4, 8}, value_kind in {'i', 'u', 'f'}, floats of 4 or 8 bytes
//   S1  every lock word is a valid RobustMutexWord (robust_mutex_layout.hpp)
//   S2  tracked semaphore, at rest (table lock free): count + sum(slot units) == capacity,
//       a slot with units > 0 has a pid; bounded: capacity == initial
//   S3  event word: bit 0 the flag, bits 1..31 the number of sets (wrapping), changed only by
//       set (adds 2 and sets bit 0, one CAS) and clear (clears bit 0)
//   S4  recursive mutex: count >= 1 and owner_thread != 0 while the word is held and the
//       holder lives; both meaningless once the holder died (the next owner writes its thread
//       and count 1)
// Who writes: the creator writes the header (and the type's parameters) once, before any
// handle exists; every other field only through the protocol of its type.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "layout/robust_mutex_layout.hpp"

namespace shoal::layout {

inline constexpr uint64_t kSyncMagic = 0x0059'534C'414F'4853ULL;  // "SHOALSY\0" little-endian
inline constexpr uint32_t kSyncVersion = 2;  // 2: RobustMutexWord as one 64-bit pair
inline constexpr uint64_t kSyncHeaderSize = 64;
inline constexpr uint64_t kSyncBodyOffset = 64;
inline constexpr uint64_t kSyncSegmentBytes = 4096;

enum class SyncType : uint32_t {
  kMutex = 1,
  kRecursiveMutex = 2,
  kSemaphore = 3,
  kEvent = 4,
  kCondition = 5,
  kBarrier = 6,
  kValue = 7,
};
inline constexpr uint32_t kSyncTypeFirst = 1;
inline constexpr uint32_t kSyncTypeLast = 7;

struct SyncHeader {
  uint64_t magic;     // kSyncMagic
  uint32_t version;   // kSyncVersion
  uint32_t type;      // SyncType
  uint32_t param[4];  // per type: semaphore {initial, flags}; barrier {parties, pad, default
                      // timeout as a double in param[2..3] (+inf: none)};
                      // value {itemsize, value_kind ('i', 'u', 'f'), typecode (a char)}
  uint32_t reserved[8];  // 0
};
static_assert(sizeof(SyncHeader) == kSyncHeaderSize, "layout is ABI: bump kSyncVersion");

// ---- Mutex (and the lock of a SharedValue and a Condition) ----
struct MutexState {
  RobustMutexWord word;             // the lock (robust_mutex_layout.hpp)
  std::atomic<uint32_t> owner_died; // 1 from a takeover (kOwnerDied) until that holder unlocks
  uint32_t reserved;                // 0
};
static_assert(sizeof(MutexState) == 16);

// ---- RecursiveMutex ----
struct RecursiveMutexState {
  MutexState lock;
  std::atomic<uint64_t> owner_thread;  // the holding thread's pthread_self() in its process
  std::atomic<uint32_t> count;         // recursion depth (S4)
  uint32_t reserved;                   // 0
};
static_assert(sizeof(RecursiveMutexState) == 32);

// ---- Semaphore ----
inline constexpr uint32_t kSemBounded = 1;  // release above the initial value is an error
inline constexpr uint32_t kSemTracked = 2;  // units held per process, given back when it dies
inline constexpr uint32_t kSemaphoreMax = 0x7fff'ffff;
inline constexpr uint32_t kSemSlots = 128;

struct SemSlot {
  std::atomic<uint32_t> pid;    // the process holding `units`; 0 = free slot
  std::atomic<uint32_t> tag;    // its robust tag (pid and start time; 0: judged by pid alone)
  std::atomic<uint32_t> units;  // units it acquired and has not released
  uint32_t reserved;            // 0
};
static_assert(sizeof(SemSlot) == 16);

struct SemaphoreState {
  std::atomic<uint32_t> count;     // the futex word: units free now
  std::atomic<uint32_t> capacity;  // tracked: count + sum(units) at rest (S2)
  RobustMutexWord table_lock;      // tracked: guards count, capacity and slots
  uint32_t reserved[4];            // 0
  SemSlot slots[kSemSlots];        // tracked only
};
static_assert(sizeof(SemaphoreState) == 32 + 16 * kSemSlots);

// ---- Event ----
struct EventState {
  std::atomic<uint32_t> word;  // the futex word (S3)
  uint32_t reserved;           // 0
};

// ---- Condition ----
struct ConditionState {
  MutexState lock;              // the condition's own lock
  std::atomic<uint32_t> seq;    // the futex word: +1 per notify that found waiters
  std::atomic<uint32_t> waiters;  // hint only: processes that may sleep on seq
  uint32_t reserved[2];
};

// ---- Barrier ----
inline constexpr uint32_t kBarrierSlots = 128;
struct BarrierSlot {
  std::atomic<uint32_t> pid;  // a waiting party of the current generation; 0 = free
  std::atomic<uint32_t> tag;
};
struct BarrierState {
  RobustMutexWord lock;           // guards everything below but `gen`'s futex reads
  std::atomic<uint32_t> gen;      // futex word: bits 1.. generation, bit 0 broken
  std::atomic<uint32_t> count;    // parties waiting in the current generation
  std::atomic<uint32_t> reset_gen;  // 1 + the generation a reset() broke (0: none yet)
  uint32_t reserved[3];
  BarrierSlot slots[kBarrierSlots];
};
inline constexpr uint32_t kBarrierBroken = 1;

// ---- SharedValue ----
struct ValueState {
  MutexState lock;     // get_lock()
  alignas(8) unsigned char value[8];  // the value, native byte order, itemsize bytes used
};
static_assert(offsetof(ValueState, value) == 16);

static_assert(sizeof(SemaphoreState) <= kSyncSegmentBytes - kSyncBodyOffset);
static_assert(sizeof(BarrierState) <= kSyncSegmentBytes - kSyncBodyOffset);

}  // namespace shoal::layout
