// src/containers/list.cpp — shoal::List: the write protocol (under the list's robust recursive
// lock), recovery of a dead writer's operation, and the optimistic readers. Layout and
// invariants: src/layout/list_layout.hpp; the protocol step by step: docs/design/list.md.
#include "shoal/list.hpp"

#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <tuple>

#include "containers/container_common.hpp"
#include "containers/item_refs.hpp"
#include "containers/list_core.hpp"
#include "containers/write_lock.hpp"
#include "sync/recursive_lock.hpp"
#include "sync/robust_mutex.hpp"

namespace shoal {

namespace detail {
std::atomic<int64_t> list_kill_at{0};
}

using containers::ArrayView;
using containers::Encoded;
using containers::optimistic;
using layout::ListHeader;
using layout::ListIntent;

namespace {

// A point between two steps of a write (the test hook detail::list_kill_at).
inline void step() { containers::kill_point(detail::list_kill_at); }

ListHeader* header_of(const Heap& heap, uint64_t top) {
  return containers::header_at<ListHeader>(heap, top);
}

// The index i (negative: from the end) names among n elements, or -1.
int64_t normalize(int64_t i, uint64_t n) noexcept {
  const int64_t sn = static_cast<int64_t>(n);
  if (i < 0) i += sn;
  return i >= 0 && i < sn ? i : -1;
}

}  // namespace

// ---- the writer: everything here runs under the list's lock --------------------------------

class ListWriter : containers::ItemBlocks<detail::list_kill_at> {
 public:
  explicit ListWriter(List& l) : ItemBlocks(l.heap_), h_(header_of(l.heap_, l.top_)) {}

  ArrayView array() const {
    return containers::open_array(heap_, h_->array.load(std::memory_order_acquire));
  }
  static uint64_t size_of(const ArrayView& a) { return containers::checked_size(a); }
  static uint64_t word(const ArrayView& a, uint64_t i) {
    return a.words()[i].load(std::memory_order_relaxed);
  }

  // Gen protocol: bumped before every linearising store (so that a reader that saw any store of
  // an operation sees gen moved: its multi-word reads are snapshots), and again after that store
  // and before any free of memory a reader may be reading (retire_gen): a reader may have loaded
  // gen after the first bump and the old word before the store, and go on copying the old item
  // while it is freed and reused by the next write, whose own bump may come after that reader's
  // last gen check. The fence keeps the later stores after the bump for every reader that sees
  // them.
  void bump_gen() {
    h_->gen.fetch_add(1, std::memory_order_seq_cst);
#if !defined(__SANITIZE_THREAD__)
    std::atomic_thread_fence(std::memory_order_seq_cst);
#endif
  }
  // After an operation's linearising store, before it frees what that store unlinked.
  void retire_gen() { bump_gen(); }

  uint64_t store_item(const Item& v) {
    const uint64_t item = store_encoded(containers::encode_item(v, "list"));
    add_ref(v, item);  // R3; frees the node when it throws
    return item;
  }
  // All of vs stored (pending), or none (the stored ones freed) and the error thrown.
  std::vector<uint64_t> store_items(const std::vector<Item>& vs) {
    std::vector<uint64_t> out;
    out.reserve(vs.size());
    try {
      for (const Item& v : vs) out.push_back(store_item(v));
    } catch (...) {
      for (uint64_t it : out) free_item(it);
      throw;
    }
    return out;
  }
  Item read(uint64_t item) {
    return containers::decode_item(heap_, item, [] { return true; }, "list");
  }

  HeapRef new_array(uint64_t capacity) {
    const uint64_t bytes = layout::list_array_bytes(capacity);
    const HeapRef ref = heap_.allocate_pending(bytes);
    std::byte* p = heap_.at(ref, bytes);
    std::memset(p, 0, sizeof(layout::ListArray));
    auto* a = reinterpret_cast<layout::ListArray*>(p);
    a->magic = layout::kListArrayMagic;
    a->capacity = capacity;
    return ref;
  }

  // The capacity of the array that holds n elements after an operation on an array of `cap`:
  // the same while n fits and fills a quarter of it, else room for 1.5 n (so appends are
  // amortised O(1) and a list that shrank gives memory back).
  static uint64_t capacity_for(uint64_t n, uint64_t cap) {
    if (n > layout::kListMaxCapacity) {
      throw_error(Errc::kOutOfSpace, "list: more than 2**32 elements");
    }
    if (n <= cap && (n >= cap / 4 || cap <= layout::kListMinCapacity)) return cap;
    return std::clamp<uint64_t>(n + n / 2, layout::kListMinCapacity, layout::kListMaxCapacity);
  }

