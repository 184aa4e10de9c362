// src/containers/dict_core.hpp — the read side of shoal::Dict over any memory (items:
// containers/item_core.hpp): key matching, table decoding, lookup and the structure check (D1-D6 of
// src/layout/dict_layout.hpp).
//
// The functions are templates over `Mem`, anything with `std::byte* at(uint64_t ref, uint64_t
// len) const` that throws an shoal::Error when [ref, ref + len) is not inside its memory: a
// shoal::Heap in the library, a byte buffer in the fuzz target (fuzz/dict_fuzzer.cpp). Every
// offset read from the memory is checked before use; a corrupt structure throws DecodeError or
// CorruptSegmentError, never crashes and never loops (probes are bounded by Probe::limit).
//
// Readers of a live dict read memory that a writer may be freeing and reusing under them (the
// gen protocol of docs/design/dict.md: the reader retries when gen moved). Every load here from
// such memory goes through racy_load*/racy_copy: acquire loads (so that the reader's final gen
// load cannot move before them), hidden from TSan, which cannot know that a read whose gen
// check fails is thrown away.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "containers/item_core.hpp"
#include "layout/dict_layout.hpp"
#include "shoal/codec.hpp"
#include "shoal/detail/frozen_format.hpp"
#include "shoal/dict.hpp"
#include "shoal/error.hpp"
#include "shoal/frozen.hpp"

namespace shoal::containers {

/// A key as a lookup compares it with stored keys.
struct KeyProbe {
  enum Kind : uint8_t { kNone, kNumber, kStr, kBytes, kFrozen } kind = kNone;
  codec::Number num;
  std::string_view data;  // kStr (UTF-8), kBytes, kFrozen (the image)
  frozen::Image image;    // kFrozen: over data
  uint64_t hash = 0;
};
KeyProbe probe_of(const Item& key, uint64_t seed);

/// The image of a stored tuple/frozenset key item, copied into *buf.
template <class Mem>
frozen::Image stored_key_image(const Mem& mem, uint64_t item, std::string* buf) {
  uint64_t n = 0;
  const std::byte* d = node_payload(mem, item, &n, "dict");
  buf->resize(n);
  racy_copy(buf->data(), d, n);
  return open_key_image(buf->data(), n);
}

/// Python's == between a probe key and a stored key item.
template <class Mem>
bool key_matches(const Mem& mem, uint64_t item, const KeyProbe& p) {
  const Tag t = layout::tag_of(item);
  switch (p.kind) {
    case KeyProbe::kNone: return t == Tag::kNone;
    case KeyProbe::kNumber: {
      std::string buf;
      const codec::Number n = number_of(mem, item, &buf);
      return n.kind != codec::Number::kNotNumber && codec::numbers_equal(p.num, n);
    }
    case KeyProbe::kStr:
    case KeyProbe::kBytes: {
      if (t != (p.kind == KeyProbe::kStr ? Tag::kStr : Tag::kBytes)) return false;
      uint64_t n = 0;
      const std::byte* d = node_payload(mem, item, &n, "dict");
      return n == p.data.size() && racy_equal(d, p.data.data(), n);
    }
    case KeyProbe::kFrozen: {
      if (!is_frozen_key_tag(t)) return false;
      std::string buf;
      const frozen::Image im = stored_key_image(mem, item, &buf);
      return frozen::keys_equal(p.image.root(), im.root());
    }
  }
  return false;
}

// ---- tables -----------------------------------------------------------------------------

struct TableView {
  uint64_t ref = 0;
  std::byte* base = nullptr;
  uint32_t log2 = 0;
  uint64_t capacity = 0;

