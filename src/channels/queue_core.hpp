// src/channels/queue_core.hpp — the queue's decoder and ring arithmetic, on plain bytes.
//
// Nothing here knows about heaps, segments or processes: these functions read a QueueHeader and
// a ring (src/layout/queue_layout.hpp) through plain pointers and check every value they read,
// so that Queue (queue.cpp), its recovery and check(), and the fuzz target
// (fuzz/queue_fuzzer.cpp) share one decoder that never reads outside what it is given.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "layout/queue_layout.hpp"
#include "shoal/error.hpp"

namespace shoal::channels {

/// Q1 and Q2 on a header's constant fields: `block_bytes` is what the heap block holds.
Status check_header_constants(const layout::QueueHeader& h, uint64_t block_bytes) noexcept;

/// What a walk of [head, tail) found.
struct RingWalk {
  uint64_t count = 0;
  uint64_t bytes = 0;        // the messages' lengths (out-of-band ones included)
  uint64_t out_of_band = 0;  // records that name a heap block
};

/// One record, as read and checked.
struct RecordView {
  uint32_t length = 0;       // the record's payload bytes (16 for an out-of-band record)
  uint32_t flags = 0;        // kRecordBytes or kRecordOutOfBand (bit 0 of the tag's flags)
  uint8_t encoding = 0;      // kEncoding* (bits 1..3 of the tag's flags)
  uint64_t message = 0;      // the message's length (== length, or the OutOfBandRef's)
  uint64_t ref = 0;          // the block of an out-of-band record; 0 otherwise
  uint64_t span() const noexcept { return layout::record_span(length); }
};

/// Q3 and Q4: walks the records from head to tail in a ring of ring_bytes bytes (ring_bytes a
/// multiple of 8, at least kQueueMinRing: check_header_constants first). kCorrupt names the
/// position of the first bad record.
Result<RingWalk> walk_ring(const std::byte* ring, uint64_t ring_bytes, uint64_t head,
                           uint64_t tail) noexcept;

/// Reads the record at position pos (8-aligned) and checks it against what is left before
/// tail (and an out-of-band record's OutOfBandRef: a non-null ref, a length within
/// kQueueMaxOutOfBand), or kCorrupt.
Result<RecordView> read_record(const std::byte* ring, uint64_t ring_bytes, uint64_t pos,
                               uint64_t tail) noexcept;

/// Copies n bytes out of the ring from position pos (wrapping at the end).
inline void ring_read(const std::byte* ring, uint64_t ring_bytes, uint64_t pos, void* out,
                      uint64_t n) noexcept {
  if (n == 0) return;  // out may be null then (an empty std::vector's data())
  const uint64_t off = pos % ring_bytes;
  const uint64_t first = n < ring_bytes - off ? n : ring_bytes - off;
  std::memcpy(out, ring + off, first);
  if (n > first) std::memcpy(static_cast<std::byte*>(out) + first, ring, n - first);
}

/// Copies n bytes into the ring at position pos (wrapping at the end).
inline void ring_write(std::byte* ring, uint64_t ring_bytes, uint64_t pos, const void* in,
                       uint64_t n) noexcept {
  if (n == 0) return;  // out may be null then (an empty std::vector's data())
  const uint64_t off = pos % ring_bytes;
  const uint64_t first = n < ring_bytes - off ? n : ring_bytes - off;
  std::memcpy(ring + off, in, first);
  if (n > first) std::memcpy(ring, static_cast<const std::byte*>(in) + first, n - first);
}

/// Q8 on the end table (a snapshot: the fields are read once each): kCorrupt names the first
/// bad slot. What it returns is what the table claims (live or not: liveness is the caller's).
struct EndsView {
  uint32_t slots[2] = {0, 0};   // slots with an owner, per side
  uint64_t holds[2] = {0, 0};   // their refs + lent, plus the overflow, per side
};
Result<EndsView> check_ends(const layout::QueueEnds& e) noexcept;

/// Q9 on the hand-out table (a snapshot: each field read once): kCorrupt names the first bad
/// slot (an owner with pid 0 or past kQueueMaxPid, kept bit aside; an owned slot naming block
/// 0; two slots of one owner word naming one block: co-owners have distinct words). Returns the
/// owned slots' blocks, in slot order (a co-owned block once per slot); whether their holders
/// live, and whether the blocks are the heap's, is the caller's to judge.
Result<std::vector<uint64_t>> check_handouts(const layout::QueueHandouts& t);

/// The largest payload one record can carry in a ring of ring_bytes.
constexpr uint64_t max_record_payload(uint64_t ring_bytes) noexcept {
  return ring_bytes - layout::kRecordHeaderBytes;
}

}  // namespace shoal::channels
