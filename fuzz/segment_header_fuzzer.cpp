// fuzz/segment_header_fuzzer.cpp — validate_segment_header on arbitrary bytes standing for a
// mapped segment: never crashes, never reads past `size`, and accepts only consistent headers.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "layout/segment_layout.hpp"
#include "shoal/segment.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // An exact-size heap copy, so ASan flags any read past the "mapping", aligned as a mapping is.
  std::vector<uint64_t> buf((size + 7) / 8 + 1);
  std::memcpy(buf.data(), data, size);
  shoal::Status st = shoal::validate_segment_header(size ? buf.data() : nullptr, size, shoal::Id128{});
  if (st.is_ok()) {
    shoal::layout::SegmentHeader h;
    std::memcpy(static_cast<void*>(&h), data, sizeof h);
    if (h.size != size || h.magic != shoal::layout::kSegmentMagic) std::abort();
  }
  return 0;
}