  layout::DictTable* header() const noexcept { return reinterpret_cast<layout::DictTable*>(base); }
  std::atomic<uint32_t>* index() const noexcept {
    return reinterpret_cast<std::atomic<uint32_t>*>(base + sizeof(layout::DictTable));
  }
  layout::DictEntry* entries() const noexcept {
    return reinterpret_cast<layout::DictEntry*>(base + layout::dict_entries_offset(log2));
  }
  uint64_t slots() const noexcept { return uint64_t{1} << log2; }
  // Racy reads (readers).
  uint64_t counts() const noexcept { return racy_load64(&header()->counts); }
  uint32_t slot(uint64_t s) const noexcept { return racy_load32(index() + s); }
  const layout::DictEntry* entry(uint64_t i) const noexcept { return entries() + i; }
};

/// The table at `ref`, its header checked (D2).
template <class Mem>
TableView open_table(const Mem& mem, uint64_t ref) {
  if ((ref & 15) != 0) corrupt("a table Ref that is not 16-byte aligned");  // blocks are
  const std::byte* p = mem.at(ref, sizeof(layout::DictTable));
  if (racy_load64(p) != layout::kDictTableMagic) corrupt("a table without its magic");
  const uint32_t log2 = racy_load32(p + 8);
  if (log2 < layout::kDictMinLog2 || log2 > layout::kDictMaxLog2) {
    corrupt("a table of 2**" + std::to_string(log2) + " slots");
  }
  if (racy_load64(p + 16) != layout::dict_capacity(log2)) corrupt("a table's capacity is wrong");
  TableView t;
  t.ref = ref;
  t.base = mem.at(ref, layout::dict_table_bytes(log2));
  t.log2 = log2;
  t.capacity = layout::dict_capacity(log2);
  return t;
}

/// The entry index of the live key for which `eq(key item)` is true among the entries whose
/// stored hash is `hash`, or -1. `counts` is the table's counts word, loaded once by the
/// caller: slots naming entries past its nentries are not yet published. The Python layer
/// passes its own `eq` (Python's == against a stored key); C++ keys use find_entry below.
template <class Eq>
int64_t find_entry_eq(const TableView& t, uint64_t counts, uint64_t hash, Eq&& eq) {
  const uint64_t nentries = layout::dict_nentries(counts);
  if (nentries > t.capacity) corrupt("more entries than the table holds");
  layout::Probe pr(hash, t.log2);
  for (uint64_t n = 0, limit = pr.limit(); n < limit; ++n, pr.next()) {
    const uint32_t ix = t.slot(pr.slot);
    if (ix == 0) return -1;
    const uint64_t e = ix - 1;
    if (e >= nentries) continue;
    const layout::DictEntry* en = t.entry(e);
    if (racy_load64(&en->hash) != hash) continue;
    const uint64_t key = racy_load64(&en->key);
    if (key == layout::kDeletedKey) continue;
    if (eq(key)) return static_cast<int64_t>(e);
  }
  return -1;
}

/// find_entry_eq for a C++ key.
template <class Mem>
int64_t find_entry(const Mem& mem, const TableView& t, uint64_t counts, const KeyProbe& p) {
  return find_entry_eq(t, counts, p.hash, [&](uint64_t key) { return key_matches(mem, key, p); });
}

/// The hash the codec gives a stored key item (D5); InvalidArgumentError for an unhashable tag.
template <class Mem>
uint64_t hash_of_item(const Mem& mem, uint64_t item, uint64_t seed) {
  switch (layout::tag_of(item)) {
    case Tag::kNone: return codec::hash::kNoneHash;
    case Tag::kStr:
    case Tag::kBytes: {
      uint64_t n = 0;
      const std::byte* p = node_payload(mem, item, &n, "dict");
      std::string buf(n, '\0');
      racy_copy(buf.data(), p, n);
      return codec::hash::of_bytes(seed, buf.data(), n);
    }
    case Tag::kTuple:
    case Tag::kFrozenSet: {
      std::string buf;
      return frozen::hash_of(stored_key_image(mem, item, &buf).root());
    }
    default: {
      std::string buf;
      const codec::Number num = number_of(mem, item, &buf);
      switch (num.kind) {
        case codec::Number::kInt: return static_cast<uint64_t>(codec::hash::of_int(num.i));
        case codec::Number::kFloat: return static_cast<uint64_t>(codec::hash::of_float(num.f));
        case codec::Number::kBig:
          return static_cast<uint64_t>(codec::hash::of_bigint(
              std::span<const std::byte>(reinterpret_cast<const std::byte*>(num.b), num.n)));
        default: break;
      }
      corrupt("an entry's key has tag " + std::to_string(static_cast<int>(layout::tag_of(item))) +
              ", which this version does not store as a key");
    }
  }
}

/// Python's == between two stored key items.
template <class Mem>
bool stored_keys_equal(const Mem& mem, uint64_t a, uint64_t b) {
  const Tag ta = layout::tag_of(a), tb = layout::tag_of(b);
  if (ta == Tag::kStr || ta == Tag::kBytes || tb == Tag::kStr || tb == Tag::kBytes) {
    if (ta != tb) return false;
    uint64_t na = 0, nb = 0;
    const std::byte* pa = node_payload(mem, a, &na, "dict");
    const std::byte* pb = node_payload(mem, b, &nb, "dict");
    return na == nb && std::memcmp(pa, pb, na) == 0;
  }
  if (ta == Tag::kNone || tb == Tag::kNone) return ta == tb;
  if (is_frozen_key_tag(ta) || is_frozen_key_tag(tb)) {
    if (!is_frozen_key_tag(ta) || !is_frozen_key_tag(tb)) return false;
    std::string ba, bb;
    return frozen::keys_equal(stored_key_image(mem, a, &ba).root(),
                              stored_key_image(mem, b, &bb).root());
  }
  std::string ba, bb;
  const codec::Number x = number_of(mem, a, &ba), y = number_of(mem, b, &bb);
  return x.kind != codec::Number::kNotNumber && y.kind != codec::Number::kNotNumber &&
         codec::numbers_equal(x, y);
}

/// What check_structure counted.
struct StructureReport {
  uint64_t used = 0;
  uint64_t nentries = 0;
  uint64_t node_blocks = 0;  // live entries' key and value items that name a block
};

/// D1-D6 on a quiet dict (the caller holds the lock, or the memory is a fuzzer's buffer):
/// throws CorruptSegmentError (or DecodeError) naming the first failure. Bounded: O(slots *
/// probe limit) at most.
template <class Mem>
StructureReport check_structure(const Mem& mem, uint64_t top) {
  if ((top & 15) != 0) corrupt("D1: a header Ref that is not 16-byte aligned");
  const std::byte* hp = mem.at(top, sizeof(layout::DictHeader));
  const auto* h = reinterpret_cast<const layout::DictHeader*>(hp);
  if (racy_load64(&h->magic) != layout::kDictMagic) corrupt("D1: the header's magic is wrong");
  if (racy_load32(&h->version) != layout::kDictVersion ||
      racy_load32(&h->header_bytes) != sizeof(layout::DictHeader)) {
    corrupt("D1: the header's version or size is wrong");
  }
  const uint64_t seed = racy_load64(&h->hash_seed);
  const uint64_t next_seq = racy_load64(&h->next_seq);
  const TableView t = open_table(mem, racy_load64(&h->table));  // D2
  const uint64_t counts = t.counts();
  StructureReport r;
  r.nentries = layout::dict_nentries(counts);
  if (r.nentries > t.capacity) corrupt("D3: more entries than the table holds");
  // D4: each slot names an entry < nentries, each entry is named once.
  std::string seen(r.nentries, '\0');
  for (uint64_t s = 0; s < t.slots(); ++s) {
    const uint32_t ix = t.slot(s);
    if (ix == 0) continue;
    if (ix - 1 >= r.nentries) corrupt("D4: slot " + std::to_string(s) + " names an unwritten entry");
    if (seen[ix - 1] != 0) corrupt("D4: entry " + std::to_string(ix - 1) + " is named twice");
    seen[ix - 1] = 1;
  }
  uint64_t prev_seq = 0;
  for (uint64_t i = 0; i < r.nentries; ++i) {
    if (seen[i] == 0) corrupt("D4: entry " + std::to_string(i) + " is in no slot");
    const layout::DictEntry* e = t.entry(i);
    const uint64_t seq = racy_load64(&e->seq);
    if ((i > 0 && seq <= prev_seq) || seq >= next_seq) {
      corrupt("D6: entry " + std::to_string(i) + " is out of insertion order");
    }
    prev_seq = seq;
    const uint64_t key = racy_load64(&e->key);
    if (key == layout::kDeletedKey) continue;
    ++r.used;
    const uint64_t hash = racy_load64(&e->hash);
    if (hash_of_item(mem, key, seed) != hash) {  // D5
      corrupt("D5: entry " + std::to_string(i) + " has a wrong stored hash");
    }
    // D4 and D5: probing the key's hash reaches its own entry first among the live keys
    // equal to it (so no two live keys are equal), before any empty slot.
    layout::Probe pr(hash, t.log2);
    bool found = false;
    for (uint64_t n = 0, limit = pr.limit(); n < limit && !found; ++n, pr.next()) {
      const uint32_t ix = t.slot(pr.slot);
      if (ix == 0) break;
      const uint64_t j = ix - 1;
      if (j == i) {
        found = true;
        break;
      }
      const layout::DictEntry* o = t.entry(j);
      const uint64_t ok = racy_load64(&o->key);
      if (ok != layout::kDeletedKey && racy_load64(&o->hash) == hash &&
          stored_keys_equal(mem, ok, key)) {
        corrupt("D5: entries " + std::to_string(j) + " and " + std::to_string(i) +
                " hold equal keys");
      }
    }
    if (!found) corrupt("D4: entry " + std::to_string(i) + " is not on its hash's probe path");
    const uint64_t value = racy_load64(&e->value);
    const Tag vt = layout::tag_of(value);
    if (vt == Tag::kReserved) corrupt("an entry's value has the reserved tag");
    if (vt == layout::kObjectRefTag) {  // R1, R2: a live value's reference is held
      const std::byte* rp = mem.at(item_ref(value), sizeof(layout::ObjectRefNode));
      if (racy_load64(rp) != layout::kObjectRefPayload ||
          racy_load64(rp + offsetof(layout::ObjectRefNode, state)) != layout::kRefHeld) {
        corrupt("R2: entry " + std::to_string(i) + "'s object reference is not held");
      }
    }
    r.node_blocks += (item_has_node(key) ? 1 : 0) + (item_has_node(value) ? 1 : 0);
  }
  const uint64_t hint = racy_load64(&t.header()->pop_hint);
  for (uint64_t i = hint == 0 ? r.nentries : hint - 1; i < r.nentries; ++i) {
    if (racy_load64(&t.entry(i)->key) != layout::kDeletedKey) {
      corrupt("D9: entry " + std::to_string(i) + " is live above the popitem hint");
    }
  }
  if (r.used != layout::dict_used(counts)) {
    corrupt("D3: used is " + std::to_string(layout::dict_used(counts)) + ", but " +
            std::to_string(r.used) + " entries are live");
  }
  return r;
}

}  // namespace shoal::containers

namespace shoal::detail {
/// Test hook: when n > 0, this process SIGKILLs itself at the n-th point between two steps of
/// a dict write or recovery (tests/cpp/multiprocess/dict_test.cpp walks every point of every
/// operation). One relaxed load per step otherwise.
extern std::atomic<int64_t> dict_kill_at;
}  // namespace shoal::detail
