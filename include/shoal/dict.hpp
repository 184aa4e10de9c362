// include/shoal/dict.hpp — a dict in shared memory that every process of a session reads and
// writes in place, with Python's dict semantics (insertion order, 1 == 1.0 == True as one key).
//
//   shoal::Dict d = shoal::Dict::create();
//   d.set(int64_t{1}, std::string("one"));
//   std::string h = d.handle();                    // to another process:
//   shoal::Dict same = shoal::Dict::attach(h);
//   same.get(1.0);                                 // std::optional: "one"
//   { shoal::Dict::Guard g(same);                  // a compound update, atomic for writers
//     same.set(int64_t{2}, same.size()); }
//
// Concurrency contract. Reads (get, contains, size, iteration) never block and never take a
// lock: they are optimistic and retry when a writer freed memory they were reading, so a
// reader never sees a half-done write and never waits for a writer, dead or alive. Writes
// (set, erase, pop, clear) each take the write lock, a robust recursive lock in the dict itself
// (lock()/unlock(), Guard): other writers wait while it is held, readers do not. Each single
// operation is atomic: if its process dies at any instant, the next writer completes it or
// rolls it back (kOwnerDied from lock(), counted in stats().recoveries). A compound update
// under lock() that is interrupted by a death is not rolled back. Iteration (Cursor) is weakly
// consistent under concurrent writers: it yields each key present throughout exactly once, in
// insertion order, never a key twice, never one inserted after the cursor was made, and ends.
//
// Differs from std::unordered_map: keys and values are Python's types (Item: scalars, tuples
// and frozensets as a FrozenDict holds them), copied in and out (no references into shared
// memory are handed out), and references to other shoal objects (ObjectRef: the dict keeps the
// object alive while an entry names it); equal numbers are one key.
// Layout: src/layout/dict_layout.hpp; design note: docs/design/dict.md.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "shoal/heap.hpp"
#include "shoal/segment.hpp"
#include "shoal/sync.hpp"

namespace shoal {

/// A bytes value (as Python's bytes), kept apart from str.
struct Bytes {
  std::string data;
  friend bool operator==(const Bytes&, const Bytes&) = default;
};

/// A pickled value: the bytes of a pickle, stored as the codec's kPickle node (its own tag), so
/// that a stored bytes value never reads back as a pickle nor a pickle as bytes. The Python
/// layer writes it for values of other types (its allow_pickle fallback); C++ carries the bytes
/// through unchanged. Never a key (InvalidArgumentError: a pickle has no hash).
struct Pickled {
  std::string data;
  friend bool operator==(const Pickled&, const Pickled&) = default;
};

/// An int beyond 64 bits: minimal two's complement, little-endian (the codec's kBigInt bytes).
/// A key or a value; equal to the int or float of the same number (2**70 == 2.0**70).
struct BigInt {
  std::string le;
  friend bool operator==(const BigInt&, const BigInt&) = default;
};

/// A tuple or frozenset key (or value), as the codec encodes it: a whole frozen image
/// (include/shoal/frozen.hpp) whose root is the tuple or frozenset, built with the dict's hash
/// seed (frozen::kDefaultHashSeed). It hashes and compares as frozen::hash_of / keys_equal do,
/// so a key read from a FrozenDict is found in a Dict. The Python layer makes these; C++ code
/// may build one with frozen::Builder::finish_bytes.
struct FrozenKey {
  std::string image;
  friend bool operator==(const FrozenKey&, const FrozenKey&) = default;
};

/// Another shoal object of the same session, stored by reference (values only): while the
/// dict holds it, the dict's root segment holds a broker reference to it (Segment::
/// add_reference), so the object lives at least as long as the entry does, whoever else lets
/// it go; overwriting, erasing or clearing the entry drops that reference (design note:
/// docs/design/dict.md, "References to other objects"). To store one, `target` must be a
/// segment this process maps (ObjectRef::to(segment)); read back, `target` is the object
/// mapped by the reader (get, pop, popitem; the Cursor leaves it empty: Dict::attach_ref).
struct ObjectRef {
  Id128 object;
  uint64_t size = 0;   // the object's usable bytes (its handle's size field)
  uint32_t kind = 0;   // its ObjectKind
  Segment target;      // see above

  static ObjectRef to(const Segment& s) {
    return ObjectRef{s.id(), s.size(), static_cast<uint32_t>(s.kind()), s};
  }
  /// One object is one reference, whether mapped or not.
  friend bool operator==(const ObjectRef& a, const ObjectRef& b) noexcept {
    return a.object == b.object;
  }
};

/// Maps the object an ObjectRef read back names, through a bare handle of `heap`'s session (the
/// container that holds the reference keeps the object alive). StaleHandleError when it is
/// gone (its container dropped the reference meanwhile and nobody else held it).
Segment attach_object_ref(const Heap& heap, const ObjectRef& r);

/// A key or a value: None (std::monostate), bool, int, float, str (UTF-8), bytes, (values
/// only) a pickle, an int beyond 64 bits, a tuple or frozenset, or (values only) a reference
/// to another shoal object. Switch on the alternative with std::holds_alternative / visit:
/// later versions may append alternatives.
using Item = std::variant<std::monostate, bool, int64_t, double, std::string, Bytes, Pickled,
                          BigInt, FrozenKey, ObjectRef>;

/// Python's == between items (1 == 1.0 == True, nan != nan, str != bytes; two pickles are
/// equal when their bytes are).
bool items_equal(const Item& a, const Item& b) noexcept;
/// The item as Python's repr would write it (tests, messages).
std::string item_repr(const Item& v);

struct DictStats {
  uint64_t size = 0;
  uint64_t capacity = 0;      // entries the current table holds before it grows
  uint64_t slots = 0;         // index slots of the current table
  uint64_t recoveries = 0;    // operations of dead writers completed or rolled back
  uint64_t resizes = 0;       // tables replaced (grow, shrink, compaction, clear)
  uint64_t heap_live_bytes = 0;
  uint64_t heap_reserved_bytes = 0;
};

/// What check() found.
struct DictReport {
  uint64_t size = 0;
  uint64_t entries = 0;      // appended entries, erased ones included
  uint64_t node_blocks = 0;  // key and value blocks of live entries
  HeapReport heap;
};

class Dict {
 public:
  struct Options {
    /// The heap's root segment size (see Heap::Options).
    uint64_t initial_bytes = 256 * 1024;
  };