  void begin(uint32_t op) {
    step();  // new blocks allocated (pending), nothing recorded
    h_->intent.pid = sync::self_pid();
    h_->intent.op.store(op, std::memory_order_release);  // after every field of the record
    step();
  }
  void end() {
    step();
    h_->intent.op.store(layout::kListIdle, std::memory_order_release);
  }

  // Publishes `words` as the list's elements in a new array (one store of the header's array
  // Ref). `added` are the items among them that are new (pending: committed here), `removed`
  // the old elements that are not among them (freed here). Throws before anything is recorded
  // (and frees `added`) when the new array cannot be allocated.
  void publish(const ArrayView& old, const std::vector<uint64_t>& words,
               const std::vector<uint64_t>& added, const std::vector<uint64_t>& removed) {
    HeapRef nref = 0;
    try {
      nref = new_array(capacity_for(words.size(), old.capacity));
    } catch (...) {
      for (uint64_t it : added) free_item(it);
      throw;
    }
    const ArrayView na = containers::open_array(heap_, nref);
    for (uint64_t i = 0; i < words.size(); ++i) {
      na.words()[i].store(words[i], std::memory_order_relaxed);
    }
    na.header()->size.store(words.size(), std::memory_order_relaxed);
    ListIntent& in = h_->intent;
    in.array = old.ref;
    in.new_array = nref;
    begin(layout::kListReplace);
    bump_gen();
    h_->array.store(nref, std::memory_order_release);  // linearises: readers use the new array
    step();
    heap_.commit(nref);
    step();
    for (uint64_t it : added) commit_item(it);
    step();
    h_->stats.replaces.fetch_add(1, std::memory_order_relaxed);
    retire_gen();
    for (uint64_t it : removed) {
      free_item(it);
      step();
    }
    heap_.free(old.ref);
    step();
    end();
  }

  // The elements of `a` as words.
  static std::vector<uint64_t> words_of(const ArrayView& a) {
    const uint64_t n = size_of(a);
    std::vector<uint64_t> w(n);
    for (uint64_t i = 0; i < n; ++i) w[i] = word(a, i);
    return w;
  }

  // Appends the (pending) items: in place when they fit (one store of size), else in a new
  // array. Frees them when it throws before anything is recorded.
  void append_items(const uint64_t* items, uint64_t k) {
    if (k == 0) return;
    const ArrayView a = array();
    const uint64_t n = size_of(a);
    if (n + k > a.capacity) {
      std::vector<uint64_t> w;
      std::vector<uint64_t> added(items, items + k);
      try {
        w = words_of(a);
        w.insert(w.end(), items, items + k);
      } catch (...) {
        for (uint64_t it : added) free_item(it);
        throw;
      }
      publish(a, w, added, {});
      return;
    }
    // Above size: no reader looks there (a reader that read a larger size before a pop sees
    // gen moved by that pop).
    for (uint64_t j = 0; j < k; ++j) a.words()[n + j].store(items[j], std::memory_order_relaxed);
    ListIntent& in = h_->intent;
    in.array = a.ref;
    in.index = n;
    in.count = k;
    begin(layout::kListAppend);
    bump_gen();
    a.header()->size.store(n + k, std::memory_order_release);  // linearises
    step();
    for (uint64_t j = 0; j < k; ++j) commit_item(items[j]);
    step();
    end();
  }

  void append(const Item& v) {
    const uint64_t it = store_item(v);
    append_items(&it, 1);
  }

  void extend(const std::vector<Item>& vs) {
    const std::vector<uint64_t> items = store_items(vs);
    append_items(items.data(), items.size());
  }

  void insert(int64_t i, const Item& v) {
    const ArrayView a = array();
    const uint64_t n = size_of(a);
    const int64_t sn = static_cast<int64_t>(n);
    if (i < 0) i = std::max<int64_t>(i + sn, 0);
    if (i >= sn) {
      append(v);
      return;
    }
    std::vector<uint64_t> w = words_of(a);
    const uint64_t it = store_item(v);
    try {
      w.insert(w.begin() + i, it);
    } catch (...) {
      free_item(it);
      throw;
    }
    publish(a, w, {it}, {});
  }

