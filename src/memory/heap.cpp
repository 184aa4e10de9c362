// src/memory/heap.cpp — shoal::Heap: the allocator of heap_core.cpp over real segments. The root
// is a segment of kind "heap"; each extent a segment of kind "extent" that the root references
// (Segment::add_reference), published in the root's extent table and mapped by each process on
// first use. Design note: docs/design/heap.md.
#include "shoal/heap.hpp"

#include <unistd.h>

#include <array>
#include <mutex>
#include <vector>

#include "layout/segment_layout.hpp"
#include "memory/heap_core.hpp"
#include "sync/robust_mutex.hpp"

namespace shoal {

namespace {

constexpr uint64_t kMinRootBytes = 16 * 1024;
constexpr uint64_t kMaxExtentStep = 256ull << 20;  // growth adds at most this much at a time
constexpr uint64_t kExtentRounding = 64 * 1024;
// Heap::kMaxAllocation's block, rounded to whole extent units, is one block (H3).
static_assert(((Heap::kMaxAllocation + layout::kBlockHeaderBytes + kExtentRounding - 1) /
               kExtentRounding * kExtentRounding) <= layout::kMaxBlockBytes);

}  // namespace

namespace detail {

// One process's view of a heap: the root, and the extents it has mapped so far. bases[i] is
// published (release) after segs[i] holds the mapping, so at() reads it without the mutex.
struct HeapState final : memory::ExtentSource {
  Segment root;
  layout::HeapHeader* h = nullptr;
  std::mutex mu;  // guards segs and the mapping of new extents
  std::vector<Segment> segs;
  std::array<std::atomic<std::byte*>, layout::kHeapMaxExtents> bases{};
  std::array<uint64_t, layout::kHeapMaxExtents> sizes{};
  memory::HeapCore core{nullptr, nullptr};

  std::byte* extent(uint32_t i, uint64_t* bytes) noexcept override {
    if (i >= layout::kHeapMaxExtents) return nullptr;
    if (std::byte* b = bases[i].load(std::memory_order_acquire)) {
      *bytes = sizes[i];
      return b;
    }
    return map_extent(i, bytes);
  }

  std::byte* map_extent(uint32_t i, uint64_t* bytes) noexcept {
    std::lock_guard<std::mutex> g(mu);
    if (std::byte* b = bases[i].load(std::memory_order_acquire)) {
      *bytes = sizes[i];
      return b;
    }
    // H2: the entry is complete once extent_count is past it (acquire pairs with the grower's
    // release store).
    if (i >= h->extent_count.load(std::memory_order_acquire)) return nullptr;
    const layout::ExtentEntry& e = layout::heap_extents(h)[i];
    Handle hd;
    hd.session = root.session();
    hd.object = Id128{e.object_hi, e.object_lo};
    hd.size = e.bytes;
    hd.kind = static_cast<uint32_t>(ObjectKind::kExtent);
    if (hd.object.is_zero() || hd.size == 0 || hd.size > layout::kMaxSegmentBytes) return nullptr;
    try {
      Segment s = Segment::attach(hd);
      if (s.size() != e.bytes || s.kind() != ObjectKind::kExtent) return nullptr;
      publish(i, std::move(s));
    } catch (...) {
      return nullptr;  // the caller reports the extent as unmappable (kCorrupt)
    }
    *bytes = sizes[i];
    return bases[i].load(std::memory_order_relaxed);
  }

  // Under mu (or before anyone else can see this state).
  void publish(uint32_t i, Segment s) {
    if (segs.size() <= i) segs.resize(i + 1);
    sizes[i] = s.size();
    std::byte* b = s.data();
    segs[i] = std::move(s);
    bases[i].store(b, std::memory_order_release);
  }

