// fuzz/sync_header_fuzzer.cpp — parse_sync_header (src/sync/sync_header.hpp) on arbitrary bytes
// standing for a sync segment's data area: never crashes, never reads past the header (the copy
// is exactly the input's size, so ASan sees any read beyond), and accepts exactly the headers
// whose every invariant (H1-H3 in src/layout/sync_layout.hpp) holds, computed here
// independently. The input is zero-padded to the segment size the parser requires when it is
// shorter and its first byte is odd, as the magic's is (a short input with an even first byte
// must be refused).
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "layout/sync_layout.hpp"
#include "sync/sync_header.hpp"

namespace layout = shoal::layout;

namespace {

bool expect_ok(const layout::SyncHeader& h) {
  if (h.magic != layout::kSyncMagic || h.version != layout::kSyncVersion) return false;
  for (uint32_t r : h.reserved) {
    if (r != 0) return false;
  }
  switch (h.type) {
    case 1: case 2: case 4: case 5: return true;
    case 3: {
      const uint32_t f = h.param[1];
      return h.param[0] <= layout::kSemaphoreMax && (f & ~3u) == 0 && (f & 1u) <= (f >> 1);
    }
    case 6: {
      double t;
      std::memcpy(&t, &h.param[2], sizeof t);
      return h.param[0] >= 1 && h.param[0] <= layout::kBarrierSlots && !std::isnan(t) && t >= 0;
    }
    case 7: {
      const uint32_t n = h.param[0], k = h.param[1];
      return (n == 1 || n == 2 || n == 4 || n == 8) &&
             (k == 'i' || k == 'u' || (k == 'f' && (n == 4 || n == 8)));
    }
    default: return false;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const bool pad = size == 0 || (data[0] & 1) != 0;
  std::vector<std::byte> seg(reinterpret_cast<const std::byte*>(data),
                             reinterpret_cast<const std::byte*>(data) + size);
  if (pad && seg.size() < layout::kSyncSegmentBytes) seg.resize(layout::kSyncSegmentBytes);
  auto r = shoal::sync::parse_sync_header(seg.empty() ? nullptr : seg.data(), seg.size());
  if (seg.size() < layout::kSyncSegmentBytes) {
    if (r.has_value()) std::abort();  // too small for any sync object
    return 0;
  }
  layout::SyncHeader h;
  std::memcpy(&h, seg.data(), sizeof h);
  if (r.has_value() != expect_ok(h)) std::abort();
  if (r.has_value() && std::memcmp(&r.value(), &h, sizeof h) != 0) std::abort();
  return 0;
}
