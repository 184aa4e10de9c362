// src/layout/dict_layout.hpp — a shared mutable dict (shoal::Dict): a heap whose root Ref names a
// DictHeader, which names the current DictTable. Design note: docs/design/dict.md.
//
// Everything lives in one shoal::Heap (include/shoal/heap.hpp); nothing is a pointer, every
// reference is a HeapRef, bounds-checked (Heap::at) before use.
//
//   heap root word ──> DictHeader (one block)        DictTable (one block, replaced on resize)
//                      magic, version, seed            magic, log2_slots, capacity, counts
//                      lock (recursive)                index: u32[1 << log2_slots]
//                      table ─────────────────────>    (padding to 16)
//                      gen, next_seq, stats            DictEntry[capacity]: hash, key, value, seq
//                      intent (one DictIntent)
//
// Items. A key or a value is one 64-bit item word in the codec's ref encoding
// (docs/design/codec.md): the low 4 bits are the tag. Tags 0..3 (None, False, True, an int in
// [-2**59, 2**59)) are inline. Node tags 4..14 are `HeapRef | tag`: the HeapRef (16-byte aligned,
// so its low 4 bits are free) names a heap block whose payload is exactly the codec's node for
// that tag: kFloat {f64, 0}, kBigInt {nbytes, 0, bytes}, kStr {nbytes, flags, utf8},
// kBytes/kPickle {nbytes, 0, bytes}. Three more node kinds, of this layout only (a container
// heap never holds a frozen container node, so their tags are free here):
//   kTuple / kFrozenSet  a tuple or frozenset key (or value): {nbytes, 0, image}, where image
//                        is a whole frozen image (docs/design/frozen.md) whose root is the
//                        tuple or frozenset, hashed with hash_seed (frozen::hash_of).
//   kObjectRefTag        a reference to another shoal object of the session: ObjectRefNode.
//                        While a node of this tag is used, the heap's root segment holds one
//                        broker reference to the object it names (Segment::add_reference),
//                        made before the node is stored and dropped once, after state is set
//                        to kRefDropped (R1-R3 below; docs/design/dict.md).
// Item 15 (kDeletedKey) in an entry's key word marks an erased entry.
//
// Index slot values: 0 empty; i + 1 names entry i. Erasing does not touch the index: the
// entry's key becomes kDeletedKey, so the slot acts as CPython's DKIX_DUMMY (probing goes on).
//
// counts: (nentries << 32) | used, one word, so that an insert becomes visible to lookups,
// iteration and size() in one store: nentries = entries appended so far (the append position),
// used = live entries (size()). A lookup ignores an index slot that names an entry >= nentries.
//
// Invariants (Dict::check verifies every one, after recovery; the fuzz target runs the
// read-only part, check_structure, on arbitrary bytes):
//   D1  header: magic == kDictMagic, version == kDictVersion, header_bytes ==
//       sizeof(DictHeader); written once by the creator before the heap's root word names it.
//   D2  table: magic == kDictTableMagic, kDictMinLog2 <= log2_slots <= kDictMaxLog2, capacity ==
//       dict_capacity(log2_slots), the block holds dict_table_bytes(log2_slots) bytes.
//   D3  nentries <= capacity; used == the entries in [0, nentries) whose key is not deleted.
//   D4  every index slot is 0 or names an entry < nentries; every entry < nentries is named by
//       exactly one slot, found by probing its hash (CPython's probe, layout::Probe) before any
//       empty slot.
//   D5  a live entry's key is hashable and decodable, hash == the codec's hash of it with
//       hash_seed, and no two live keys are equal (Python's ==: 1 == 1.0 == True).
//   D6  seq strictly increases over the entries [0, nentries); every seq < next_seq.
//   D7  at rest (lock free, or recovered) intent.op == kDictIdle.
//   D8  every used block of the heap is the header, the table, or a node of a live entry's key
//       or value; no block is pending.
//   D9  pop_hint == 0, or every entry in [pop_hint - 1, nentries) is erased (popitem's scan
//       starts below it; an insert clears it before its linearising store).
//   R1  every used kObjectRefTag node whose state is kRefHeld stands for one broker
//       reference from the root segment to its object: the object is alive while the node is.
//   R2  a node's state becomes kRefDropped (under the lock) before its reference is dropped,
//       and a node in state kRefDropped is never read as a live value (it is unreachable from
//       the table by then): a death between the two steps leaves one reference too many
//       (the object lives as long as the dict), never one too few.
//   R3  a reference is added before its node can become visible (before the intent of the
//       write that stores it): a value never names an object the dict does not hold.
// Who writes what: everything but `gen` readers' loads is written under `lock` (a
// RecursiveMutexState, with the protocol of sync's RecursiveMutex: src/sync/recursive_lock.hpp).
// Readers take no lock: they load gen (acquire), read, and retry when gen changed (the writer bumps gen,
// then a release fence, before every free of a block a reader may be reading). A reader
// never waits, and a dead writer leaves no state a reader has to wait out.
// Crash consistency: every operation records its intent (what, where, which new blocks, which
// old ones) before its first visible store; each operation has one linearising store; the next
// lock holder (told kOwnerDied) completes an operation whose linearising store happened and
// rolls back one whose store did not (docs/design/dict.md, step by step).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "layout/robust_mutex_layout.hpp"
#include "shoal/detail/frozen_format.hpp"
#include "layout/sync_layout.hpp"