  bool set(int64_t i, const Item& v) {
    const ArrayView a = array();
    const int64_t idx = normalize(i, size_of(a));
    if (idx < 0) return false;
    const uint64_t nv = store_item(v);
    ListIntent& in = h_->intent;
    in.array = a.ref;
    in.index = static_cast<uint64_t>(idx);
    in.item = nv;
    in.old_item = word(a, in.index);
    begin(layout::kListSet);
    bump_gen();
    a.words()[in.index].store(nv, std::memory_order_release);  // linearises
    step();
    commit_item(nv);
    step();
    retire_gen();
    free_item(in.old_item);
    step();
    end();
    return true;
  }

  std::optional<Item> pop(int64_t i) {
    const ArrayView a = array();
    const uint64_t n = size_of(a);
    const int64_t idx = normalize(i, n);
    if (idx < 0) return std::nullopt;
    const uint64_t old = word(a, static_cast<uint64_t>(idx));
    Item out = read(old);
    // A reference comes back mapped before the list drops its own (it outlives the pop).
    if (auto* r = std::get_if<ObjectRef>(&out)) r->target = attach_object_ref(heap_, *r);
    erase_at(a, static_cast<uint64_t>(idx));
    return out;
  }

  // Removes the element at idx (< size): the last one in place (one store of size), another
  // by a new array.
  void erase_at(const ArrayView& a, uint64_t idx) {
    const uint64_t n = size_of(a);
    const uint64_t old = word(a, idx);
    if (idx + 1 == n) {
      ListIntent& in = h_->intent;
      in.array = a.ref;
      in.index = idx;
      in.old_item = old;
      begin(layout::kListPop);
      bump_gen();
      a.header()->size.store(idx, std::memory_order_release);  // linearises
      step();
      retire_gen();
      free_item(old);
      step();
      end();
      maybe_shrink();
      return;
    }
    std::vector<uint64_t> w = words_of(a);
    w.erase(w.begin() + static_cast<int64_t>(idx));
    publish(a, w, {}, {old});
  }

  // A list much smaller than its array moves to a smaller one (a separate operation after a
  // pop; skipped when the heap has no room for the smaller array).
  void maybe_shrink() {
    const ArrayView a = array();
    const uint64_t n = size_of(a);
    if (capacity_for(n, a.capacity) == a.capacity) return;
    try {
      publish(a, words_of(a), {}, {});
    } catch (const OutOfSpaceError&) {
    }
  }

  bool remove(const Item& v) {
    const ArrayView a = array();
    const uint64_t n = size_of(a);
    for (uint64_t i = 0; i < n; ++i) {
      if (items_equal(read(word(a, i)), v)) {
        erase_at(a, i);
        return true;
      }
    }
    return false;
  }

  void clear() {
    const ArrayView a = array();
    if (size_of(a) == 0 && a.capacity == layout::kListMinCapacity) return;
    publish(a, {}, {}, words_of(a));
  }

  void set_slice(const Slice& s, const std::vector<Item>& vs) {
    const ArrayView a = array();
    const uint64_t n = size_of(a);
    const containers::SliceRange r = containers::slice_range(s, n);
    if (r.step != 1 && vs.size() != r.length) {
      throw_error(Errc::kInvalidArgument, "attempt to assign sequence of size " +
                                              std::to_string(vs.size()) +
                                              " to extended slice of size " +
                                              std::to_string(r.length));
    }
    if (vs.empty() && r.length == 0) return;
    const std::vector<uint64_t> items = store_items(vs);
    std::vector<uint64_t> w, removed;
    try {
      const std::vector<uint64_t> old = words_of(a);
      if (r.step == 1) {
        const auto start = static_cast<uint64_t>(r.start);
        w.assign(old.begin(), old.begin() + static_cast<int64_t>(start));
        w.insert(w.end(), items.begin(), items.end());
        w.insert(w.end(), old.begin() + static_cast<int64_t>(start + r.length), old.end());
        removed.assign(old.begin() + static_cast<int64_t>(start),
                       old.begin() + static_cast<int64_t>(start + r.length));
      } else {
        w = old;
        for (uint64_t k = 0; k < r.length; ++k) {
          removed.push_back(w[r.at(k)]);
          w[r.at(k)] = items[k];
        }
      }
    } catch (...) {
      for (uint64_t it : items) free_item(it);
      throw;
    }
    publish(a, w, items, removed);
  }

