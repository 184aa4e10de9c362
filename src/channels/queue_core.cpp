// src/channels/queue_core.cpp — the queue's decoder (see queue_core.hpp).
#include "channels/queue_core.hpp"

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

namespace shoal::channels {

using layout::kQueueMaxRing;
using layout::kQueueMinRing;
using layout::kRecordHeaderBytes;

Status check_header_constants(const layout::QueueHeader& h, uint64_t block_bytes) noexcept {
  if (h.magic != layout::kQueueMagic) {
    return Status(Errc::kIncompatible, "queue: the block holds something else than a queue");
  }
  if (h.version != layout::kQueueVersion) {
    return Status(Errc::kIncompatible, "queue: layout version " + std::to_string(h.version) +
                                           ", this build reads " +
                                           std::to_string(layout::kQueueVersion));
  }
  if (h.header_bytes != sizeof(layout::QueueHeader)) {
    return Status(Errc::kCorrupt, "queue: header size " + std::to_string(h.header_bytes) +
                                      ", expected " +
                                      std::to_string(sizeof(layout::QueueHeader)));
  }
  if (h.ring_bytes % 8 != 0 || h.ring_bytes < kQueueMinRing || h.ring_bytes > kQueueMaxRing) {
    return Status(Errc::kCorrupt, "queue: ring size " + std::to_string(h.ring_bytes) +
                                      " is not a multiple of 8 in [64, 2**30]");
  }
  if (block_bytes < h.header_bytes || block_bytes - h.header_bytes < h.ring_bytes) {
    return Status(Errc::kCorrupt, "queue: a ring of " + std::to_string(h.ring_bytes) +
                                      " bytes does not fit its block of " +
                                      std::to_string(block_bytes));
  }
  return Status();
}

Result<EndsView> check_ends(const layout::QueueEnds& e) noexcept {
  EndsView v;
  for (uint32_t side = 0; side < 2; ++side) {
    const uint32_t opened = e.opened[side].load(std::memory_order_relaxed);
    if (opened > 1) {
      return Status(Errc::kCorrupt, "queue: Q8: end table side " + std::to_string(side) +
                                        " has opened flag " + std::to_string(opened));
    }
    v.holds[side] = e.overflow[side].load(std::memory_order_relaxed);
    for (uint32_t i = 0; i < layout::kQueueEndSlots; ++i) {
      const layout::QueueEndSlot& s = e.slots[side][i];
      const uint64_t owner = s.owner.load(std::memory_order_relaxed);
      if (owner == 0) continue;
      if ((owner >> 32) == 0 || (owner >> 32) >= layout::kQueueMaxPid) {
        return Status(Errc::kCorrupt, "queue: Q8: end slot " + std::to_string(side) + "/" +
                                          std::to_string(i) + " names pid " +
                                          std::to_string(owner >> 32));
      }
      ++v.slots[side];
      v.holds[side] += uint64_t{s.refs.load(std::memory_order_relaxed)} +
                       s.lent.load(std::memory_order_relaxed);
    }
    if (v.holds[side] != 0 && opened == 0) {
      return Status(Errc::kCorrupt, "queue: Q8: side " + std::to_string(side) +
                                        " has holders but was never opened");
    }
  }
  return v;
}

Result<std::vector<uint64_t>> check_handouts(const layout::QueueHandouts& t) {
  std::vector<uint64_t> blocks;
  std::vector<std::pair<uint64_t, uint64_t>> claims;  // (owner, block): each at most once
  for (uint32_t i = 0; i < layout::kQueueHandoutSlots; ++i) {
    const uint64_t owner = t.slots[i].owner.load(std::memory_order_relaxed);
    if (owner == 0) continue;
    const uint64_t block = t.slots[i].block.load(std::memory_order_relaxed);
    const uint64_t pid = (owner & ~layout::kQueueHandoutKept) >> 32;
    if (pid == 0 || pid >= layout::kQueueMaxPid || block == 0) {
      return Status(Errc::kCorrupt, "queue: Q9: hand-out slot " + std::to_string(i) +
                                        " names pid " + std::to_string(pid) + " and block " +
                                        std::to_string(block));
    }
    blocks.push_back(block);
    claims.emplace_back(owner, block);
  }
  std::sort(claims.begin(), claims.end());
  if (std::adjacent_find(claims.begin(), claims.end()) != claims.end()) {
    return Status(Errc::kCorrupt, "queue: Q9: two hand-out slots of one owner name one block");
  }
  return blocks;
}

Result<RecordView> read_record(const std::byte* ring, uint64_t ring_bytes, uint64_t pos,
                               uint64_t tail) noexcept {
  if (pos % 8 != 0 || tail < pos || tail - pos < kRecordHeaderBytes) {
    return Status(Errc::kCorrupt, "queue: no record header fits at position " +
                                      std::to_string(pos) + " (tail " + std::to_string(tail) +
                                      ")");
  }
  layout::QueueRecord r;
  // The header never wraps: pos and ring_bytes are multiples of 8.
  std::memcpy(&r, ring + pos % ring_bytes, sizeof r);
  RecordView v;
  v.length = r.length;
  const uint32_t flags = r.tag & 0xFFu;
  const uint32_t encoding = flags >> layout::kRecordEncodingShift;
  if (r.tag >> 8 != layout::kRecordMarker || encoding >= layout::kEncodingCount) {
    return Status(Errc::kCorrupt, "queue: bad record tag " + std::to_string(r.tag) +
                                      " at position " + std::to_string(pos));
  }
  v.flags = flags & layout::kRecordOutOfBand;
  v.encoding = static_cast<uint8_t>(encoding);
  if (r.length > max_record_payload(ring_bytes) ||
      layout::record_span(r.length) > tail - pos) {
    return Status(Errc::kCorrupt, "queue: record of " + std::to_string(r.length) +
                                      " bytes at position " + std::to_string(pos) +
                                      " runs past the tail " + std::to_string(tail));
  }
  v.message = r.length;
  if (v.flags == layout::kRecordOutOfBand) {
    if (r.length != sizeof(layout::OutOfBandRef)) {
      return Status(Errc::kCorrupt, "queue: out-of-band record of " + std::to_string(r.length) +
                                        " bytes at position " + std::to_string(pos));
    }
    layout::OutOfBandRef o;
    ring_read(ring, ring_bytes, pos + kRecordHeaderBytes, &o, sizeof o);
    if (o.ref == 0 || o.length > layout::kQueueMaxOutOfBand) {
      return Status(Errc::kCorrupt, "queue: out-of-band record at position " +
                                        std::to_string(pos) + " names block " +
                                        std::to_string(o.ref) + " of " +
                                        std::to_string(o.length) + " bytes");
    }
    v.ref = o.ref;
    v.message = o.length;
  }
  return v;
}

Result<RingWalk> walk_ring(const std::byte* ring, uint64_t ring_bytes, uint64_t head,
                           uint64_t tail) noexcept {
  if (head > tail || tail - head > ring_bytes || head % 8 != 0 || tail % 8 != 0) {
    return Status(Errc::kCorrupt, "queue: positions head " + std::to_string(head) + ", tail " +
                                      std::to_string(tail) + " break Q3 (ring of " +
                                      std::to_string(ring_bytes) + ")");
  }
  RingWalk w;
  for (uint64_t pos = head; pos != tail;) {
    Result<RecordView> r = read_record(ring, ring_bytes, pos, tail);
    if (!r.has_value()) return r.status();
    w.count += 1;
    w.bytes += r.value().message;
    if (r.value().ref != 0) w.out_of_band += 1;
    pos += r.value().span();
  }
  return w;
}

}  // namespace shoal::channels