namespace shoal::layout {

inline constexpr uint64_t kDictMagic = 0x5443444C414F4853;       // "SHOALDCT" on disk
inline constexpr uint64_t kDictTableMagic = 0x4254444C414F4853;  // "SHOALDTB" on disk
// Version 1 (7f78bc3) was the first dict: a 160-byte header whose lock was a RobustMutexWord
// plus owner_tid and depth, no pop_hint, and items of None, bool, int, float, str and bytes.
// Version 2 is everything since, which a version-1 build would misread or break instead of
// refusing: the lock became a RecursiveMutexState (header 176 bytes, e6b6ca7); the table's
// pop_hint (D9, b8b584e), which a version-1 writer would not clear on insert, so that popitem
// skipped the new entry; and item tags a version-1 build does not know: kPickle values
// (9888742), and kObjectRefTag values, kTuple/kFrozenSet nodes and keys of ints beyond 64 bits
// (9ba0512) -- a version-1 writer would free a reference's node without dropping the broker
// reference it stands for (R1). Bump on any change a build of the current version would misread:
// a field given a meaning, an item tag, a step of the writers' protocol.
inline constexpr uint32_t kDictVersion = 2;
inline constexpr uint32_t kDictMinLog2 = 3;   // 8 slots, 5 entries
inline constexpr uint32_t kDictMaxLog2 = 31;  // index values and counts fit 32 bits
inline constexpr uint64_t kDeletedKey = 15;   // the codec's empty-key word: no item has it
static_assert((kDeletedKey & 15) == 15, "tag 15 is the one tag no stored item has");

/// The item tag of a reference to another shoal object (Tag::kDict: no frozen dict node is
/// ever stored in a container heap).
inline constexpr Tag kObjectRefTag = Tag::kDict;
inline constexpr uint64_t kRefHeld = 0;
inline constexpr uint64_t kRefDropped = 1;

/// The block of a kObjectRefTag item: the node's two fixed words, then what names the object.
struct ObjectRefNode {
  uint64_t nbytes;             // 32: the bytes after the fixed words
  std::atomic<uint64_t> state;  // kRefHeld, then kRefDropped before the drop (R2)
  uint64_t object_hi;          // the object's id
  uint64_t object_lo;
  uint64_t size;               // its usable bytes (a handle's size field)
  uint32_t kind;               // its ObjectKind
  uint32_t reserved;           // 0
};
static_assert(sizeof(ObjectRefNode) == 48);
inline constexpr uint64_t kObjectRefPayload = sizeof(ObjectRefNode) - kNodeFixedSize;

/// The operation an intent record describes.
enum DictOp : uint32_t {
  kDictIdle = 0,
  kDictInsert = 1,     // a new entry appended, its index slot set, counts stored (linearises)
  kDictOverwrite = 2,  // entry.value replaced (linearises), the old value freed
  kDictErase = 3,      // entry.key = kDeletedKey (linearises), used - 1, key and value freed
  kDictResize = 4,     // header.table = new_table (linearises), the old table block freed
  kDictClear = 5,      // header.table = new_table (linearises), every old node and the table freed
};

struct DictEntry {
  std::atomic<uint64_t> hash;   // the key's hash (codec rules, header.hash_seed)
  std::atomic<uint64_t> key;    // an item, or kDeletedKey
  std::atomic<uint64_t> value;  // an item (meaningless once the key is deleted)
  std::atomic<uint64_t> seq;    // insertion number: iteration order across resizes (D6)
};
static_assert(sizeof(DictEntry) == 32);

struct DictTable {
  uint64_t magic;      // kDictTableMagic
  uint32_t log2_slots;  // the index has 1 << log2_slots u32 slots
  uint32_t reserved0;  // 0
  uint64_t capacity;   // dict_capacity(log2_slots): entries the table has room for
  std::atomic<uint64_t> counts;  // (nentries << 32) | used
  std::atomic<uint64_t> pop_hint;  // writers only: 0, or i + 1 when entries [i, nentries) are all erased (D9)
  uint64_t reserved1[3];         // 0
  // std::atomic<uint32_t> index[1 << log2_slots]; then DictEntry entries[capacity] at
  // dict_entries_offset(log2_slots).
};
static_assert(sizeof(DictTable) == 64);

struct DictIntent {
  std::atomic<uint32_t> op;  // DictOp; stored last when an operation begins (release)
  uint32_t pid;              // the writer's pid (its pending blocks are its own)
  uint64_t table;            // the table the operation began on
  uint64_t new_table;        // resize, clear: the table published
  uint64_t entry;            // insert, overwrite, erase: the entry index
  uint64_t slot;             // insert: the index slot
  uint64_t key;              // insert: the new key item; erase: the key item erased
  uint64_t value;            // insert, overwrite: the new value item; erase: the value erased
  uint64_t old_value;        // overwrite: the value replaced
};
static_assert(sizeof(DictIntent) == 64);

struct DictStatsWords {  // updated under the lock, read without it (relaxed: a snapshot)
  std::atomic<uint64_t> recoveries;  // operations of dead writers completed or rolled back
  std::atomic<uint64_t> resizes;     // tables replaced (grow, shrink, compact, clear)
  std::atomic<uint64_t> reserved[2];
};

struct DictHeader {
  uint64_t magic;         // kDictMagic
  uint32_t version;       // kDictVersion
  uint32_t header_bytes;  // sizeof(DictHeader)
  uint64_t hash_seed;     // seed of the str/bytes hash (frozen::kDefaultHashSeed by default)
  RecursiveMutexState lock;  // the write lock (sync_layout.hpp, src/sync/recursive_lock.hpp)
  std::atomic<uint64_t> table;      // the current DictTable's Ref
  std::atomic<uint64_t> gen;        // bumped before every free a reader could be reading
  std::atomic<uint64_t> next_seq;   // the next entry's seq
  DictStatsWords stats;
  DictIntent intent;
};
static_assert(std::is_standard_layout_v<DictHeader>);
static_assert(sizeof(DictHeader) == 176, "layout is ABI: bump kDictVersion");
static_assert(std::atomic<uint64_t>::is_always_lock_free && std::atomic<uint32_t>::is_always_lock_free);

/// Entries a table of 1 << log2 slots holds: two thirds of the slots (CPython's USABLE_FRACTION).
inline constexpr uint64_t dict_capacity(uint32_t log2) noexcept {
  return ((uint64_t{1} << log2) * 2) / 3;
}
inline constexpr uint64_t dict_entries_offset(uint32_t log2) noexcept {
  return (sizeof(DictTable) + (uint64_t{4} << log2) + 15) & ~uint64_t{15};
}
inline constexpr uint64_t dict_table_bytes(uint32_t log2) noexcept {
  return dict_entries_offset(log2) + dict_capacity(log2) * sizeof(DictEntry);
}
inline constexpr uint64_t dict_counts(uint64_t nentries, uint64_t used) noexcept {
  return (nentries << 32) | used;
}
inline constexpr uint64_t dict_nentries(uint64_t counts) noexcept { return counts >> 32; }
inline constexpr uint64_t dict_used(uint64_t counts) noexcept { return counts & 0xffff'ffffu; }

}  // namespace shoal::layout
