// src/layout/hold_ring_layout.hpp — the hold ring: one page a process shares with its broker,
// where a fast attach records "I now hold object X (with pin P)" without a system call.
//
// Why: a fast attach (docs/design/segment.md, "Fast attach") maps the broker's memfd without
// asking the broker, but the broker must still learn that this connection holds the object, so
// that the reference dies with the connection and the handle's pin is used. A kHold message says
// so, but in a process that was asleep until the handle arrived its sendmsg is the costliest
// step of the attach (a cold system call). The ring carries the same fact, and the broker reads
// it whenever it would have read kHold next: before it serves any message from that connection, when the connection closes, before
// it expires pins, and before kList.
//
//   0          64                                                4096
//   +----------+--------------------------------------------------+
//   | header   | entries[kHoldRingCapacity], 32 bytes each         |
//   +----------+--------------------------------------------------+
//
// The client creates the ring (a memfd sealed against shrink and grow, kHoldRingBytes long) and
// passes it with its kHello; a broker that maps it answers kHelloHoldRing. Entry n (counting
// from 0 since the connection began) lives in entries[n % kHoldRingCapacity].
//
// Invariants:
//   R1  magic == kHoldRingMagic, version == kHoldRingVersion, capacity == kHoldRingCapacity,
//       entry_size == sizeof(HoldEntry): written by the client before kHello, never again.
//   R2  head is written by the client only (store-release after the entry is written); tail by
//       the broker only (store-release after it has copied the entries out).
//   R3  tail <= head <= tail + capacity. The client never overwrites an entry the broker has
//       not consumed: when the ring is full it sends kHold instead, and the broker drains the
//       ring before serving that message, so holds keep the order they were made in.
//   R4  The broker trusts nothing here: it keeps its own count of consumed entries (the shared
//       tail is only the client's view of the free space), and a head outside
//       [consumed, consumed + capacity] disconnects the client, as a malformed message does. An
//       entry is a request like kHold: an unknown object is counted as a miss, nothing more.
// Only one thread writes head: the client's, under its mutex. A forked child never writes its
// copy of the parent's ring (it drops the parent's connections, ring included, first).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

namespace shoal::layout {

inline constexpr uint32_t kHoldRingMagic = 0x52484853;  // "SHHR"
inline constexpr uint16_t kHoldRingVersion = 1;
inline constexpr size_t kHoldRingBytes = 4096;

struct HoldEntry {
  uint64_t object_hi;
  uint64_t object_lo;
  uint64_t pin;       // the handle's pin (0: none), consumed as kHold's is
  uint64_t reserved;  // 0
};
static_assert(sizeof(HoldEntry) == 32);

struct HoldRingHeader {
  uint32_t magic;       // kHoldRingMagic
  uint16_t version;     // kHoldRingVersion
  uint16_t entry_size;  // sizeof(HoldEntry)
  uint32_t capacity;    // kHoldRingCapacity
  uint32_t reserved;
  std::atomic<uint64_t> head;  // entries published by the client (R2)
  std::atomic<uint64_t> tail;  // entries consumed by the broker (R2)
  uint64_t pad[4];
};
static_assert(sizeof(HoldRingHeader) == 64);
static_assert(std::atomic<uint64_t>::is_always_lock_free, "the ring is shared between processes");

inline constexpr uint32_t kHoldRingCapacity =
    static_cast<uint32_t>((kHoldRingBytes - sizeof(HoldRingHeader)) / sizeof(HoldEntry));

inline HoldEntry* hold_entries(HoldRingHeader* h) noexcept {
  return reinterpret_cast<HoldEntry*>(reinterpret_cast<std::byte*>(h) + sizeof(HoldRingHeader));
}

/// R1, and an empty ring: what the broker requires of a ring passed with kHello.
inline bool hold_ring_fresh(const HoldRingHeader* r) noexcept {
  return r->magic == kHoldRingMagic && r->version == kHoldRingVersion &&
         r->entry_size == sizeof(HoldEntry) && r->capacity == kHoldRingCapacity &&
         r->head.load(std::memory_order_acquire) == 0 &&
         r->tail.load(std::memory_order_relaxed) == 0;
}

/// The broker's read (R3, R4): calls take(entry) for each entry published since *taken, every
/// one copied out of the ring first (the client may be writing the next ones meanwhile), then
/// sets *taken and the shared tail to head. Returns false, taking nothing, if head lies outside
/// [*taken, *taken + capacity]. Only head is read from the ring's header; tail is only written.
template <class Take>
bool drain_hold_ring(HoldRingHeader* r, uint64_t* taken, Take&& take) {
  // Acquire: pairs with the client's release store of head after it wrote the entries.
  const uint64_t head = r->head.load(std::memory_order_acquire);
  if (head == *taken) return true;
  if (head < *taken || head - *taken > kHoldRingCapacity) return false;
  const HoldEntry* entries = hold_entries(r);
  for (uint64_t n = *taken; n < head; ++n) {
    HoldEntry e;
    std::memcpy(&e, &entries[n % kHoldRingCapacity], sizeof e);
    take(e);
  }
  *taken = head;
  r->tail.store(head, std::memory_order_release);  // the client may reuse those entries now
  return true;
}

}  // namespace shoal::layout
