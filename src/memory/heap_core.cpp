// src/memory/heap_core.cpp — the heap's allocator: segregated free lists with boundary-tag
// coalescing, over extents addressed by Ref. The layout, the invariants H1-H6 and what a
// process sees if the lock holder dies between any two steps: src/layout/heap_layout.hpp and
// docs/design/heap.md. Each step below that changes the tiling says why it is one store.
#include "memory/heap_core.hpp"

#include <algorithm>
#include <bit>
#include <cstring>

#include "platform/platform.hpp"

namespace shoal::memory {

using layout::BlockHeader;
using layout::ExtentEntry;
using layout::FreeLinks;
using layout::HeapHeader;
using layout::kBlockAlign;
using layout::kBlockFlagMask;
using layout::kBlockHeaderBytes;
using layout::kBlockKnownFlags;
using layout::kBlockPending;
using layout::kBlockUsed;
using layout::kHeapBins;
using layout::kMinBlockBytes;

namespace {

constexpr uint64_t make_ref(uint32_t extent, uint64_t header_off) noexcept {
  return (uint64_t{extent} << layout::kRefExtentShift) | (header_off + kBlockHeaderBytes);
}

// How many blocks of one large bin allocate looks at before it settles for the next bin up: a
// bound on the time under the lock, paid for with a little internal fragmentation.
constexpr int kFirstFitScan = 16;

std::string at(uint32_t extent, uint64_t off) {
  return " (extent " + std::to_string(extent) + ", offset " + std::to_string(off) + ")";
}

}  // namespace

uint32_t bin_of(uint64_t s) noexcept {
  if (s < 1024) return static_cast<uint32_t>(s / 16);
  const int e = 63 - std::countl_zero(s);
  const uint32_t sub = static_cast<uint32_t>((s >> (e - 2)) & 3);
  const uint32_t b = 64 + static_cast<uint32_t>(e - 10) * 4 + sub;
  return b < kHeapBins ? b : kHeapBins - 1;
}

uint64_t bin_floor(uint32_t b) noexcept {
  if (b < 64) return uint64_t{b} * 16;
  const uint32_t e = 10 + (b - 64) / 4;
  const uint64_t sub = (b - 64) % 4;
  return (uint64_t{1} << e) + sub * (uint64_t{1} << (e - 2));
}

uint64_t block_bytes_for(uint64_t n) noexcept {
  if (n > layout::kMaxBlockBytes) return 0;
  const uint64_t s = (n + kBlockHeaderBytes + kBlockAlign - 1) & ~(kBlockAlign - 1);
  return s < kMinBlockBytes ? kMinBlockBytes : s;
}

void format_heap_root(HeapHeader* h, uint64_t root_bytes) noexcept {
  // Zero-filled and private to its creator: plain stores, then extent_count with release.
  h->magic = layout::kHeapMagic;
  h->version = layout::kHeapVersion;
  h->header_bytes = sizeof(HeapHeader);
  h->max_extents = layout::kHeapMaxExtents;
  h->arena_begin = layout::kHeapArenaBegin;
  h->first_extent_bytes = root_bytes;
  ExtentEntry& e0 = layout::heap_extents(h)[0];
  e0.bytes = root_bytes;
  e0.arena_begin = layout::kHeapArenaBegin;
  e0.used.store(layout::kHeapArenaBegin, std::memory_order_relaxed);
  h->extent_count.store(1, std::memory_order_release);
}

Status validate_heap_header(const HeapHeader* h, uint64_t root_bytes) noexcept {
  if (root_bytes < layout::kHeapArenaBegin) {
    return {Errc::kCorrupt, "heap: the root segment has " + std::to_string(root_bytes) +
                                " bytes, fewer than its header and extent table"};
  }
  if (h->magic != layout::kHeapMagic) {
    return {Errc::kIncompatible, "heap: bad magic at offset 0: not a shoal heap"};
  }
  if (h->version != layout::kHeapVersion) {
    return {Errc::kIncompatible, "heap: format version " + std::to_string(h->version) +
                                     " at offset 8, this build reads " +
                                     std::to_string(layout::kHeapVersion)};
  }
  if (h->header_bytes != sizeof(HeapHeader) || h->max_extents != layout::kHeapMaxExtents ||
      h->arena_begin != layout::kHeapArenaBegin || h->reserved0 != 0 || h->reserved1 != 0) {
    return {Errc::kIncompatible, "heap: header size, extent table or arena offset differ from "
                                 "this build's (offsets 12-24): made by another shoal"};
  }
  const uint32_t n = h->extent_count.load(std::memory_order_acquire);
  if (n < 1 || n > layout::kHeapMaxExtents) {
    return {Errc::kCorrupt, "heap: extent count " + std::to_string(n) + " out of range"};
  }
  const ExtentEntry& e0 = layout::heap_extents(const_cast<HeapHeader*>(h))[0];
  if (e0.bytes != root_bytes || e0.arena_begin != layout::kHeapArenaBegin) {
    return {Errc::kCorrupt, "heap: extent 0 does not describe the root segment"};
  }
  return {};
}

Status HeapCore::header_check() const noexcept {
  const uint32_t n = h_->extent_count.load(std::memory_order_acquire);
  if (n < 1 || n > layout::kHeapMaxExtents) {
    return {Errc::kCorrupt, "heap: extent count " + std::to_string(n) + " out of range"};
  }
  return {};
}

Status HeapCore::extent_bounds(uint32_t i, std::byte** base, uint64_t* bytes, uint64_t* begin,
                               uint64_t* used) const noexcept {
  if (i >= h_->extent_count.load(std::memory_order_acquire)) {
    return {Errc::kCorrupt, "heap: extent " + std::to_string(i) + " is not published"};
  }
  const ExtentEntry& e = layout::heap_extents(h_)[i];
  uint64_t mapped = 0;
  std::byte* b = src_->extent(i, &mapped);
  if (b == nullptr) {
    return {Errc::kCorrupt, "heap: extent " + std::to_string(i) + " cannot be mapped"};
  }
  const uint64_t u = e.used.load(std::memory_order_acquire);
  if (e.bytes != mapped || e.arena_begin % kBlockAlign != 0 || e.arena_begin > u ||
      u > mapped || u % kBlockAlign != 0) {
    return {Errc::kCorrupt, "heap: extent " + std::to_string(i) +
                                "'s entry disagrees with its mapping (bytes, arena, used)"};
  }
  *base = b;
  *bytes = mapped;
  *begin = e.arena_begin;
  *used = u;
  return {};
}

bool HeapCore::try_block(uint32_t extent, uint64_t off, Block* out) const noexcept {
  // The hot path of every step that follows a link or a neighbour: no message is built here
  // (block_at builds one, on failure only).
  if (extent >= h_->extent_count.load(std::memory_order_acquire)) return false;
  uint64_t mapped = 0;
  std::byte* base = src_->extent(extent, &mapped);
  if (base == nullptr) return false;
  const ExtentEntry& e = layout::heap_extents(h_)[extent];
  const uint64_t used = e.used.load(std::memory_order_acquire);
  if (used > mapped || off < e.arena_begin || off % kBlockAlign != 0 || off >= used ||
      used - off < kMinBlockBytes) {
    return false;
  }
  auto* hdr = reinterpret_cast<BlockHeader*>(base + off);
  const uint64_t sf = hdr->size_flags.load(std::memory_order_acquire);
  const uint64_t size = sf & ~kBlockFlagMask;
  const uint64_t flags = sf & kBlockFlagMask;
  if (size < kMinBlockBytes || size > used - off || (flags & ~kBlockKnownFlags) != 0) return false;
  *out = Block{extent, off, hdr, size, flags};
  return true;
}

Result<HeapCore::Block> HeapCore::block_at(uint32_t extent, uint64_t off) const noexcept {
  Block b;
  if (try_block(extent, off, &b)) return b;
  std::byte* base = nullptr;
  uint64_t bytes = 0, begin = 0, used = 0;
  if (Status st = extent_bounds(extent, &base, &bytes, &begin, &used); !st) return st;
  if (off < begin || off % kBlockAlign != 0 || off >= used || used - off < kMinBlockBytes) {
    return Status{Errc::kCorrupt, "heap: no block can start here" + at(extent, off)};
  }
  const uint64_t sf = reinterpret_cast<BlockHeader*>(base + off)->size_flags.load();
  return Status{Errc::kCorrupt, "heap: block header holds size " +
                                    std::to_string(sf & ~kBlockFlagMask) + " and flags " +
                                    std::to_string(sf & kBlockFlagMask) + at(extent, off)};
}

Result<HeapCore::Block> HeapCore::block_of_ref(uint64_t ref) const noexcept {
  const uint64_t off = ref & layout::kRefOffsetMask;
  if (ref == 0 || off < kBlockHeaderBytes) {
    return Status{Errc::kInvalidArgument, "heap: a null or malformed Ref"};
  }
  return block_at(static_cast<uint32_t>(ref >> layout::kRefExtentShift), off - kBlockHeaderBytes);
}

bool HeapCore::committed_block_locked(uint64_t ref) const noexcept {
  const uint64_t target = ref & layout::kRefOffsetMask;
  const uint32_t extent = static_cast<uint32_t>(ref >> layout::kRefExtentShift);
  if (ref == 0 || target < kBlockHeaderBytes) return false;
  std::byte* base = nullptr;
  uint64_t bytes = 0, begin = 0, used = 0;
  if (!extent_bounds(extent, &base, &bytes, &begin, &used)) return false;
  Block b;
  for (uint64_t off = begin; off < used && off <= target - kBlockHeaderBytes; off += b.size) {
    if (!try_block(extent, off, &b)) return false;  // a broken tiling: say no (leak, not free)
    if (off == target - kBlockHeaderBytes) {
      return (b.flags & kBlockUsed) != 0 && (b.flags & kBlockPending) == 0;
    }
  }
  return false;
}

FreeLinks* HeapCore::links(const Block& b) const noexcept {
  return reinterpret_cast<FreeLinks*>(reinterpret_cast<std::byte*>(b.hdr) + kBlockHeaderBytes);
}

std::byte* HeapCore::payload(uint64_t ref, uint64_t len) const noexcept {
  auto b = block_of_ref(ref);
  if (!b) return nullptr;
  const Block& blk = b.value();
  if (len > blk.size - kBlockHeaderBytes) return nullptr;
  return reinterpret_cast<std::byte*>(blk.hdr) + kBlockHeaderBytes;
}

Result<uint64_t> HeapCore::usable_size(uint64_t ref) const noexcept {
  auto b = block_of_ref(ref);
  if (!b) return b.status();
  if ((b.value().flags & kBlockUsed) == 0) {
    return Status{Errc::kInvalidArgument, "heap: the Ref names a free block"};
  }
  return b.value().size - kBlockHeaderBytes;
}

// ---- bins (under the lock) ---------------------------------------------------------------
// A free block is in the list of bin_of(size). Links are Refs; every one read is checked by
// block_of_ref before use, so a corrupt list gives kCorrupt, and the caller repairs.

Status HeapCore::unlink_locked(const Block& b) noexcept {
  FreeLinks* l = links(b);
  const uint32_t bin = bin_of(b.size);
  if (l->prev == 0) {
    if (h_->bins[bin] != make_ref(b.extent, b.off)) {
      return {Errc::kCorrupt, "heap: a free block without a predecessor is not its bin's head" +
                                  at(b.extent, b.off)};
    }
    h_->bins[bin] = l->next;
  } else {
    auto p = block_of_ref(l->prev);
    if (!p || (p.value().flags & kBlockUsed) != 0) {
      return {Errc::kCorrupt, "heap: a free list's back link is broken" + at(b.extent, b.off)};
    }
    links(p.value())->next = l->next;
  }
  if (l->next != 0) {
    auto n = block_of_ref(l->next);
    if (!n || (n.value().flags & kBlockUsed) != 0) {
      return {Errc::kCorrupt, "heap: a free list's link is broken" + at(b.extent, b.off)};
    }
    links(n.value())->prev = l->prev;
  }
  if (h_->bins[bin] == 0) h_->bin_bitmap[bin / 64] &= ~(uint64_t{1} << (bin % 64));
  l->next = l->prev = 0;
  return {};
}

Status HeapCore::push_locked(const Block& b) noexcept {
  const uint32_t bin = bin_of(b.size);
  FreeLinks* l = links(b);
  const uint64_t ref = make_ref(b.extent, b.off);
  const uint64_t head = h_->bins[bin];
  l->prev = 0;
  l->next = head;
  if (head != 0) {
    auto n = block_of_ref(head);
    if (!n) return n.status();
    links(n.value())->prev = ref;
  }
  h_->bins[bin] = ref;
  h_->bin_bitmap[bin / 64] |= uint64_t{1} << (bin % 64);
  return {};
}

void HeapCore::set_prev_size_of_next_locked(const Block& b) noexcept {
  Block n;
  if (try_block(b.extent, b.off + b.size, &n)) {
    n.hdr->prev_size16 = static_cast<uint32_t>(b.size / kBlockAlign);
  }
}

Result<uint64_t> HeapCore::take_from_bins_locked(uint64_t size, Block* out) noexcept {
  uint32_t bin = bin_of(size);
  // Exact bins hold one size only; a large bin holds [floor(b), floor(b+1)): look at a few.
  if (bin >= 64) {
    uint64_t ref = h_->bins[bin];
    for (int seen = 0; ref != 0 && seen < kFirstFitScan; ++seen) {
      auto b = block_of_ref(ref);
      if (!b || (b.value().flags & kBlockUsed) != 0) {
        return Status{Errc::kCorrupt, "heap: a free list holds a used or broken block"};
      }
      if (b.value().size >= size) {
        *out = b.value();
        return ref;
      }
      ref = links(b.value())->next;
    }
    ++bin;
  }
  // The first non-empty bin at or above `bin`: any block there is large enough.
  for (uint32_t w = bin / 64; w < kHeapBins / 64; ++w) {
    uint64_t bits = h_->bin_bitmap[w];
    if (w == bin / 64) bits &= ~uint64_t{0} << (bin % 64);
    while (bits != 0) {
      const uint32_t b = w * 64 + static_cast<uint32_t>(std::countr_zero(bits));
      bits &= bits - 1;
      const uint64_t ref = h_->bins[b];
      if (ref == 0) {  // H6 allows a stale bit: clear it and go on
        h_->bin_bitmap[w] &= ~(uint64_t{1} << (b % 64));
        continue;
      }
      auto blk = block_of_ref(ref);
      if (!blk || (blk.value().flags & kBlockUsed) != 0 || blk.value().size < size) {
        return Status{Errc::kCorrupt, "heap: bin " + std::to_string(b) +
                                          " holds a used, broken or too small block"};
      }
      *out = blk.value();
      return ref;
    }
  }
  return uint64_t{0};
}

// Cuts b to `size` bytes, the rest becoming a free block. The tail's header is written first
// (inside b, where no walk looks), then b's size word: one store moves the tiling from "b" to
// "b, tail", so a death at any point leaves one of the two (H3).
Status HeapCore::split_locked(Block* b, uint64_t size) noexcept {
  const uint64_t rest = b->size - size;
  if (rest < kMinBlockBytes) return {};
  auto* tail = reinterpret_cast<BlockHeader*>(reinterpret_cast<std::byte*>(b->hdr) + size);
  tail->prev_size16 = static_cast<uint32_t>(size / kBlockAlign);
  tail->owner = 0;
  tail->size_flags.store(rest, std::memory_order_relaxed);
  b->hdr->size_flags.store(size | b->flags, std::memory_order_release);
  b->size = size;
  Block t{b->extent, b->off + size, tail, rest, 0};
  set_prev_size_of_next_locked(t);
  return push_locked(t);
}

Result<uint64_t> HeapCore::allocate_locked(uint64_t n, uint32_t owner, uint64_t* need) noexcept {
  if (Status st = header_check(); !st) return st;
  const uint64_t size = block_bytes_for(n);
  if (size == 0) {
    return Status{Errc::kOutOfSpace, "heap: a block of " + std::to_string(n) +
                                         " bytes exceeds the largest a heap holds (64 GiB)"};
  }
  const uint64_t used_flags = kBlockUsed | (owner != 0 ? kBlockPending : 0);
  Block b;
  auto got = take_from_bins_locked(size, &b);
  if (!got) return got.status();
  if (got.value() != 0) {
    if (Status st = unlink_locked(b); !st) return st;
    if (Status st = split_locked(&b, size); !st) return st;
    b.hdr->owner = owner;
    b.hdr->size_flags.store(b.size | used_flags, std::memory_order_release);
  } else {
    *need = size;  // no free block is large enough: the caller adds an extent and retries
    return uint64_t{0};
  }
  h_->stats.live_blocks.fetch_add(1, std::memory_order_relaxed);
  h_->stats.live_bytes.fetch_add(b.size, std::memory_order_relaxed);
  h_->stats.allocations.fetch_add(1, std::memory_order_relaxed);
  return make_ref(b.extent, b.off);
}

Status HeapCore::commit(uint64_t ref) noexcept {
  auto b = block_of_ref(ref);
  if (!b) return b.status();
  if ((b.value().flags & kBlockUsed) == 0) {
    return {Errc::kInvalidArgument, "heap: commit of a free block"};
  }
  b.value().hdr->size_flags.fetch_and(~kBlockPending, std::memory_order_release);
  return {};
}

Status HeapCore::free_locked(uint64_t ref) noexcept {
  auto got = block_of_ref(ref);
  if (!got) return got.status();
  Block b = got.value();
  if ((b.flags & kBlockUsed) == 0) {
    return {Errc::kInvalidArgument, "heap: free of a block that is already free" +
                                        at(b.extent, b.off)};
  }
  h_->stats.live_blocks.fetch_sub(1, std::memory_order_relaxed);
  h_->stats.live_bytes.fetch_sub(b.size, std::memory_order_relaxed);
  h_->stats.frees.fetch_add(1, std::memory_order_relaxed);
  // Mark it free first (one store): from here a walk sees a free block not in any bin, which
  // recovery puts back; no step below can make a used block look free or vice versa.
  b.hdr->owner = 0;
  b.hdr->size_flags.store(b.size, std::memory_order_release);
  b.flags = 0;
  // The next block: absorbed if free (one store of b's size drops it from the tiling).
  if (Block n; try_block(b.extent, b.off + b.size, &n) && (n.flags & kBlockUsed) == 0) {
    if (Status st = unlink_locked(n); !st) return st;
    b.size += n.size;
    b.hdr->size_flags.store(b.size, std::memory_order_release);
  }
  // The block before: it absorbs b if free (one store of its size).
  if (b.hdr->prev_size16 != 0) {
    const uint64_t psize = uint64_t{b.hdr->prev_size16} * kBlockAlign;
    if (psize <= b.off) {
      Block p;
      if (try_block(b.extent, b.off - psize, &p) && p.size == psize &&
          (p.flags & kBlockUsed) == 0) {
        if (Status st = unlink_locked(p); !st) return st;
        Block m = p;
        m.size += b.size;
        m.hdr->size_flags.store(m.size, std::memory_order_release);
        b = m;
      }
    }
  }
  set_prev_size_of_next_locked(b);
  return push_locked(b);
}

Status HeapCore::init_extent_locked(uint32_t i) noexcept {
  std::byte* base = nullptr;
  uint64_t bytes = 0, begin = 0, used = 0;
  if (Status st = extent_bounds(i, &base, &bytes, &begin, &used); !st) return st;
  if (used != begin) return {Errc::kCorrupt, "heap: extent " + std::to_string(i) + " is not new"};
  // The whole arena becomes one free block: the header first, then `used` (one store makes
  // the block part of the tiling; a death before it leaves an empty extent, which is valid).
  const uint64_t whole = (bytes - begin) & ~(kBlockAlign - 1);
  if (whole > layout::kMaxBlockBytes) {
    return {Errc::kInvalidArgument, "heap: an extent larger than one block can describe"};
  }
  if (whole >= kMinBlockBytes) {
    auto* hdr = reinterpret_cast<BlockHeader*>(base + begin);
    hdr->prev_size16 = 0;
    hdr->owner = 0;
    hdr->size_flags.store(whole, std::memory_order_relaxed);
    layout::heap_extents(h_)[i].used.store(begin + whole, std::memory_order_release);
    if (Status st = push_locked(Block{i, begin, hdr, whole, 0}); !st) return st;
  }
  h_->stats.reserved_bytes.fetch_add(bytes, std::memory_order_relaxed);
  return {};
}

// ---- recovery and checking ----------------------------------------------------------------

Status HeapCore::recover_locked(bool reclaim_dead, uint64_t* reclaimed) noexcept {
  if (Status st = header_check(); !st) return st;
  std::memset(h_->bins, 0, sizeof h_->bins);
  std::memset(h_->bin_bitmap, 0, sizeof h_->bin_bitmap);
  uint64_t live_blocks = 0, live_bytes = 0, reserved = 0, freed = 0;
  const uint32_t n = h_->extent_count.load(std::memory_order_acquire);
  for (uint32_t i = 0; i < n; ++i) {
    std::byte* base = nullptr;
    uint64_t bytes = 0, begin = 0, used = 0;
    if (Status st = extent_bounds(i, &base, &bytes, &begin, &used); !st) return st;
    reserved += bytes;
    if (used == begin && bytes - begin >= kMinBlockBytes) {
      // Published by a process that died before it tiled it (grow's last two steps): tile it
      // now, as init_extent_locked would have: the header, then `used`.
      const uint64_t whole = std::min((bytes - begin) & ~(kBlockAlign - 1), layout::kMaxBlockBytes);
      auto* hdr = reinterpret_cast<BlockHeader*>(base + begin);
      hdr->prev_size16 = 0;
      hdr->owner = 0;
      hdr->size_flags.store(whole, std::memory_order_relaxed);
      layout::heap_extents(h_)[i].used.store(begin + whole, std::memory_order_release);
      used = begin + whole;
    }
    Block run{};  // the free run being built (size 0: none)
    uint64_t prev_size = 0;
    for (uint64_t off = begin; off < used;) {
      auto got = block_at(i, off);
      if (!got) return got.status();  // the tiling is broken: no process we know writes that
      Block b = got.value();
      b.hdr->prev_size16 = static_cast<uint32_t>(prev_size / kBlockAlign);
      if ((b.flags & kBlockPending) != 0 && reclaim_dead && b.hdr->owner != 0 &&
          platform::process_exited(static_cast<pid_t>(b.hdr->owner))) {
        b.hdr->owner = 0;
        b.hdr->size_flags.store(b.size, std::memory_order_release);  // H5: garbage, now free
        b.flags = 0;
        ++freed;
      }
      off += b.size;
      if ((b.flags & kBlockUsed) != 0) {
        if (run.size != 0) {
          if (Status st = push_locked(run); !st) return st;
          run = Block{};
        }
        ++live_blocks;
        live_bytes += b.size;
        prev_size = b.size;
      } else if (run.size != 0) {
        run.size += b.size;  // adjacent free blocks merge: one store of the run's size
        run.hdr->size_flags.store(run.size, std::memory_order_release);
        b.hdr = run.hdr;
        prev_size = run.size;
        // The block after the run gets the run's size as its prev size on the next turn.
      } else {
        if (b.flags != 0) b.hdr->size_flags.store(b.size, std::memory_order_release);
        run = b;
        run.flags = 0;
        prev_size = b.size;
      }
    }
    if (run.size != 0) {
      if (Status st = push_locked(run); !st) return st;
    }
  }
  h_->stats.live_blocks.store(live_blocks, std::memory_order_relaxed);
  h_->stats.live_bytes.store(live_bytes, std::memory_order_relaxed);
  h_->stats.reserved_bytes.store(reserved, std::memory_order_relaxed);
  h_->stats.reclaimed.fetch_add(freed, std::memory_order_relaxed);
  if (reclaimed != nullptr) *reclaimed = freed;
  return {};
}

Status HeapCore::check(CheckReport* report) const noexcept {
  CheckReport r;
  if (Status st = header_check(); !st) return st;
  const uint32_t n = h_->extent_count.load(std::memory_order_acquire);
  r.extents = n;
  for (uint32_t i = 0; i < n; ++i) {
    std::byte* base = nullptr;
    uint64_t bytes = 0, begin = 0, used = 0;
    if (Status st = extent_bounds(i, &base, &bytes, &begin, &used); !st) return st;
    r.reserved_bytes += bytes;
    r.tiled_bytes += used - begin;
    uint64_t prev_size = 0;
    bool prev_free = false;
    for (uint64_t off = begin; off < used;) {
      auto got = block_at(i, off);
      if (!got) return got.status();
      const Block& b = got.value();
      if (uint64_t{b.hdr->prev_size16} * kBlockAlign != prev_size) {
        return {Errc::kCorrupt, "heap: H3: prev size " +
                                    std::to_string(uint64_t{b.hdr->prev_size16} * kBlockAlign) +
                                    ", the block before has " + std::to_string(prev_size) +
                                    at(i, off)};
      }
      ++r.blocks;
      if ((b.flags & kBlockUsed) != 0) {
        ++r.used_blocks;
        r.used_bytes += b.size;
        if ((b.flags & kBlockPending) != 0) ++r.pending_blocks;
        prev_free = false;
      } else {
        if (prev_free) {
          return {Errc::kCorrupt, "heap: H4: two free blocks side by side" + at(i, off)};
        }
        if ((b.flags & kBlockPending) != 0) {
          return {Errc::kCorrupt, "heap: H5: a free block marked pending" + at(i, off)};
        }
        ++r.free_blocks;
        r.free_bytes += b.size;
        prev_free = true;
      }
      prev_size = b.size;
      off += b.size;
    }
  }
  // H4, H6: every bin's list holds free blocks of its class, linked both ways, and together
  // exactly the free blocks the walk found (bounded: a cycle cannot keep it looping).
  uint64_t listed = 0;
  for (uint32_t bin = 0; bin < kHeapBins; ++bin) {
    const bool bit = (h_->bin_bitmap[bin / 64] >> (bin % 64)) & 1;
    uint64_t ref = h_->bins[bin], prev = 0;
    if (ref != 0 && !bit) {
      return {Errc::kCorrupt, "heap: H6: bin " + std::to_string(bin) + " is not in the bitmap"};
    }
    while (ref != 0) {
      if (++listed > r.free_blocks) {
        return {Errc::kCorrupt, "heap: H4: the bins list more free blocks than the extents hold"};
      }
      auto b = block_of_ref(ref);
      if (!b) return b.status();
      if ((b.value().flags & kBlockUsed) != 0 || bin_of(b.value().size) != bin) {
        return {Errc::kCorrupt, "heap: H4: bin " + std::to_string(bin) +
                                    " lists a used block or one of another size"};
      }
      const FreeLinks* l = links(b.value());
      if (l->prev != prev) {
        return {Errc::kCorrupt, "heap: H4: a back link of bin " + std::to_string(bin) +
                                    " is wrong"};
      }
      prev = ref;
      ref = l->next;
    }
  }
  if (listed != r.free_blocks) {
    return {Errc::kCorrupt, "heap: H4: " + std::to_string(r.free_blocks) +
                                " free blocks, of which the bins list " + std::to_string(listed)};
  }
  if (report != nullptr) *report = r;
  return {};
}

}  // namespace shoal::memory
