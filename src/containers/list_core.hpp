// src/containers/list_core.hpp — the read side of shoal::List over any memory (items:
// containers/item_core.hpp): the header and array checks, element reads, slice index
// arithmetic and the structure check (L1-L5 of src/layout/list_layout.hpp).
//
// Templates over `Mem` as in item_core.hpp: a shoal::Heap in the library, a byte buffer in the
// fuzz target (fuzz/list_fuzzer.cpp). Every offset read from the memory is checked before use; a
// corrupt structure throws CorruptSegmentError (or DecodeError), never crashes and never loops
// (every walk is bounded by the array's checked capacity).
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "containers/item_core.hpp"
#include "layout/list_layout.hpp"
#include "shoal/list.hpp"

namespace shoal::containers {

[[noreturn]] inline void list_corrupt(const std::string& what) { corrupt_in("list", what); }

struct ArrayView {
  uint64_t ref = 0;
  std::byte* base = nullptr;
  uint64_t capacity = 0;

  layout::ListArray* header() const noexcept { return reinterpret_cast<layout::ListArray*>(base); }
  std::atomic<uint64_t>* words() const noexcept {
    return reinterpret_cast<std::atomic<uint64_t>*>(base + sizeof(layout::ListArray));
  }
  // Racy reads (readers).
  uint64_t size() const noexcept { return racy_load64(&header()->size); }
  uint64_t word(uint64_t i) const noexcept { return racy_load64(words() + i); }
};

/// The array at `ref`, its header checked (L2).
template <class Mem>
ArrayView open_array(const Mem& mem, uint64_t ref) {
  if ((ref & 15) != 0) list_corrupt("an array Ref that is not 16-byte aligned");
  const std::byte* p = mem.at(ref, sizeof(layout::ListArray));
  if (racy_load64(p) != layout::kListArrayMagic) list_corrupt("an array without its magic");
  const uint64_t cap = racy_load64(p + 8);
  if (cap < layout::kListMinCapacity || cap > layout::kListMaxCapacity) {
    list_corrupt("an array of capacity " + std::to_string(cap));
  }
  ArrayView a;
  a.ref = ref;
  a.base = mem.at(ref, layout::list_array_bytes(cap));
  a.capacity = cap;
  return a;
}

/// The array's size, checked against its capacity (L3).
inline uint64_t checked_size(const ArrayView& a) {
  const uint64_t n = a.size();
  if (n > a.capacity) list_corrupt("L3: more elements than the array holds");
  return n;
}

/// The header at `top` (L1).
template <class Mem>
const layout::ListHeader* open_list_header(const Mem& mem, uint64_t top) {
  if ((top & 15) != 0) list_corrupt("L1: a header Ref that is not 16-byte aligned");
  const std::byte* hp = mem.at(top, sizeof(layout::ListHeader));
  const auto* h = reinterpret_cast<const layout::ListHeader*>(hp);
  if (racy_load64(&h->magic) != layout::kListMagic) list_corrupt("L1: the header's magic is wrong");
  if (racy_load32(&h->version) != layout::kListVersion ||
      racy_load32(&h->header_bytes) != sizeof(layout::ListHeader)) {
    list_corrupt("L1: the header's version or size is wrong");
  }
  return h;
}

/// Python's PySlice_AdjustIndices: the slice's first index, step and length over n elements.
struct SliceRange {
  int64_t start = 0;
  int64_t step = 1;
  uint64_t length = 0;
  uint64_t at(uint64_t k) const noexcept {
    return static_cast<uint64_t>(start + static_cast<int64_t>(k) * step);
  }
};
inline SliceRange slice_range(const Slice& s, uint64_t n64) {
  if (s.step == 0) throw_error(Errc::kInvalidArgument, "list: slice step cannot be zero");
  // Python's ints are unbounded; a step of INT64_MIN would overflow -step below.
  const int64_t step = std::max<int64_t>(s.step, -INT64_MAX);
  const int64_t n = static_cast<int64_t>(n64);
  auto adjust = [&](std::optional<int64_t> v, int64_t dflt, int64_t lo, int64_t hi) {
    if (!v) return dflt;
    int64_t x = *v;
    if (x < 0) {
      x = x < -n ? lo : x + n;  // x + n cannot overflow: x >= -n
      if (x < lo) x = lo;
    } else if (x >= n) {
      x = hi;
    }
    return x;
  };
  SliceRange r;
  r.step = step;
  int64_t start, stop;
  if (step > 0) {
    start = adjust(s.start, 0, 0, n);
    stop = adjust(s.stop, n, 0, n);
  } else {
    start = adjust(s.start, n - 1, -1, n - 1);
    stop = adjust(s.stop, -1, -1, n - 1);
  }
  r.start = start;
  if (step > 0) {
    r.length = stop > start ? static_cast<uint64_t>((stop - start - 1) / step + 1) : 0;
  } else {
    r.length = start > stop ? static_cast<uint64_t>((start - stop - 1) / (-step) + 1) : 0;
  }
  return r;
}

/// Whether an item word is one a list may hold (L4): a known tag, its node readable.
template <class Mem>
void check_element(const Mem& mem, uint64_t item, uint64_t i) {
  switch (layout::tag_of(item)) {
    case Tag::kNone:
    case Tag::kFalse:
    case Tag::kTrue:
    case Tag::kInt: return;
    case Tag::kFloat: (void)node_fixed(mem, item); return;
    case Tag::kBigInt:
    case Tag::kStr:
    case Tag::kBytes:
    case Tag::kPickle:
    case Tag::kTuple:
    case Tag::kFrozenSet: {
      uint64_t n = 0;
      (void)node_payload(mem, item, &n, "list");
      return;
    }
    case layout::kObjectRefTag: {  // R1, R2 (dict_layout.hpp): a live element's reference is held
      const std::byte* p = mem.at(item_ref(item), sizeof(layout::ObjectRefNode));
      if (racy_load64(p) != layout::kObjectRefPayload ||
          racy_load64(p + offsetof(layout::ObjectRefNode, state)) != layout::kRefHeld) {
        list_corrupt("R2: element " + std::to_string(i) + "'s object reference is not held");
      }
      return;
    }
    default:
      list_corrupt("L4: element " + std::to_string(i) + " has tag " +
                   std::to_string(static_cast<int>(layout::tag_of(item))) +
                   ", which this version does not store");
  }
}

/// What check_list_structure counted.
struct ListStructureReport {
  uint64_t size = 0;
  uint64_t capacity = 0;
  uint64_t node_blocks = 0;
};

/// L1-L5 on a quiet list (the caller holds the lock, or the memory is a fuzzer's buffer):
/// throws CorruptSegmentError (or DecodeError) naming the first failure. O(size log size).
template <class Mem>
ListStructureReport check_list_structure(const Mem& mem, uint64_t top) {
  const layout::ListHeader* h = open_list_header(mem, top);
  const ArrayView a = open_array(mem, racy_load64(&h->array));  // L2
  ListStructureReport r;
  r.capacity = a.capacity;
  r.size = checked_size(a);  // L3
  std::vector<uint64_t> nodes;
  for (uint64_t i = 0; i < r.size; ++i) {
    const uint64_t item = a.word(i);
    check_element(mem, item, i);  // L4
    if (item_has_node(item)) nodes.push_back(item_ref(item));
  }
  std::sort(nodes.begin(), nodes.end());
  if (std::adjacent_find(nodes.begin(), nodes.end()) != nodes.end()) {
    list_corrupt("L5: two elements name the same node block");
  }
  r.node_blocks = nodes.size();
  return r;
}

}  // namespace shoal::containers

namespace shoal::detail {
/// Test hook: when n > 0, this process SIGKILLs itself at the n-th point between two steps of
/// a list write or recovery (tests/cpp/multiprocess/list_test.cpp walks every point of every
/// operation). One relaxed load per step otherwise.
extern std::atomic<int64_t> list_kill_at;
}  // namespace shoal::detail