  sync::RobustMutex lock() noexcept { return sync::RobustMutex(&h->lock); }
};

}  // namespace detail

namespace {

using detail::HeapState;

[[noreturn]] void fail(const Status& st) {
  st.throw_if_error();
  throw_error(Errc::kCorrupt, "heap: an error without a code");
}

// Takes the heap's lock; a dead previous holder means the allocator state may be half
// changed: rebuild it from the blocks before anything else (docs/design/heap.md).
class HeapLock {
 public:
  explicit HeapLock(HeapState& s) : lock_(s.lock()) {
    if (lock_.owner_died()) {
      s.h->stats.recoveries.fetch_add(1, std::memory_order_relaxed);
      Status st = s.core.recover_locked(true, nullptr);
      if (!st) fail(st);
    }
  }

 private:
  sync::RobustLock lock_;
};

uint64_t round_up(uint64_t v, uint64_t unit) { return (v + unit - 1) / unit * unit; }

// Adds an extent able to hold a block of `need` bytes (under the heap's lock). Every step
// that can fail comes before the extent is published, so a failure adds nothing.
void grow_locked(HeapState& s, uint64_t need) {
  const uint32_t n = s.h->extent_count.load(std::memory_order_relaxed);
  if (n >= layout::kHeapMaxExtents) {
    throw_error(Errc::kOutOfSpace,
                "heap: all " + std::to_string(layout::kHeapMaxExtents) +
                    " extents are in use; free blocks or start a new heap");
  }
  const uint64_t reserved = s.h->stats.reserved_bytes.load(std::memory_order_relaxed);
  // A quarter of the heap: geometric (few extents) but with little reserved ahead of use. Half
  // the heap overshot issue 15's bound (2x the live data + 64 B per entry + 1 MiB) on small
  // dicts: one allocation that found no fitting free block added 50% at once.
  uint64_t step = std::min(std::max(reserved / 4, s.h->first_extent_bytes), kMaxExtentStep);
  const uint64_t bytes = round_up(std::max(step, need), kExtentRounding);
  // Throws OutOfSpaceError (capacity checked, pages reserved) before anything is added.
  // In the root's session, whichever session this process creates its own objects in (it may
  // have attached the heap from a handle of another): a reference joins one session's objects.
  Segment ext =
      Segment::create(bytes, Segment::Options{ObjectKind::kExtent, false, s.root.session()});
  // From here the broker frees the extent with the root. If this process dies before the
  // entry is published, it stays referenced but unused until the root goes (bounded: one).
  s.root.add_reference(ext);
  layout::ExtentEntry& e = layout::heap_extents(s.h)[n];
  e.object_hi = ext.id().hi;
  e.object_lo = ext.id().lo;
  e.bytes = ext.size();
  e.arena_begin = 0;
  e.used.store(0, std::memory_order_relaxed);
  e.reserved = 0;
  {
    std::lock_guard<std::mutex> g(s.mu);
    s.publish(n, std::move(ext));
  }
  s.h->extent_count.store(n + 1, std::memory_order_release);  // H2: the entry is complete
  Status st = s.core.init_extent_locked(n);
  if (!st) fail(st);
}

uint64_t allocate_impl(HeapState& s, uint64_t n, uint32_t owner) {
  if (n > Heap::kMaxAllocation) {
    throw_error(Errc::kInvalidArgument, "heap: " + std::to_string(n) +
                                            " bytes exceed the largest block (64 GiB)");
  }
  HeapLock g(s);
  bool repaired = false;
  for (;;) {
    uint64_t need = 0;
    auto r = s.core.allocate_locked(n, owner, &need);
    if (r && r.value() != 0) return r.value();
    if (r) {
      grow_locked(s, need);
      continue;
    }
    // A free list that fails its checks (another process wrote where it should not): rebuild
    // the lists from the blocks once, as after a dead holder, then try again.
    if (r.status().code() == Errc::kCorrupt && !repaired) {
      repaired = true;
      Status st = s.core.recover_locked(true, nullptr);
      if (st) continue;
      fail(st);
    }
    fail(r.status());
  }
}

}  // namespace

Heap Heap::create(Options opts) {
  const uint64_t bytes = std::max(round_up(opts.initial_bytes, layout::kBlockAlign), kMinRootBytes);
  Segment root = Segment::create(bytes, Segment::Options{ObjectKind::kHeap, false});
  // No other process knows the root's id yet: it is formatted before anything can read it.
  memory::format_heap_root(reinterpret_cast<layout::HeapHeader*>(root.data()), root.size());
  Heap heap = attach(std::move(root));
  HeapLock g(*heap.s_);
  Status st = heap.s_->core.init_extent_locked(0);
  if (!st) fail(st);
  return heap;
}

Heap Heap::attach(std::string_view handle) { return attach(Segment::attach(handle)); }

Heap Heap::attach(Segment root) {
  if (root.kind() != ObjectKind::kHeap) {
    const std::string_view kind = kind_name(static_cast<uint32_t>(root.kind()));
    throw_error(Errc::kIncompatible,
                "heap: the object is of kind " + std::string(kind) + ", not a heap");
  }
  auto s = std::make_shared<HeapState>();
  s->h = reinterpret_cast<layout::HeapHeader*>(root.data());
  if (Status st = memory::validate_heap_header(s->h, root.size()); !st) fail(st);
  s->core = memory::HeapCore(s->h, s.get());
  s->root = root;
  s->publish(0, std::move(root));
  return Heap(std::move(s));
}

std::string Heap::handle(bool pin) const { return s_->root.handle(pin); }
const Segment& Heap::root_segment() const noexcept { return s_->root; }

HeapRef Heap::allocate(uint64_t n) { return allocate_impl(*s_, n, 0); }

HeapRef Heap::allocate_pending(uint64_t n) {
  return allocate_impl(*s_, n, sync::self_pid());
}

void Heap::commit(HeapRef ref) {
  if (Status st = s_->core.commit(ref); !st) fail(st);
}

void Heap::free(HeapRef ref) {
  HeapLock g(*s_);
  if (Status st = s_->core.free_locked(ref); !st) fail(st);
}

uint64_t Heap::usable_size(HeapRef ref) const { return s_->core.usable_size(ref).take(); }

bool Heap::committed_block(HeapRef ref) {
  HeapLock g(*s_);
  return s_->core.committed_block_locked(ref);
}

std::byte* Heap::at(HeapRef ref, uint64_t len) const {
  const uint32_t i = static_cast<uint32_t>(ref >> layout::kRefExtentShift);
  const uint64_t off = ref & layout::kRefOffsetMask;
  if (i < layout::kHeapMaxExtents) {
    uint64_t bytes = 0;
    std::byte* base = s_->extent(i, &bytes);
    if (base != nullptr && off <= bytes && len <= bytes - off && ref != 0) return base + off;
  }
  throw_error(Errc::kCorrupt, "heap: Ref " + std::to_string(ref) + " with " +
                                  std::to_string(len) + " bytes lies in no published extent");
}

std::atomic<uint64_t>& Heap::root() const noexcept { return s_->h->root; }

uint32_t Heap::extent_count() const noexcept {
  return s_->h->extent_count.load(std::memory_order_acquire);
}

HeapStats Heap::stats() const noexcept {
  const layout::HeapStats& st = s_->h->stats;
  HeapStats r;
  r.extents = extent_count();
  r.live_blocks = st.live_blocks.load(std::memory_order_relaxed);
  r.live_bytes = st.live_bytes.load(std::memory_order_relaxed);
  r.reserved_bytes = st.reserved_bytes.load(std::memory_order_relaxed);
  r.allocations = st.allocations.load(std::memory_order_relaxed);
  r.frees = st.frees.load(std::memory_order_relaxed);
  r.recoveries = st.recoveries.load(std::memory_order_relaxed);
  r.reclaimed = st.reclaimed.load(std::memory_order_relaxed);
  return r;
}

HeapReport Heap::check() {
  HeapLock g(*s_);
  // Pending blocks of dead processes go first (H5), then the walk checks what is left. Only
  // a heap whose state is valid is rebuilt: check reports corruption rather than hiding it.
  HeapReport r;
  if (Status st = s_->core.check(&r); !st) fail(st);
  if (r.pending_blocks != 0) {
    if (Status st = s_->core.recover_locked(true, nullptr); !st) fail(st);
    if (Status st = s_->core.check(&r); !st) fail(st);
  }
  return r;
}

}  // namespace shoal
