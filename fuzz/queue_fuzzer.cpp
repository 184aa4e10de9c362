// fuzz/queue_fuzzer.cpp — the queue's decoder (src/channels/queue_core.hpp) on arbitrary bytes
// standing for a queue's heap block: a QueueHeader (zero-padded to its size when the input is
// shorter) followed by the ring. check_header_constants, then walk_ring over [head, tail) and a
// copy of every record it accepts, on a buffer of exactly header + ring_bytes bytes, so ASan
// sees any read past the ring, out-of-band records included (their 16-byte payload may wrap);
// the end table (Q8) and the hand-out table (Q9) decode or are refused. Never crashes; a walk
// it accepts must add up (Q3, Q4).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "channels/queue_core.hpp"
#include "layout/queue_layout.hpp"

namespace layout = shoal::layout;
namespace channels = shoal::channels;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<std::byte> block(reinterpret_cast<const std::byte*>(data),
                               reinterpret_cast<const std::byte*>(data) + size);
  if (block.size() < sizeof(layout::QueueHeader)) block.resize(sizeof(layout::QueueHeader));
  layout::QueueHeader h;
  std::memcpy(static_cast<void*>(&h), block.data(), sizeof h);
  if (!channels::check_header_constants(h, block.size()).is_ok()) return 0;
  // Q8: the end table decodes or is refused; what it accepts adds up.
  if (auto e = channels::check_ends(h.ends); e.has_value()) {
    for (int side = 0; side < 2; ++side) {
      if (e.value().slots[side] > layout::kQueueEndSlots) std::abort();
    }
  }
  // Q9: the hand-out table decodes or is refused; what it accepts names distinct blocks.
  if (auto t = channels::check_handouts(h.handouts); t.has_value()) {
    if (t.value().size() > layout::kQueueHandoutSlots) std::abort();
    for (uint64_t b : t.value()) {
      if (b == 0) std::abort();
    }
  }
  // Exactly the ring: nothing after it is readable without ASan noticing.
  block.resize(sizeof(layout::QueueHeader) + h.ring_bytes);
  block.shrink_to_fit();
  const std::byte* ring = block.data() + sizeof(layout::QueueHeader);
  const uint64_t head = h.head.load(), tail = h.tail.load();
  auto w = channels::walk_ring(ring, h.ring_bytes, head, tail);
  if (!w.has_value()) return 0;
  if (tail - head > h.ring_bytes || w.value().count * 8 > tail - head ||
      w.value().out_of_band > w.value().count ||
      w.value().bytes > tail - head + w.value().out_of_band * layout::kQueueMaxOutOfBand) {
    std::abort();  // an accepted walk must fit its span
  }
  // Read every record as get does.
  std::vector<std::byte> out;
  for (uint64_t pos = head; pos != tail;) {
    auto len = channels::read_record(ring, h.ring_bytes, pos, tail);
    if (!len.has_value()) std::abort();  // walk_ring accepted this record
    const channels::RecordView& v = len.value();
    if ((v.ref != 0) != (v.flags == layout::kRecordOutOfBand)) std::abort();
    out.resize(v.length);  // an out-of-band record's 16 bytes; its block is the heap's
    channels::ring_read(ring, h.ring_bytes, pos + layout::kRecordHeaderBytes, out.data(),
                        v.length);
    pos += v.span();
  }
  return 0;
}
