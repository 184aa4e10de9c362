// fuzz/hold_ring_fuzzer.cpp — the broker's reads of a hold ring (src/layout/hold_ring_layout.hpp)
// on pages a client could have written anything into: hold_ring_fresh and drain_hold_ring never
// read outside the page, never take more than the ring holds, and either take exactly the
// entries [taken, head) or nothing (R3, R4). The input is the page, then the broker's starting
// count, then head values a client stores between drains.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "layout/hold_ring_layout.hpp"

namespace layout = shoal::layout;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // The page as the broker maps it: exactly kHoldRingBytes, so ASan flags any read past it.
  auto page = std::make_unique<std::byte[]>(layout::kHoldRingBytes);
  const size_t first = size < layout::kHoldRingBytes ? size : layout::kHoldRingBytes;
  std::memcpy(page.get(), data, first);
  data += first;
  size -= first;
  auto* r = std::launder(reinterpret_cast<layout::HoldRingHeader*>(page.get()));
  (void)layout::hold_ring_fresh(r);
  uint64_t taken = 0;
  if (size >= 8) {
    std::memcpy(&taken, data, 8);
    data += 8;
    size -= 8;
  }
  for (int round = 0; round < 64; ++round) {
    const uint64_t head = r->head.load(std::memory_order_relaxed);
    const uint64_t before = taken;
    uint64_t got = 0;
    const bool ok = layout::drain_hold_ring(r, &taken, [&](const layout::HoldEntry&) { ++got; });
    if (ok) {
      if (taken != head || got != head - before || got > layout::kHoldRingCapacity) std::abort();
      if (got != 0 && r->tail.load(std::memory_order_relaxed) != head) std::abort();
    } else if (taken != before || got != 0) {
      std::abort();
    }
    if (size < 8) break;
    uint64_t next;  // the client's next store of head (any value: it may be hostile)
    std::memcpy(&next, data, 8);
    data += 8;
    size -= 8;
    r->head.store(next, std::memory_order_relaxed);
  }
  return 0;
}
