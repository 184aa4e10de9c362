// src/memory/heap_core.hpp — the allocator of a heap, over extents some mapping provides.
//
// HeapCore knows the layout (src/layout/heap_layout.hpp) and nothing of segments or the broker:
// it is handed the root's header and a way to reach extent i's data area, so the same code runs
// over real segments (src/memory/heap.cpp), over plain memory in unit tests, and over fuzzed
// bytes (fuzz/heap_fuzzer.cpp). Every offset it reads from shared memory is bounds-checked
// against the extent it claims to be in; a value that fails gives kCorrupt, never a crash.
//
// Locking is the caller's: every *_locked function requires the heap's RobustMutex held by
// this process. check() takes no lock and only reads (a concurrent writer makes it report
// what it saw mid-change; tests call it when the heap is quiet).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "layout/heap_layout.hpp"
#include "shoal/error.hpp"
#include "shoal/heap.hpp"

namespace shoal::memory {

/// How a process reaches extent i: its data area and size, mapping it first if needed.
class ExtentSource {
 public:
  virtual ~ExtentSource() = default;
  /// Extent i's data area (bytes in *bytes), or nullptr if it cannot be mapped.
  virtual std::byte* extent(uint32_t i, uint64_t* bytes) noexcept = 0;
};

/// The size class of a block of `block_bytes` (a multiple of 16, >= 32): exact classes of 16
/// bytes below 1 KiB, then four classes per power of two.
uint32_t bin_of(uint64_t block_bytes) noexcept;
/// The smallest block size a bin holds.
uint64_t bin_floor(uint32_t bin) noexcept;
/// The block size that serves a request of n payload bytes (header added, rounded to 16).
uint64_t block_bytes_for(uint64_t n) noexcept;

using CheckReport = HeapReport;

class HeapCore {
 public:
  HeapCore(layout::HeapHeader* h, ExtentSource* src) noexcept : h_(h), src_(src) {}

  /// A block of at least n payload bytes, used, and pending for `owner` (H5) when owner != 0.
  /// 0 when no free block is large enough: *need is then the block size that would do, for
  /// the caller to add an extent (init_extent_locked) and retry.
  Result<uint64_t> allocate_locked(uint64_t n, uint32_t owner, uint64_t* need) noexcept;
  /// Frees a used block (coalescing with free neighbours). kInvalidArgument for a Ref that
  /// is not a used block's payload (a double free is refused, not obeyed).
  Status free_locked(uint64_t ref) noexcept;
  /// Clears a block's pending flag (no lock needed: one atomic store on the block's word).
  Status commit(uint64_t ref) noexcept;
  /// Extent `i` was just published (zero-filled, used == arena_begin): its whole arena
  /// becomes one free block, and its bytes are counted.
  Status init_extent_locked(uint32_t i) noexcept;
  /// Walks every extent and rebuilds what a dead lock holder may have left half done: bins,
  /// bitmap, prev sizes, statistics; merges adjacent free blocks; frees pending blocks whose
  /// owner process is dead (when reclaim_dead). kCorrupt if the tiling itself is broken.
  Status recover_locked(bool reclaim_dead, uint64_t* reclaimed) noexcept;
  /// Verifies H1-H6 without writing anything; the first failure is returned with its place.
  Status check(CheckReport* report) const noexcept;

  /// The payload of `ref` with at least `len` bytes inside one extent, or nullptr.
  std::byte* payload(uint64_t ref, uint64_t len) const noexcept;
  /// The usable payload bytes of a used block (its size minus the header).
  Result<uint64_t> usable_size(uint64_t ref) const noexcept;
  /// Whether `ref` is the payload of a block that starts there in its extent's tiling (found by
  /// walking the extent from its first block, so an address inside another block's payload is
  /// never taken for a header) and is used and not pending. Under the lock (the walk reads
  /// sizes that allocate and free change).
  bool committed_block_locked(uint64_t ref) const noexcept;

 private:
  struct Block {
    uint32_t extent = 0;
    uint64_t off = 0;  // of the header, in the extent's data area
    layout::BlockHeader* hdr = nullptr;
    uint64_t size = 0;
    uint64_t flags = 0;
  };
  Status header_check() const noexcept;
  bool try_block(uint32_t extent, uint64_t off, Block* out) const noexcept;
  Result<Block> block_at(uint32_t extent, uint64_t off) const noexcept;
  Result<Block> block_of_ref(uint64_t ref) const noexcept;
  layout::FreeLinks* links(const Block& b) const noexcept;
  Status unlink_locked(const Block& b) noexcept;
  Status push_locked(const Block& b) noexcept;
  Result<uint64_t> take_from_bins_locked(uint64_t size, Block* out) noexcept;
  void set_prev_size_of_next_locked(const Block& b) noexcept;
  Status split_locked(Block* b, uint64_t size) noexcept;
  Status extent_bounds(uint32_t i, std::byte** base, uint64_t* bytes, uint64_t* begin,
                       uint64_t* used) const noexcept;

  layout::HeapHeader* h_;
  ExtentSource* src_;
};

/// Writes a new heap's header and extent 0's entry (H1, H2) into the zero-filled data area of
/// its root, `root_bytes` long, before any other process can see it; init_extent_locked(0)
/// then makes the root's arena one free block.
void format_heap_root(layout::HeapHeader* h, uint64_t root_bytes) noexcept;

/// The header's own invariants (H1, H2's bounds): what attach checks before anything else.
Status validate_heap_header(const layout::HeapHeader* h, uint64_t root_bytes) noexcept;

}  // namespace shoal::memory
