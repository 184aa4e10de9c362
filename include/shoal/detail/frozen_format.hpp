// include/shoal/detail/frozen_format.hpp — the constants of the frozen image format that the
// public inline readers (shoal/frozen.hpp) and the core (src/layout/frozen_layout.hpp, which
// documents the format and includes this) share. Not API: no stability promise; the format
// itself is versioned (kFrozenVersion) and specified in docs/design/frozen.md.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace shoal::layout {

/// The low 4 bits of a ref. Tags 4..14 name a node (ref & ~kTagMask is its offset); 15 is
/// reserved (docs/design/codec.md: the extension tag of a later version).
enum class Tag : uint8_t {
  kNone = 0,
  kFalse = 1,
  kTrue = 2,
  kInt = 3,
  kFloat = 4,
  kBigInt = 5,
  kStr = 6,
  kBytes = 7,
  kList = 8,
  kTuple = 9,
  kDict = 10,
  kSet = 11,
  kFrozenSet = 12,
  kNdarray = 13,
  kPickle = 14,
  kReserved = 15,  // a reader raises DecodeError
};
inline constexpr uint64_t kTagMask = 15;
inline constexpr int64_t kInlineIntMin = -(int64_t{1} << 59);
inline constexpr int64_t kInlineIntMax = (int64_t{1} << 59) - 1;

inline constexpr Tag tag_of(uint64_t ref) noexcept { return static_cast<Tag>(ref & kTagMask); }
/// The node offset of a ref with a node tag.
inline constexpr uint64_t node_offset(uint64_t ref) noexcept { return ref & ~kTagMask; }
/// Tags 4..14: the ref names a node (every tag but the inline None, bools and ints, and 15).
inline constexpr bool is_node_tag(Tag t) noexcept { return t >= Tag::kFloat && t <= Tag::kPickle; }
/// The payload of an inline int: an arithmetic shift keeps the sign.
inline constexpr int64_t inline_int(uint64_t ref) noexcept { return static_cast<int64_t>(ref) >> 4; }

inline constexpr uint64_t kFrozenHeaderSize = 64;
inline constexpr uint64_t kNodeAlign = 16;
/// Every node starts with two 64-bit words (a count or size, then flags or zero).
inline constexpr uint64_t kNodeFixedSize = 16;

/// Tables: 1 << log2_slots slots, at most half of them used (F3).
inline constexpr uint32_t kMinLog2Slots = 3;
inline constexpr uint32_t kMaxLog2Slots = 40;
inline constexpr uint32_t kDictEntryWords = 3;  // {hash, key, value}
inline constexpr uint32_t kSetEntryWords = 2;   // {hash, key}
/// F3's header check: entry size, slot count within bounds, load factor at most 1/2.
inline constexpr bool table_header_ok(uint64_t count, uint32_t log2_slots,
                                      uint32_t entry_words) noexcept {
  return (entry_words == kDictEntryWords || entry_words == kSetEntryWords) &&
         log2_slots >= kMinLog2Slots && log2_slots <= kMaxLog2Slots &&
         count <= (uint64_t{1} << log2_slots) / 2;
}

/// A table node's fixed words: the entry count, then log2 of the slot count and the words per
/// entry. Read through read_table_header (a copy: the node may be unaligned in a fuzzer's
/// buffer), then checked with table_header_ok before any slot is read.
struct TableHeader {
  uint64_t count;
  uint32_t log2_slots;
  uint32_t entry_words;
};
static_assert(sizeof(TableHeader) == kNodeFixedSize, "a table header is a node's fixed words");
inline TableHeader read_table_header(const std::byte* node) noexcept {
  TableHeader h;
  std::memcpy(&h, node, sizeof h);
  return h;
}

/// An empty table slot's key word (tag 15 is reserved: no real key has it).
inline constexpr uint64_t kEmptyKey = 15;

/// F4 (docs/design/frozen.md): a container's children were written before it. A ref read out of
/// the container at `parent` may be followed only if this holds (inline values have no node and
/// always pass), so every chain of reads goes to strictly smaller offsets and ends: a forged
/// image that makes a list its own element raises DecodeError instead of looping. Every reader
/// of a container's refs -- Value's accessors, Image::validate, the Python views -- checks it.
inline constexpr bool child_before(uint64_t child, uint64_t parent) noexcept {
  return !is_node_tag(tag_of(child)) || node_offset(child) < node_offset(parent);
}

/// CPython's dict probe sequence over 1 << log2_slots slots.
struct Probe {
  uint64_t slot;
  uint64_t perturb;
  uint64_t mask;
  constexpr Probe(uint64_t hash, uint32_t log2_slots)
      : slot(hash & ((uint64_t{1} << log2_slots) - 1)),
        perturb(hash),
        mask((uint64_t{1} << log2_slots) - 1) {}
  constexpr void next() {
    perturb >>= 5;
    slot = (slot * 5 + perturb + 1) & mask;
  }
  /// The most probes a lookup makes before giving up on a (corrupt) table with no empty slot.
  constexpr uint64_t limit() const { return mask + 65; }
};

}  // namespace shoal::layout
