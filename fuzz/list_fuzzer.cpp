// fuzz/list_fuzzer.cpp — the list's decoders (src/containers/list_core.hpp: the header and array
// checks, slice arithmetic, element decoding, the structure check L1-L5) on a list another
// process could have written anything into. The input first builds a valid list in a 64 KiB
// buffer (its first byte: how many elements; then one byte per element choosing its type), then
// patches it: each later 3-byte record XORs one byte (16-bit offset, 8-bit value). Every read
// must stay inside the buffer (ASan sees to that) and end; what it answers is free.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "container_fuzz.hpp"
#include "containers/list_core.hpp"

namespace layout = shoal::layout;
namespace c = shoal::containers;

namespace {

using shoal::fuzz::BufferMem;
using shoal::fuzz::kBytes;

shoal::Item item_for(uint8_t sel, uint64_t i) {
  switch (sel % 7) {
    case 0: return shoal::Item{static_cast<int64_t>(i * 1000003)};
    case 1: return shoal::Item{static_cast<double>(i) + 0.5};
    case 2: return shoal::Item{"s" + std::to_string(i) + std::string(sel % 40, 'q')};
    case 3: return shoal::Item{shoal::Bytes{"b" + std::to_string(i)}};
    case 4: return shoal::Item{static_cast<int64_t>(INT64_MIN + static_cast<int64_t>(i))};
    case 5: return shoal::Item{shoal::Pickled{std::string(sel % 20, 'p')}};
    default: return shoal::Item{std::monostate{}};
  }
}

// A valid list: header at 64, array at 256, nodes after it (a bump allocator).
uint64_t build(std::byte* buf, const uint8_t* data, size_t size) {
  const uint64_t n = size > 0 ? data[0] % 60 : 0;
  const uint64_t cap = std::max<uint64_t>(layout::kListMinCapacity, n + (size > 1 ? data[1] % 8 : 0));
  auto* h = reinterpret_cast<layout::ListHeader*>(buf + 64);
  h->magic = layout::kListMagic;
  h->version = layout::kListVersion;
  h->header_bytes = sizeof(layout::ListHeader);
  const uint64_t aref = 256;
  h->array.store(aref);
  auto* a = reinterpret_cast<layout::ListArray*>(buf + aref);
  a->magic = layout::kListArrayMagic;
  a->capacity = cap;
  auto* words = reinterpret_cast<std::atomic<uint64_t>*>(buf + aref + sizeof(layout::ListArray));
  uint64_t next = (aref + layout::list_array_bytes(cap) + 15) & ~uint64_t{15};
  uint64_t count = 0;
  for (uint64_t i = 0; i < n; ++i) {
    const uint8_t sel = 2 + i < size ? data[2 + i] : 0;
    const c::Encoded e = c::encode_item(item_for(sel, i), "list");
    uint64_t w = e.inline_item;
    if (!e.node.empty()) {
      if (next + e.node.size() > kBytes) break;
      std::memcpy(buf + next, e.node.data(), e.node.size());
      w = next | static_cast<uint64_t>(e.tag);
      next = (next + e.node.size() + 15) & ~uint64_t{15};
    }
    words[count++].store(w);
  }
  a->size.store(count);
  return 2 + n;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto storage = std::make_unique<uint64_t[]>(kBytes / 8);  // zeroed, 8-byte aligned
  auto* buf = reinterpret_cast<std::byte*>(storage.get());
  const uint64_t used = build(buf, data, size);
  shoal::fuzz::patch(buf, data, size, used);
  const BufferMem mem{buf};
  try {
    (void)c::check_list_structure(mem, 64);
  } catch (const shoal::Error&) {
    if (used + 3 > size) std::abort();  // unpatched: the builder's list must pass L1-L5
  }
  try {
    const layout::ListHeader* h = c::open_list_header(mem, 64);
    const c::ArrayView a = c::open_array(mem, c::racy_load64(&h->array));
    const uint64_t n = c::checked_size(a);
    const int64_t steps[] = {1, -1, 2, -3, 7};
    for (int64_t st : steps) {
      shoal::Slice s;
      s.step = st;
      if (size > 0) s.start = static_cast<int8_t>(data[size - 1]);
      const c::SliceRange r = c::slice_range(s, n);
      for (uint64_t k = 0; k < r.length; ++k) {
        if (r.at(k) >= n) std::abort();  // the slice arithmetic stays inside the list
        try {
          (void)c::decode_item(mem, a.word(r.at(k)), [] { return true; }, "list");
        } catch (const shoal::Error&) {
        }
      }
    }
  } catch (const shoal::Error&) {
  }
  return 0;
}
