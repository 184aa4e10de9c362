// include/shoal/list.hpp — a list in shared memory that every process of a session reads and
// writes in place, with Python's list semantics (negative indices, slices with a step, the size
// rules of extended slice assignment).
//
//   shoal::List l = shoal::List::create();
//   l.append(int64_t{1});
//   l.extend({std::string("two"), 3.0});
//   std::string h = l.handle();                    // to another process:
//   shoal::List same = shoal::List::attach(h);
//   same.get(-1);                                  // 3.0
//   { shoal::List::Guard g(same);                  // a compound update, atomic for writers
//     same.append(int64_t(same.size())); }
//
// Concurrency contract. Reads (get, size, slice, iteration) never block and never take a lock:
// they are optimistic and retry when a writer freed memory they were reading, so a reader never
// sees a half-done write and never waits for a writer, dead or alive. Writes each take the write
// lock, a robust recursive lock in the list itself (lock()/unlock(), Guard): other writers wait
// while it is held, readers do not. Each single operation (append, extend, insert, set, pop,
// remove, clear, set_slice, del_slice, reverse, permute) is atomic: if its process dies at any
// instant, the next writer completes it or rolls it back (kOwnerDied from lock(), counted in
// stats().recoveries). A compound update under lock() that is interrupted by a death is not
// rolled back. Iteration (Cursor) walks by index, as Python's list iterator does: under
// concurrent writers it may skip or repeat an element that moved, never crashes, and ends when
// the index passes the size.
//
// Elements are shoal::Item (include/shoal/dict.hpp), copied in and out. Layout:
// src/layout/list_layout.hpp; design note: docs/design/list.md.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "shoal/dict.hpp"
#include "shoal/heap.hpp"
#include "shoal/sync.hpp"

namespace shoal {

/// Python's slice: start and stop are absent (None) or any int, negative from the end, clamped
/// as Python clamps them; step != 0 (InvalidArgumentError otherwise).
struct Slice {
  std::optional<int64_t> start;
  std::optional<int64_t> stop;
  int64_t step = 1;
};

struct ListStats {
  uint64_t size = 0;
  uint64_t capacity = 0;    // elements the current array holds before it is replaced
  uint64_t recoveries = 0;  // operations of dead writers completed or rolled back
  uint64_t replaces = 0;    // arrays replaced (grow, shrink, insert, delete, slices, sort...)
  uint64_t heap_live_bytes = 0;
  uint64_t heap_reserved_bytes = 0;
};

/// What check() found.
struct ListReport {
  uint64_t size = 0;
  uint64_t capacity = 0;
  uint64_t node_blocks = 0;  // elements that own a heap block
  HeapReport heap;
};

class List {
 public:
  struct Options {
    /// The heap's root segment size (see Heap::Options).
    uint64_t initial_bytes = 256 * 1024;
  };

  /// A new, empty list in this process's session.
  static List create(Options opts);
  static List create() { return create(Options{}); }
  /// The list a handle names. IncompatibleSegmentError when the object is not a list (or one of
  /// another layout version), CorruptSegmentError when its header fails its checks.
  static List attach(std::string_view handle);
  static List attach(Heap heap);

  List() noexcept = default;
  bool valid() const noexcept { return heap_.valid(); }
  std::string handle(bool pin = true) const { return heap_.handle(pin); }
  const Heap& heap() const noexcept { return heap_; }

  // ---- reads: never block ----
  /// The element at i (negative: from the end); nullopt when out of range.
  std::optional<Item> get(int64_t i) const;
  uint64_t size() const;
  bool empty() const { return size() == 0; }
  /// Python's l[s]: a copy of the elements the slice selects, read at one instant.
  std::vector<Item> slice(const Slice& s) const;
  /// Every element, read at one instant.
  std::vector<Item> items() const { return slice(Slice{}); }

  // ---- writes: each takes the write lock (recursively when this thread holds it) ----
  void append(const Item& v);
  /// Appends all of `vs` or, when one cannot be stored (OutOfSpaceError), none.
  void extend(const std::vector<Item>& vs);
  /// Inserts before index i (Python's clamping: any i is valid).
  void insert(int64_t i, const Item& v);
  /// Replaces the element at i; false when i is out of range.
  bool set(int64_t i, const Item& v);
  /// Removes and returns the element at i (default: the last); nullopt when out of range.
  std::optional<Item> pop(int64_t i = -1);
  /// Removes the first element equal to v (items_equal); false when there is none.
  bool remove(const Item& v);
  void clear();
  /// Python's l[s] = vs. With step 1 any number of elements replaces the slice; with another
  /// step vs must have exactly the slice's length (InvalidArgumentError otherwise, naming both).
  void set_slice(const Slice& s, const std::vector<Item>& vs);
  /// Python's del l[s].
  void del_slice(const Slice& s);
  void reverse();
  /// Reorders the elements: element j becomes the old element perm[j]. `perm` must be a
  /// permutation of [0, size) (InvalidArgumentError otherwise: the list changed size since the
  /// caller read it, or a bad permutation). The Python layer sorts with it.
  void permute(const std::vector<uint64_t>& perm);

  // ---- the write lock: a robust recursive lock (Python's l.lock is an RLock over it) ----
  /// kOk or kOwnerDied (the previous holder died: its last operation has been completed or
  /// rolled back already, the list is consistent), kTimeout, kInterrupted (interruptible).
  SyncStatus lock(Deadline deadline = Deadline::never(), bool interruptible = false);
  SyncStatus try_lock() { return lock(Deadline{0}); }
  /// InvalidArgumentError when the calling thread does not hold it.
  void unlock();
  bool held_by_this_thread() const noexcept;
  /// The calling thread's recursion depth (0 when it does not hold the lock).
  uint32_t lock_depth() const noexcept;

  class Guard {
   public:
    explicit Guard(List& l) : l_(l) { l_.lock(); }
    ~Guard() { l_.unlock(); }
    Guard(const Guard&) = delete;
    Guard& operator=(const Guard&) = delete;

   private:
    List& l_;
  };

  /// Iteration by index without a lock (see the contract above).
  class Cursor {
   public:
    /// The next element; false at the end.
    bool next(Item* value);

   private:
    friend class List;
    Cursor(Heap h, uint64_t top) : heap_(std::move(h)), top_(top) {}
    Heap heap_;  // keeps the list mapped while the cursor lives
    uint64_t top_ = 0;
    uint64_t pos_ = 0;
    bool done_ = false;
  };
  Cursor cursor() const { return Cursor(heap_, top_); }

  ListStats stats() const;
  /// Takes the lock, repairs a dead writer's operation if one is pending, then verifies
  /// L1-L7 of list_layout.hpp (and the heap's own invariants). CorruptSegmentError names the
  /// first failure.
  ListReport check();

 private:
  List(Heap h, uint64_t top) noexcept : heap_(std::move(h)), top_(top) {}
  static std::optional<Item> get_at(const Heap& heap, uint64_t top, int64_t i);
  friend struct ListTestAccess;
  friend class ListWriter;
  Heap heap_;
  uint64_t top_ = 0;  // the ListHeader's Ref
};

}  // namespace shoal