  void del_slice(const Slice& s) {
    const ArrayView a = array();
    const uint64_t n = size_of(a);
    const containers::SliceRange r = containers::slice_range(s, n);
    if (r.length == 0) return;
    std::vector<uint64_t> old = words_of(a);
    std::vector<char> drop(n, 0);
    std::vector<uint64_t> w, removed;
    for (uint64_t k = 0; k < r.length; ++k) drop[r.at(k)] = 1;
    for (uint64_t i = 0; i < n; ++i) (drop[i] ? removed : w).push_back(old[i]);
    publish(a, w, {}, removed);
  }

  void reverse() {
    const ArrayView a = array();
    std::vector<uint64_t> w = words_of(a);
    if (w.size() < 2) return;
    std::reverse(w.begin(), w.end());
    publish(a, w, {}, {});
  }

  void permute(const std::vector<uint64_t>& perm) {
    const ArrayView a = array();
    const std::vector<uint64_t> old = words_of(a);
    if (perm.size() != old.size()) {
      throw_error(Errc::kInvalidArgument,
                  "list: a permutation of " + std::to_string(perm.size()) + " for " +
                      std::to_string(old.size()) + " elements (the list changed size)");
    }
    std::vector<char> seen(old.size(), 0);
    std::vector<uint64_t> w(old.size());
    for (uint64_t j = 0; j < perm.size(); ++j) {
      if (perm[j] >= old.size() || seen[perm[j]] != 0) {
        throw_error(Errc::kInvalidArgument, "list: not a permutation");
      }
      seen[perm[j]] = 1;
      w[j] = old[perm[j]];
    }
    if (w == old) return;
    publish(a, w, {}, {});
  }

  // The next lock holder's repair of an operation whose writer died (or failed) mid-way: the
  // operation is completed when its linearising store happened, else rolled back. Steps and
  // what each leaves: docs/design/list.md.
  bool recover() {
    ListIntent& in = h_->intent;
    const uint32_t op = in.op.load(std::memory_order_acquire);
    if (op == layout::kListIdle) return false;
    h_->stats.recoveries.fetch_add(1, std::memory_order_relaxed);
    // Blocks of a rolled-back operation are pending: a dead writer's are reclaimed by the heap
    // (lock() runs Heap::check after this); this process's own (an operation that threw after
    // its intent) are freed here.
    const bool writer_gone = in.pid != sync::self_pid();
    bump_gen();
    step();
    const uint64_t current = h_->array.load(std::memory_order_relaxed);
    switch (op) {
      case layout::kListAppend: {
        const ArrayView a = containers::open_array(heap_, in.array);
        if (a.ref != current || in.index > a.capacity || in.count > a.capacity - in.index) {
          containers::list_corrupt("an append's intent names another array");
        }
        const uint64_t n = size_of(a);
        if (n == in.index + in.count) {
          for (uint64_t j = 0; j < in.count; ++j) commit_item(word(a, in.index + j));
          step();
        } else if (n == in.index) {
          for (uint64_t j = 0; j < in.count; ++j) roll_back_item(word(a, in.index + j), writer_gone);
        } else {
          containers::list_corrupt("an append's intent does not match the size");
        }
        break;
      }
      case layout::kListSet: {
        const ArrayView a = containers::open_array(heap_, in.array);
        if (a.ref != current || in.index >= size_of(a)) {
          containers::list_corrupt("a set's intent names another array");
        }
        if (word(a, in.index) == in.item) {
          commit_item(in.item);
          step();
          free_item_checked(in.old_item);
          step();
        } else {
          roll_back_item(in.item, writer_gone);
        }
        break;
      }
      case layout::kListPop: {
        const ArrayView a = containers::open_array(heap_, in.array);
        if (a.ref != current || in.index >= a.capacity) {
          containers::list_corrupt("a pop's intent names another array");
        }
        if (size_of(a) == in.index) {
          free_item_checked(in.old_item);
          step();
        }
        break;
      }
      case layout::kListReplace: {
        if (current == in.new_array) {
          const ArrayView na = containers::open_array(heap_, in.new_array);
          heap_.commit(in.new_array);
          step();
          std::vector<uint64_t> kept = words_of(na);
          for (uint64_t it : kept) commit_item(it);
          step();
          // The old array is freed last: while it is a used block, its words are intact and
          // name every element it held (some perhaps freed already: free_item_checked).
          if (block_used(in.array)) {
            const ArrayView oa = containers::open_array(heap_, in.array);
            std::sort(kept.begin(), kept.end());
            for (uint64_t it : words_of(oa)) {
              if (!std::binary_search(kept.begin(), kept.end(), it)) {
                free_item_checked(it);
                step();
              }
            }
            heap_.free(in.array);
            step();
          }
        } else if (current == in.array) {
          if (block_used(in.new_array)) {
            const ArrayView oa = containers::open_array(heap_, in.array);
            const ArrayView na = containers::open_array(heap_, in.new_array);
            std::vector<uint64_t> old = words_of(oa);
            std::sort(old.begin(), old.end());
            for (uint64_t it : words_of(na)) {
              if (!std::binary_search(old.begin(), old.end(), it)) roll_back_item(it, writer_gone);
            }
            if (!writer_gone) heap_.free(in.new_array);
          }
        } else {
          containers::list_corrupt("a replace's intent names neither the old nor the new array");
        }
        break;
      }
      default:
        containers::list_corrupt("an intent record of unknown operation " + std::to_string(op));
    }
    end();
    return true;
  }

