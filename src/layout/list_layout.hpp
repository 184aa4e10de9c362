// src/layout/list_layout.hpp — a shared mutable list (shoal::List): a heap whose root Ref names a
// ListHeader, which names the current ListArray. Design note: docs/design/list.md.
//
// Everything lives in one shoal::Heap (include/shoal/heap.hpp); nothing is a pointer, every
// reference is a HeapRef, bounds-checked (Heap::at) before use.
//
//   heap root word ──> ListHeader (one block)        ListArray (one block, replaced by
//                      magic, version                  every operation that moves elements)
//                      lock (recursive)                magic, capacity, size
//                      array ─────────────────────>    item words[capacity]
//                      gen, stats
//                      intent (one ListIntent)
//
// Items. An element is one 64-bit item word, exactly as a shoal::Dict's value (the "Items"
// section of src/layout/dict_layout.hpp; src/containers/item_core.hpp encodes and decodes them):
// inline (None, bool, a small int) or `HeapRef | tag` naming a node block of its own. No two
// elements share a node block, so an element's block is freed exactly when it leaves the list.
//
// Invariants (List::check verifies every one, after recovery; the fuzz target runs the
// read-only part, check_list_structure, on arbitrary bytes):
//   L1  header: magic == kListMagic, version == kListVersion, header_bytes ==
//       sizeof(ListHeader); written once by the creator before the heap's root word names it.
//   L2  array: 16-byte aligned, magic == kListArrayMagic, kListMinCapacity <= capacity <=
//       kListMaxCapacity, the block holds list_array_bytes(capacity) bytes.
//   L3  size <= capacity; the words [0, size) are the elements, in order; words at and above
//       size are meaningless.
//   L4  every element is an item of a known tag (never tag 15); a node element's block is a
//       valid node of that tag.
//   L5  no two elements name the same node block.
//   L6  at rest (lock free, or recovered) intent.op == kListIdle.
//   L7  every used block of the heap is the header, the array, or an element's node; no block
//       is pending.
// Who writes what: everything but readers' loads of `gen` is written under `lock` (a
// RecursiveMutexState, with the protocol of sync's RecursiveMutex: src/sync/recursive_lock.hpp).
// Readers take no lock: they load gen (acquire), read, and retry when gen changed (the writer
// bumps gen, then a fence, before every free of a block a reader may be reading). A reader never
// waits, and a dead writer leaves no state a reader has to wait out.
// Crash consistency: every operation records its intent before its first visible store and has
// one linearising store (an element word, the array's size, or the header's array Ref); the next
// lock holder (told kOwnerDied) completes an operation whose linearising store happened and rolls
// back one whose store did not (docs/design/list.md, step by step).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "layout/robust_mutex_layout.hpp"
#include "layout/sync_layout.hpp"

namespace shoal::layout {

inline constexpr uint64_t kListMagic = 0x54534C4C414F4853;       // "SHOALLST" on disk
inline constexpr uint64_t kListArrayMagic = 0x52414C4C414F4853;  // "SHOALLAR" on disk
// Version 1 (36ade4d) was the first list: elements of None, bool, int, float, str, bytes and
// pickles, and writers that bumped gen only before their linearising store. Version 2 is what
// came after, which a version-1 build would misread or break instead of refusing: elements that
// are kObjectRefTag references to other shoal objects (R1-R3 of dict_layout.hpp) or
// kTuple/kFrozenSet nodes (27b0165), tags a version-1 build does not know (its writers would free
// a reference's node without dropping the broker reference it stands for); and writers that bump
// gen again after the linearising store, before freeing what it unlinked (84f38da), without which
// a reader could copy an element while it is freed and reused. Bump on any change a build of the
// current version would misread: a field given a meaning, an item tag, a step of the protocol.
inline constexpr uint32_t kListVersion = 2;
inline constexpr uint64_t kListMinCapacity = 8;
inline constexpr uint64_t kListMaxCapacity = uint64_t{1} << 32;  // 32 GiB of item words

/// The operation an intent record describes.
enum ListOp : uint32_t {
  kListIdle = 0,
  kListAppend = 1,   // words[index .. index + count) written, then size = index + count (linearises)
  kListSet = 2,      // words[index] = item (linearises), old_item freed
  kListPop = 3,      // size = index (linearises), old_item (the element at index) freed
  kListReplace = 4,  // header.array = new_array (linearises); the elements of the old array that
                     // the new one does not hold are freed, then the old array
};

struct ListArray {
  uint64_t magic;                // kListArrayMagic
  uint64_t capacity;             // item words the block holds
  std::atomic<uint64_t> size;    // elements: words [0, size)
  uint64_t reserved;             // 0
  // std::atomic<uint64_t> words[capacity];
};
static_assert(sizeof(ListArray) == 32);

struct ListIntent {
  std::atomic<uint32_t> op;  // ListOp; stored last when an operation begins (release)
  uint32_t pid;              // the writer's pid (its pending blocks are its own)
  uint64_t array;            // the array the operation began on
  uint64_t new_array;        // replace: the array published
  uint64_t index;            // append, set, pop: the element index
  uint64_t count;            // append: elements appended
  uint64_t item;             // set: the new item
  uint64_t old_item;         // set, pop: the element replaced or removed
  uint64_t reserved;
};
static_assert(sizeof(ListIntent) == 64);

struct ListStatsWords {  // updated under the lock, read without it (relaxed: a snapshot)
  std::atomic<uint64_t> recoveries;  // operations of dead writers completed or rolled back
  std::atomic<uint64_t> replaces;    // arrays replaced (grow, shrink, insert, delete, slices...)
  std::atomic<uint64_t> reserved[2];
};

struct ListHeader {
  uint64_t magic;         // kListMagic
  uint32_t version;       // kListVersion
  uint32_t header_bytes;  // sizeof(ListHeader)
  uint64_t reserved0;     // 0
  RecursiveMutexState lock;  // the write lock (sync_layout.hpp, src/sync/recursive_lock.hpp)
  std::atomic<uint64_t> array;  // the current ListArray's Ref
  std::atomic<uint64_t> gen;    // bumped before every free a reader could be reading
  uint64_t reserved1;           // 0
  ListStatsWords stats;
  ListIntent intent;
};
static_assert(std::is_standard_layout_v<ListHeader>);
static_assert(sizeof(ListHeader) == 176, "layout is ABI: bump kListVersion");

inline constexpr uint64_t list_array_bytes(uint64_t capacity) noexcept {
  return sizeof(ListArray) + capacity * 8;
}

}  // namespace shoal::layout
