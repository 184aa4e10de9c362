// src/layout/heap_layout.hpp — a heap: a growable object made of extents, with an allocator of
// variable-sized blocks inside it. Design note: docs/design/heap.md.
//
// A heap is one root segment (kind "heap") plus up to kHeapMaxExtents-1 more segments (kind
// "extent"), each one memfd of fixed size, added as the heap grows and referenced by the root
// (Segment::add_reference), so the broker frees them with the root. Extent 0 is the root
// itself. Every process maps each extent at its own address, on first use, so nothing in a
// heap is a pointer: a block is named by a Ref, 64 bits:
//
//   63        48 47                                         0
//   +-----------+--------------------------------------------+
//   | extent    | offset of the block's payload in the       |
//   | index     | extent's data area (after its 64-byte      |
//   |           | segment header)                            |
//   +-----------+--------------------------------------------+
//
// Ref 0 is null (extent 0's offset 0 is this header, never a payload).
//
// The root's data area:
//
//   0                 sizeof(HeapHeader)                      arena_begin        data size
//   +-----------------+---------------------------------------+------------------+
//   | HeapHeader      | ExtentEntry[kHeapMaxExtents]          | blocks ...       |
//   +-----------------+---------------------------------------+------------------+
//
// An extent's data area is blocks from its entry's arena_begin (0 for extents > 0) up to its
// entry's `used`. A new extent's whole arena becomes one free block as soon as it is published
// (`used` then moves to its end, rounded down to 16, and stays there). Blocks tile
// [arena_begin, used) exactly: each starts with a BlockHeader whose size (a multiple of 16, at
// least 32) leads to the next. A free block's payload holds its bin list links (FreeLinks).
//
// Invariants (Heap::check verifies every one; the fuzz target feeds it arbitrary bytes):
//   H1  magic == kHeapMagic, version == kHeapVersion, header_bytes == sizeof(HeapHeader),
//       max_extents == kHeapMaxExtents, arena_begin == kHeapArenaBegin: written once by the
//       creator before the root's segment is published, never again.
//   H2  1 <= extent_count <= max_extents. Entry i < extent_count was written completely before
//       extent_count was raised past i (release store); an entry never changes afterwards,
//       except `used`, which the lock holder moves once, from arena_begin to the arena's end.
//   H3  Blocks tile [arena_begin, used) of every extent: size % 16 == 0, size >= 32, and
//       offset + size <= used. prev_size16 * 16 is the size of the block before (0 for the
//       first block); a stale prev_size16 is repaired by recovery (it is derived).
//   H4  A block is free (flag kBlockUsed clear) or used. Every free block outside a
//       recovery is in exactly one bin list, the bin of its size; no used block is in one.
//       Two free blocks are never adjacent (free coalesces) outside a recovery.
//   H5  A used block with kBlockPending set belongs to the process `owner` until it calls
//       commit(); a pending block whose owner is dead is garbage, reclaimed by the next check.
//   H6  bin_bitmap bit b is set whenever bin b's list is non-empty; a set bit over an empty
//       list is allowed (stale: it costs a look at an empty list, never a wrong block).
// Who writes: everything but a used block's payload is written under `lock` (a RobustMutex),
// except commit()'s clearing of kBlockPending, one atomic RMW on the block's own size word.
// Every change to the tiling is one 8-byte store of a size word (split: the new tail's header
// first, then the head's size; coalesce: the surviving head's size; a new extent: its one
// block's header, then `used`), so a process that dies at any point leaves a walkable tiling;
// recovery (the next lock holder, told kOwnerDied) walks it and rebuilds the bins, the stats
// and prev_size16.
// Payloads of used blocks are the user's: the heap never reads them.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "layout/robust_mutex_layout.hpp"

