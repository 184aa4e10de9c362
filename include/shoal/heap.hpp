// include/shoal/heap.hpp — a growable object with an allocator of variable-sized blocks inside.
//
// A Heap is shared memory that grows while other processes read it: a root segment plus
// extents (more segments, added as it grows, each mapped by a process the first time it reads
// it). Blocks from 1 byte to many MiB are allocated and freed from any process of the session
// and named by a HeapRef, a 64-bit offset that means the same in every process (each maps the
// extents at its own address). The containers and channels of shoal are built on it.
//
//   shoal::Heap h = shoal::Heap::create();
//   shoal::HeapRef r = h.allocate(100);         // 100 usable bytes, 16-byte aligned
//   std::memcpy(h.at(r, 100), "...", 4);
//   std::string text = h.handle();               // to another process:
//   shoal::Heap same = shoal::Heap::attach(text);
//   same.at(r, 100);                             // the same bytes
//   same.free(r);
//
// Lifetime: the root is an ordinary object (handles, pins, holders: shoal/segment.hpp); it
// references its extents, so the broker frees them with it. Growth beyond what the machine
// can give (MemAvailable, the cgroup, SHOAL_MAX_BYTES) throws OutOfSpaceError before anything
// is added. The allocator's state lives in the root, under a lock that survives a holder that
// dies: the next process to take it rebuilds the free lists from the blocks themselves, so a
// SIGKILL in the middle of an allocation never corrupts the heap. A block allocated as
// pending by a process that died before commit() is reclaimed by the next check. Layout and
// invariants: src/layout/heap_layout.hpp; design note: docs/design/heap.md.
//
// Concurrency: allocate/free/commit from any thread of any process. The bytes of a block are
// the user's: the heap does not synchronise access to them.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "shoal/segment.hpp"

namespace shoal {

/// A block of a heap: extent index (16 bits) and offset (48 bits); 0 is null.
using HeapRef = uint64_t;

namespace detail {
struct HeapState;
}

/// A snapshot of a heap's bookkeeping (check() walks it; stats() reads counters).
struct HeapReport {
  uint64_t extents = 0;
  uint64_t blocks = 0;
  uint64_t used_blocks = 0;
  uint64_t used_bytes = 0;      // the used blocks' sizes, headers included
  uint64_t free_blocks = 0;
  uint64_t free_bytes = 0;
  uint64_t pending_blocks = 0;  // allocated, not yet committed
  uint64_t tiled_bytes = 0;     // bytes the blocks cover
  uint64_t reserved_bytes = 0;  // the extents' sizes: the memory the heap holds
};

struct HeapStats {
  uint64_t extents = 0;
  uint64_t live_blocks = 0;
  uint64_t live_bytes = 0;      // used blocks' sizes, headers included
  uint64_t reserved_bytes = 0;  // the extents' sizes
  uint64_t allocations = 0;
  uint64_t frees = 0;
  uint64_t recoveries = 0;      // times a process found the lock's previous holder dead
  uint64_t reclaimed = 0;       // pending blocks of dead processes freed
};

class Heap {
 public:
  /// The overhead of a block: a 16-byte header, sizes rounded up to 16, at least 32 bytes.
  static constexpr uint64_t kBlockOverhead = 16;
  /// The largest block (payload) one allocation may ask for: 64 GiB less 64 KiB, so that its
  /// block, rounded up to a whole extent (64 KiB units), is still one block (prev sizes are
  /// 32-bit counts of 16 bytes).
  static constexpr uint64_t kMaxAllocation = (uint64_t{1} << 36) - (uint64_t{64} << 10) - 16;

  struct Options {
    /// The root segment's data size (header and extent table included: at least 16 KiB);
    /// later extents grow from it by a quarter of the heap's size each time, up to 256 MiB
    /// apiece, always in the root's session (whichever session the growing process is in).
    uint64_t initial_bytes = 256 * 1024;
  };

  /// A new, empty heap in this process's session. OutOfSpaceError if the root cannot be had.
  static Heap create(Options opts);
  static Heap create() { return create(Options{}); }
  /// The heap a handle names (from handle() in any process of the session). Throws as
  /// Segment::attach does, IncompatibleSegmentError for an object that is not a heap, and
  /// CorruptSegmentError for a root that fails its checks.
  static Heap attach(std::string_view handle);
  static Heap attach(Segment root);

  Heap() noexcept = default;
  bool valid() const noexcept { return s_ != nullptr; }

  /// A handle for sending (the root's; see Segment::handle).
  std::string handle(bool pin = true) const;
  /// The root segment (its id, session and handle are the heap's).
  const Segment& root_segment() const noexcept;

  /// A block of at least n usable bytes (n may be 0), 16-byte aligned, uninitialised.
  /// Adds an extent when no free block is large enough: OutOfSpaceError when the machine
  /// cannot give one (nothing is added then), InvalidArgumentError when n > kMaxAllocation.
  HeapRef allocate(uint64_t n);
  /// allocate(), but the block stays this process's until commit(): if the process dies
  /// first, the next check() or recovery frees it. For blocks that another structure links
  /// to: commit in the step that makes the block reachable.
  HeapRef allocate_pending(uint64_t n);
  void commit(HeapRef ref);
  /// Frees a block; neighbours that are free merge with it. InvalidArgumentError for a Ref
  /// that is not a used block (a double free is refused).
  void free(HeapRef ref);
  /// The usable bytes of a block (at least what was asked for).
  uint64_t usable_size(HeapRef ref) const;
  /// Whether `ref` names a block that is used and committed now: found by walking its extent's
  /// blocks under the lock (O(blocks of the extent)), so a Ref into the middle of another block,
  /// a free block or a pending one is false. For recoveries that must tell a block a dead
  /// process committed from memory that has since been freed or handed to a pending
  /// allocation (docs/design/queue.md); not for hot paths.
  bool committed_block(HeapRef ref);

  /// The address of `len` bytes at `ref` in this process, mapping the extent first if this
  /// process has not yet. CorruptSegmentError if they do not lie inside one published extent.
  /// Valid while this Heap (or a copy) lives.
  std::byte* at(HeapRef ref, uint64_t len) const;
  template <class T>
  T* as(HeapRef ref) const {
    return reinterpret_cast<T*>(at(ref, sizeof(T)));
  }

  /// A word in the root for the user's own root Ref (a container's top block), 0 at first.
  std::atomic<uint64_t>& root() const noexcept;

  HeapStats stats() const noexcept;
  /// Walks every extent and block, and checks the invariants of heap_layout.hpp under the
  /// lock. Frees pending blocks of dead processes first. CorruptSegmentError names the first
  /// failure.
  HeapReport check();
  uint32_t extent_count() const noexcept;

 private:
  explicit Heap(std::shared_ptr<detail::HeapState> s) noexcept : s_(std::move(s)) {}
  std::shared_ptr<detail::HeapState> s_;
};

}  // namespace shoal
