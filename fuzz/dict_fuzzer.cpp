// fuzz/dict_fuzzer.cpp — the dict's decoders (src/containers/dict_core.hpp: the header and
// table checks, lookups, item decoding -- big ints, tuple/frozenset images and object
// references included --, the structure check D1-D6 and R2) on a dict another process
// could have written anything into. The input first builds a valid dict in a 64 KiB buffer (its
// first byte: how many entries; then one byte per entry choosing the key's and value's types),
// then patches it: each later 3-byte record XORs one byte (16-bit offset, 8-bit value). Every
// read must stay inside the buffer (ASan sees to that) and end; what it answers is free.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "container_fuzz.hpp"
#include "containers/dict_core.hpp"
#include "shoal/frozen.hpp"

namespace layout = shoal::layout;
namespace c = shoal::containers;

namespace {

using shoal::fuzz::BufferMem;
using shoal::fuzz::kBytes;

// A tuple key as the Python layer stores it: a whole frozen image (i, "t").
shoal::Item tuple_for(uint64_t i) {
  shoal::frozen::Builder b;
  const uint64_t items[] = {b.integer(static_cast<int64_t>(i)), b.str("t")};
  const std::vector<std::byte> img = b.finish_bytes(b.tuple(items));
  return shoal::Item{shoal::FrozenKey{std::string(reinterpret_cast<const char*>(img.data()), img.size())}};
}

// `key`: a hashable item (a reference to another object is a value only).
shoal::Item item_for(uint8_t sel, uint64_t i, bool key = true) {
  switch (sel % 9) {
    case 6: {  // 2**(64 + i % 60) + i: an int beyond 64 bits
      std::string le(17, '\0');
      le[0] = static_cast<char>(i);
      le[8 + (i % 60) / 8] = static_cast<char>(1 << ((i % 60) % 8));
      return shoal::Item{shoal::BigInt{le}};
    }
    case 7: return tuple_for(i);
    case 8:
      if (key) return shoal::Item{std::monostate{}};
      return shoal::Item{shoal::ObjectRef{shoal::Id128{i + 1, 0x5eed}, 4096, 1, shoal::Segment()}};
    default: break;
  }
  switch (sel % 6) {
    case 0: return shoal::Item{static_cast<int64_t>(i * 1000003)};
    case 1: return shoal::Item{static_cast<double>(i) + 0.5};
    case 2: return shoal::Item{"s" + std::to_string(i) + std::string(sel % 40, 'q')};
    case 3: return shoal::Item{shoal::Bytes{"b" + std::to_string(i)}};
    case 4: return shoal::Item{static_cast<int64_t>(INT64_MIN + static_cast<int64_t>(i))};
    default: return shoal::Item{std::monostate{}};
  }
}

// A valid dict: header at 64, table at 256, nodes after it (a bump allocator).
uint64_t build(std::byte* buf, const uint8_t* data, size_t size) {
  const uint64_t n = size > 0 ? data[0] % 40 : 0;
  uint32_t log2 = layout::kDictMinLog2;
  while (layout::dict_capacity(log2) < n) ++log2;
  auto* h = reinterpret_cast<layout::DictHeader*>(buf + 64);
  h->magic = layout::kDictMagic;
  h->version = layout::kDictVersion;
  h->header_bytes = sizeof(layout::DictHeader);
  h->hash_seed = shoal::frozen::kDefaultHashSeed;
  const uint64_t tref = 256;
  h->table.store(tref);
  auto* t = reinterpret_cast<layout::DictTable*>(buf + tref);
  t->magic = layout::kDictTableMagic;
  t->log2_slots = log2;
  t->capacity = layout::dict_capacity(log2);
  c::TableView tv{tref, buf + tref, log2, t->capacity};
  uint64_t next = (tref + layout::dict_table_bytes(log2) + 15) & ~uint64_t{15};
  auto store = [&](const shoal::Item& v) -> uint64_t {
    const c::Encoded e = c::encode_item(v, "dict");
    if (e.node.empty()) return e.inline_item;
    if (next + e.node.size() > kBytes) return 0;
    std::memcpy(buf + next, e.node.data(), e.node.size());
    const uint64_t ref = next;
    next = (next + e.node.size() + 15) & ~uint64_t{15};
    return ref | static_cast<uint64_t>(e.tag);
  };
  uint64_t used = 0;
  for (uint64_t i = 0; i < n; ++i) {
    const uint8_t sel = 1 + i < size ? data[1 + i] : 0;
    const shoal::Item key = item_for(sel, i);
    const c::KeyProbe p = c::probe_of(key, h->hash_seed);
    t->counts.store(layout::dict_counts(used, used));
    if (c::find_entry(BufferMem{buf}, tv, t->counts.load(), p) >= 0) continue;  // equal keys
    layout::Probe pr(p.hash, log2);
    while (tv.index()[pr.slot].load() != 0) pr.next();
    tv.index()[pr.slot].store(static_cast<uint32_t>(used + 1));
    layout::DictEntry& e = tv.entries()[used];
    e.hash = p.hash;
    e.key = store(key);
    e.value = store(item_for(static_cast<uint8_t>(sel >> 3), i + 7, false));
    e.seq = used;
    ++used;
  }
  h->next_seq = used;
  t->counts.store(layout::dict_counts(used, used));
  return 1 + n;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto storage = std::make_unique<uint64_t[]>(kBytes / 8);  // zeroed, 8-byte aligned
  auto* buf = reinterpret_cast<std::byte*>(storage.get());
  const uint64_t used = build(buf, data, size);
  shoal::fuzz::patch(buf, data, size, used);
  const BufferMem mem{buf};
  try {
    (void)c::check_structure(mem, 64);
  } catch (const shoal::Error&) {
    if (used + 3 > size) std::abort();  // unpatched: the builder's dict must pass D1-D6
  }
  try {
    const auto* h = reinterpret_cast<const layout::DictHeader*>(buf + 64);
    const c::TableView t = c::open_table(mem, h->table.load());
    const uint64_t counts = t.counts();
    for (uint64_t i = 0; i < 48; ++i) {
      try {
        (void)c::find_entry(mem, t, counts, c::probe_of(item_for(static_cast<uint8_t>(i), i), h->hash_seed));
      } catch (const shoal::Error&) {
      }
    }
    const uint64_t n = std::min<uint64_t>(layout::dict_nentries(counts), t.capacity);
    for (uint64_t i = 0; i < n; ++i) {
      for (uint64_t item : {c::racy_load64(&t.entry(i)->key), c::racy_load64(&t.entry(i)->value)}) {
        try {
          (void)c::decode_item(mem, item, [] { return true; }, "dict");
        } catch (const shoal::Error&) {
        }
      }
    }
  } catch (const shoal::Error&) {
  }
  return 0;
}