namespace shoal::layout {

inline constexpr uint64_t kHeapMagic = 0x5045484C414F4853;  // "SHOALHEP" on disk
inline constexpr uint32_t kHeapVersion = 2;  // 2: RobustMutexWord as one 64-bit pair
inline constexpr uint32_t kHeapMaxExtents = 256;
inline constexpr uint32_t kHeapBins = 192;
inline constexpr uint64_t kBlockAlign = 16;
inline constexpr uint64_t kBlockHeaderBytes = 16;
inline constexpr uint64_t kMinBlockBytes = 32;  // header + FreeLinks
// One block never exceeds what prev_size16 can describe (2^32 * 16 = 64 GiB).
inline constexpr uint64_t kMaxBlockBytes = (uint64_t{1} << 36) - kBlockAlign;
inline constexpr int kRefExtentShift = 48;
inline constexpr uint64_t kRefOffsetMask = (uint64_t{1} << kRefExtentShift) - 1;

// size_flags: the block's size in bytes (a multiple of 16) | flags in the low 4 bits.
inline constexpr uint64_t kBlockUsed = 1u << 0;
inline constexpr uint64_t kBlockPending = 1u << 1;
inline constexpr uint64_t kBlockFlagMask = kBlockAlign - 1;
inline constexpr uint64_t kBlockKnownFlags = kBlockUsed | kBlockPending;

struct BlockHeader {
  std::atomic<uint64_t> size_flags;
  uint32_t prev_size16;  // size of the block before / 16; 0 for the first block of an extent
  uint32_t owner;        // the pid that allocated a pending block; 0 otherwise
};
static_assert(sizeof(BlockHeader) == kBlockHeaderBytes);

struct FreeLinks {  // the first 16 payload bytes of a free block
  uint64_t next;    // Ref of the next free block's payload in the same bin; 0 ends the list
  uint64_t prev;    // Ref of the previous one; 0 for the list's head
};

struct ExtentEntry {
  uint64_t object_hi;  // the extent segment's object id (0 for extent 0: the root itself)
  uint64_t object_lo;
  uint64_t bytes;        // the extent's data bytes (its segment's size)
  uint64_t arena_begin;  // offset of its first block
  std::atomic<uint64_t> used;  // end of the tiled part (H2, H3)
  uint64_t reserved;           // 0
};
static_assert(sizeof(ExtentEntry) == 48);

struct HeapStats {  // updated under the lock; read without it (relaxed: a snapshot)
  std::atomic<uint64_t> live_blocks;
  std::atomic<uint64_t> live_bytes;      // sum of used blocks' sizes, headers included
  std::atomic<uint64_t> allocations;
  std::atomic<uint64_t> frees;
  std::atomic<uint64_t> recoveries;      // times a lock holder found its predecessor dead
  std::atomic<uint64_t> reclaimed;       // pending blocks of dead owners freed by checks
  std::atomic<uint64_t> reserved_bytes;  // sum of the extents' sizes
};

struct HeapHeader {
  uint64_t magic;          // kHeapMagic
  uint32_t version;        // kHeapVersion
  uint32_t header_bytes;   // sizeof(HeapHeader)
  uint32_t max_extents;    // kHeapMaxExtents
  uint32_t reserved0;      // 0
  uint64_t arena_begin;    // kHeapArenaBegin: the root's first block
  RobustMutexWord lock;    // guards everything below but `root`
  std::atomic<uint32_t> extent_count;  // published extents (H2)
  uint32_t reserved1;                  // 0
  std::atomic<uint64_t> root;  // the user's root Ref (a container's top block); 0 = none
  uint64_t first_extent_bytes;  // the root's data size, the growth policy's unit
  HeapStats stats;
  uint64_t bin_bitmap[kHeapBins / 64];
  uint64_t bins[kHeapBins];  // Ref of the first free block of each size class; 0 = empty
};
static_assert(kHeapBins % 64 == 0);
static_assert(std::is_standard_layout_v<HeapHeader>);

inline constexpr uint64_t kHeapTableOffset = (sizeof(HeapHeader) + 63) & ~uint64_t{63};
inline constexpr uint64_t kHeapArenaBegin =
    (kHeapTableOffset + kHeapMaxExtents * sizeof(ExtentEntry) + 63) & ~uint64_t{63};

inline ExtentEntry* heap_extents(HeapHeader* h) noexcept {
  return reinterpret_cast<ExtentEntry*>(reinterpret_cast<std::byte*>(h) + kHeapTableOffset);
}

}  // namespace shoal::layout