 private:
  ListHeader* h_;
};

namespace {

// Holds the list's lock for one write (recursively when the caller holds it already).
using WriteScope = List::Guard;

// Runs f(writer) under the lock; an operation that throws half-way is repaired at once by this
// process (repair_on_throw).
template <class F>
auto locked_write(List& l, F&& f) {
  WriteScope g(l);
  return containers::repair_on_throw<ListWriter>(l, std::forward<F>(f));
}

}  // namespace

// ---- creation and attach --------------------------------------------------------------------

List List::create(Options opts) {
  Heap heap = Heap::create(Heap::Options{opts.initial_bytes});
  // Private until handle() is called: plain allocations, written before the root names them.
  const auto [top, h] =
      containers::new_header<ListHeader>(heap, layout::kListMagic, layout::kListVersion);
  List l(heap, top);
  ListWriter w(l);
  const HeapRef a = w.new_array(layout::kListMinCapacity);
  heap.commit(a);
  h->array.store(a, std::memory_order_relaxed);
  heap.root().store(top, std::memory_order_release);  // L1: the header is complete
  return l;
}

List List::attach(std::string_view handle) { return attach(Heap::attach(handle)); }

List List::attach(Heap heap) {
  const uint64_t top = containers::attached_header<ListHeader>(heap, "list", layout::kListMagic,
                                                               layout::kListVersion)
                           .first;
  return List(std::move(heap), top);
}

// ---- the lock ----------------------------------------------------------------------------

bool List::held_by_this_thread() const noexcept {
  return sync::RecursiveLock(&header_of(heap_, top_)->lock).held_by_this_thread();
}

uint32_t List::lock_depth() const noexcept {
  return sync::RecursiveLock(&header_of(heap_, top_)->lock).depth();
}

SyncStatus List::lock(Deadline deadline, bool interruptible) {
  return containers::lock_and_repair(&header_of(heap_, top_)->lock, heap_, deadline,
                                     interruptible,
                                     [&] { return ListWriter(*this).recover(); });
}

void List::unlock() {
  containers::unlock_held(&header_of(heap_, top_)->lock, "List::unlock", "list");
}

// ---- writes ------------------------------------------------------------------------------

void List::append(const Item& v) {
  locked_write(*this, [&](ListWriter& w) {
    w.append(v);
    return 0;
  });
}

void List::extend(const std::vector<Item>& vs) {
  locked_write(*this, [&](ListWriter& w) {
    w.extend(vs);
    return 0;
  });
}

void List::insert(int64_t i, const Item& v) {
  locked_write(*this, [&](ListWriter& w) {
    w.insert(i, v);
    return 0;
  });
}

bool List::set(int64_t i, const Item& v) {
  return locked_write(*this, [&](ListWriter& w) { return w.set(i, v); });
}

std::optional<Item> List::pop(int64_t i) {
  return locked_write(*this, [&](ListWriter& w) { return w.pop(i); });
}

bool List::remove(const Item& v) {
  return locked_write(*this, [&](ListWriter& w) { return w.remove(v); });
}

void List::clear() {
  locked_write(*this, [&](ListWriter& w) {
    w.clear();
    return 0;
  });
}

void List::set_slice(const Slice& s, const std::vector<Item>& vs) {
  locked_write(*this, [&](ListWriter& w) {
    w.set_slice(s, vs);
    return 0;
  });
}

void List::del_slice(const Slice& s) {
  locked_write(*this, [&](ListWriter& w) {
    w.del_slice(s);
    return 0;
  });
}

void List::reverse() {
  locked_write(*this, [&](ListWriter& w) {
    w.reverse();
    return 0;
  });
}

void List::permute(const std::vector<uint64_t>& perm) {
  locked_write(*this, [&](ListWriter& w) {
    w.permute(perm);
    return 0;
  });
}

// ---- reads -------------------------------------------------------------------------------

std::optional<Item> List::get(int64_t i) const {
  return containers::read_mapped(heap_, [&] { return get_at(heap_, top_, i); });
}

std::optional<Item> List::get_at(const Heap& heap, uint64_t top, int64_t i) {
  const ListHeader* h = header_of(heap, top);
  return optimistic(h, [&](auto& still_valid) -> std::optional<Item> {
    const ArrayView a = containers::open_array(heap, h->array.load(std::memory_order_acquire));
    const uint64_t n = containers::checked_size(a);
    const int64_t idx = normalize(i, n);
    if (idx < 0) return std::nullopt;
    return containers::decode_item(heap, a.word(static_cast<uint64_t>(idx)), still_valid, "list");
  });
}

uint64_t List::size() const {
  const ListHeader* h = header_of(heap_, top_);
  return optimistic(h, [&](auto&) {
    const ArrayView a = containers::open_array(heap_, h->array.load(std::memory_order_acquire));
    return containers::checked_size(a);
  });
}

std::vector<Item> List::slice(const Slice& s) const {
  const ListHeader* h = header_of(heap_, top_);
  std::vector<Item> out = optimistic(h, [&](auto& still_valid) {
    const ArrayView a = containers::open_array(heap_, h->array.load(std::memory_order_acquire));
    const containers::SliceRange r = containers::slice_range(s, containers::checked_size(a));
    std::vector<Item> out;
    out.reserve(r.length);
    for (uint64_t k = 0; k < r.length; ++k) {
      out.push_back(containers::decode_item(heap_, a.word(r.at(k)), still_valid, "list"));
    }
    return out;
  });
  // References mapped (a slice is read at one instant; one whose object went meanwhile
  // raises StaleHandleError: read the slice again).
  for (Item& v : out) {
    if (auto* ref = std::get_if<ObjectRef>(&v)) ref->target = attach_object_ref(heap_, *ref);
  }
  return out;
}

bool List::Cursor::next(Item* value) {
  if (done_) return false;
  std::optional<Item> v = get_at(heap_, top_, static_cast<int64_t>(pos_));
  if (!v) {
    done_ = true;  // the end: later calls find nothing either
    return false;
  }
  ++pos_;
  if (auto* r = std::get_if<ObjectRef>(&*v)) r->target = attach_object_ref(heap_, *r);
  if (value != nullptr) *value = std::move(*v);
  return true;
}

ListStats List::stats() const {
  const ListHeader* h = header_of(heap_, top_);
  ListStats s;
  std::tie(s.size, s.capacity) = optimistic(h, [&](auto&) {
    const ArrayView a = containers::open_array(heap_, h->array.load(std::memory_order_acquire));
    return std::make_tuple(containers::checked_size(a), a.capacity);
  });
  s.replaces = h->stats.replaces.load(std::memory_order_relaxed);
  containers::recovery_and_heap_stats(s, h, heap_);
  return s;
}

ListReport List::check() {
  WriteScope g(*this);  // lock() has repaired a dead writer's operation
  const ListHeader* h = header_of(heap_, top_);
  containers::check_no_intent(h, layout::kListIdle, "list", "L6");
  const containers::ListStructureReport s = containers::check_list_structure(heap_, top_);
  ListReport r;
  r.size = s.size;
  r.capacity = s.capacity;
  r.node_blocks = s.node_blocks;
  r.heap = containers::check_heap_at_rest(heap_, s.node_blocks, "list", "L7");
  return r;
}

}  // namespace shoal
