// fuzz/array_header_fuzzer.cpp — parse_array_header on arbitrary bytes standing for an array
// segment's data area: never crashes, never reads past `size`, and accepts only headers whose
// every invariant (A1-A5 in src/layout/array_layout.hpp) holds, computed here independently.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "layout/array_layout.hpp"
#include "shoal/array.hpp"

namespace layout = shoal::layout;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // An exact-size heap copy, so ASan flags any read past the "segment".
  std::vector<std::byte> seg(reinterpret_cast<const std::byte*>(data),
                             reinterpret_cast<const std::byte*>(data) + size);
  auto r = shoal::parse_array_header(size ? seg.data() : nullptr, size);
  // The same parse from a copy of only the first `readable` bytes (what a fast attach read):
  // it reads nothing past them (ASan), and what it accepts is what the whole parse accepts.
  for (uint64_t readable : {uint64_t{0}, uint64_t{191}, uint64_t{192}, uint64_t{448}, uint64_t{size}}) {
    if (readable > size) continue;
    std::vector<std::byte> head(seg.begin(), seg.begin() + static_cast<ptrdiff_t>(readable));
    auto p = shoal::parse_array_header(readable ? head.data() : seg.data(), size, readable);
    if (p && (!r || p.value().descr != r.value().descr || p.value().shape != r.value().shape ||
              p.value().nbytes != r.value().nbytes ||
              p.value().data_offset != r.value().data_offset)) {
      std::abort();
    }
  }
  if (!r) return 0;
  const shoal::ArrayInfo& info = r.value();
  layout::ArrayHeader h;
  if (size < sizeof h) std::abort();
  std::memcpy(static_cast<void*>(&h), data, sizeof h);
  const bool consistent =
      h.magic == layout::kArrayMagic && h.version == layout::kArrayVersion &&
      h.reserved0 == 0 && h.reserved1 == 0 && h.ndim <= layout::kMaxDims &&
      info.shape.size() == h.ndim && info.itemsize == h.itemsize && info.nbytes == h.nbytes &&
      info.data_offset == h.data_offset && info.descr.size() == h.descr_size &&
      !info.descr.empty() && info.descr.size() <= layout::kMaxDescr &&
      info.data_offset % layout::kArrayAlign == 0 &&
      info.data_offset >= layout::kArrayHeaderSize + info.descr.size() &&
      info.data_offset <= size && info.nbytes <= size - info.data_offset &&
      std::memcmp(info.descr.data(), data + sizeof h, info.descr.size()) == 0;
  if (!consistent) std::abort();
  // A5 in 128-bit arithmetic: no dimension product or byte count may have wrapped.
  unsigned __int128 count = 1;
  for (uint64_t d : info.shape) {
    count *= d;
    if (count > UINT64_MAX) std::abort();
  }
  if (count * info.itemsize != info.nbytes) std::abort();
  return 0;
}