  /// A new, empty dict in this process's session.
  static Dict create(Options opts);
  static Dict create() { return create(Options{}); }
  /// The dict a handle names. IncompatibleSegmentError when the object is not a dict (or one of
  /// another layout version), CorruptSegmentError when its header fails its checks.
  static Dict attach(std::string_view handle);
  static Dict attach(Heap heap);

  Dict() noexcept = default;
  bool valid() const noexcept { return heap_.valid(); }
  std::string handle(bool pin = true) const { return heap_.handle(pin); }
  const Heap& heap() const noexcept { return heap_; }

  // ---- reads: never block ----
  /// The value; an ObjectRef comes back with its target mapped (a reference the dict drops
  /// meanwhile is read again: the value a concurrent writer left), or unmapped when
  /// !map_refs (the caller maps it with attach_ref, and reads again on StaleHandleError).
  std::optional<Item> get(const Item& key, bool map_refs = true) const;
  bool contains(const Item& key) const;
  uint64_t size() const;
  bool empty() const { return size() == 0; }
  /// Every (key, value) in insertion order (one Cursor walk: weakly consistent).
  std::vector<std::pair<Item, Item>> items() const;
  std::vector<Item> keys() const;

  // ---- writes: each takes the write lock (recursively when this thread holds it) ----
  /// Inserts or overwrites; true when the key was new. An existing equal key keeps its stored
  /// form and its place (d[1.0] = x on a dict with key 1 keeps 1, as dict does). A Pickled key
  /// is InvalidArgumentError.
  bool set(const Item& key, const Item& value);
  /// Removes the key and returns its value; nullopt when absent.
  std::optional<Item> pop(const Item& key);
  bool erase(const Item& key) { return pop(key).has_value(); }
  /// Removes and returns the last inserted (key, value), as dict.popitem; nullopt when empty.
  std::optional<std::pair<Item, Item>> popitem();
  void clear();

  // ---- the write lock: a robust recursive lock (Python's d.lock is an RLock over it) ----
  /// kOk or kOwnerDied (the previous holder died: its last operation has been completed or
  /// rolled back already, the dict is consistent), kTimeout, kInterrupted (interruptible).
  SyncStatus lock(Deadline deadline = Deadline::never(), bool interruptible = false);
  SyncStatus try_lock() { return lock(Deadline{0}); }
  /// InvalidArgumentError when the calling thread does not hold it.
  void unlock();
  bool held_by_this_thread() const noexcept;
  /// The calling thread's recursion depth (0 when it does not hold the lock).
  uint32_t lock_depth() const noexcept;

  class Guard {
   public:
    explicit Guard(Dict& d) : d_(d) { d_.lock(); }
    ~Guard() { d_.unlock(); }
    Guard(const Guard&) = delete;
    Guard& operator=(const Guard&) = delete;

   private:
    Dict& d_;
  };

  /// Iteration in insertion order without a lock (see the contract above).
  class Cursor {
   public:
    /// The next entry; false at the end.
    bool next(Item* key, Item* value);

   private:
    friend class Dict;
    Cursor(Heap h, uint64_t top);
    Heap heap_;  // keeps the dict mapped while the cursor lives
    uint64_t top_ = 0;
    uint64_t last_seq_ = 0;  // seq of the last entry yielded + 1 (0: none yet)
    uint64_t end_seq_ = 0;   // next_seq when the cursor was made: later inserts are not seen
  };
  Cursor cursor() const { return Cursor(heap_, top_); }

  /// Maps the object an ObjectRef read back names (a reference the Cursor returned): through a
  /// bare handle of this dict's session. StaleHandleError when the object is gone (the dict
  /// dropped the reference meanwhile and nobody else held it).
  Segment attach_ref(const ObjectRef& r) const;

  DictStats stats() const;
  /// Takes the lock, repairs a dead writer's operation if one is pending, then verifies
  /// D1-D8 of dict_layout.hpp (and the heap's own invariants). CorruptSegmentError names the
  /// first failure.
  DictReport check();

 private:
  Dict(Heap h, uint64_t top, uint64_t seed) noexcept
      : heap_(std::move(h)), top_(top), seed_(seed) {}
  friend struct DictTestAccess;
  friend class DictWriter;
  Heap heap_;
  uint64_t top_ = 0;   // the DictHeader's Ref
  uint64_t seed_ = 0;  // the header's hash_seed (immutable)
};

}  // namespace shoal
