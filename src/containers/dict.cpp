// src/containers/dict.cpp — shoal::Dict: the write protocol (under the dict's robust recursive
// lock), recovery of a dead writer's operation, and the optimistic readers. Layout and
// invariants: src/layout/dict_layout.hpp; the protocol step by step: docs/design/dict.md.
#include "shoal/dict.hpp"

#include <sys/syscall.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <tuple>

#include "containers/container_common.hpp"
#include "containers/dict_core.hpp"
#include "containers/item_refs.hpp"
#include "containers/write_lock.hpp"
#include "layout/frozen_layout.hpp"
#include "shoal/frozen.hpp"
#include "sync/recursive_lock.hpp"
#include "sync/robust_mutex.hpp"

namespace shoal {

namespace detail {
std::atomic<int64_t> dict_kill_at{0};
}

namespace containers {

KeyProbe probe_of(const Item& key, uint64_t seed) {
  KeyProbe p;
  switch (key.index()) {
    case 0:
      p.kind = KeyProbe::kNone;
      p.hash = codec::hash::kNoneHash;
      break;
    case 1:
    case 2: {
      const int64_t i = key.index() == 1 ? int64_t{std::get<bool>(key)} : std::get<int64_t>(key);
      p.kind = KeyProbe::kNumber;
      p.num = codec::Number::of_int(i);
      p.hash = static_cast<uint64_t>(codec::hash::of_int(i));
      break;
    }
    case 3: {
      const double d = std::get<double>(key);
      p.kind = KeyProbe::kNumber;
      p.num = codec::Number::of_float(d);
      p.hash = static_cast<uint64_t>(codec::hash::of_float(d));
      break;
    }
    case 4: {
      p.kind = KeyProbe::kStr;
      p.data = std::get<std::string>(key);
      p.hash = codec::hash::of_bytes(seed, p.data.data(), p.data.size());
      break;
    }
    case 5: {
      p.kind = KeyProbe::kBytes;
      p.data = std::get<Bytes>(key).data;
      p.hash = codec::hash::of_bytes(seed, p.data.data(), p.data.size());
      break;
    }
    case 7: {
      const std::string& b = std::get<BigInt>(key).le;
      p.kind = KeyProbe::kNumber;
      p.num = codec::Number::of_bigint(
          std::span<const std::byte>(reinterpret_cast<const std::byte*>(b.data()), b.size()));
      p.hash = static_cast<uint64_t>(codec::hash::of_bigint(
          std::span<const std::byte>(reinterpret_cast<const std::byte*>(b.data()), b.size())));
      break;
    }
    case 8: {
      p.kind = KeyProbe::kFrozen;
      p.data = std::get<FrozenKey>(key).image;
      p.image = open_key_image(p.data.data(), p.data.size());
      p.hash = frozen::hash_of(p.image.root());
      break;
    }
    case 6:
      throw_error(Errc::kInvalidArgument, "dict: a pickled value cannot be a key (it has no hash)");
    default:
      throw_error(Errc::kInvalidArgument,
                  "dict: a reference to a shoal object cannot be a key (it has no hash)");
  }
  return p;
}

}  // namespace containers

using containers::Encoded;
using containers::KeyProbe;
using containers::optimistic;
using containers::racy_load64;
using containers::TableView;
using layout::DictHeader;
using layout::DictIntent;

namespace {

// A point between two steps of a write (the test hook detail::dict_kill_at).
inline void step() { containers::kill_point(detail::dict_kill_at); }

codec::Number number_item(const Item& v) {
  switch (v.index()) {
    case 1: return codec::Number::of_int(std::get<bool>(v));
    case 2: return codec::Number::of_int(std::get<int64_t>(v));
    case 3: return codec::Number::of_float(std::get<double>(v));
    case 7: {
      const std::string& b = std::get<BigInt>(v).le;
      return codec::Number::of_bigint(
          std::span<const std::byte>(reinterpret_cast<const std::byte*>(b.data()), b.size()));
    }
    default: return codec::Number{};
  }
}

DictHeader* header_of(const Heap& heap, uint64_t top) {
  return containers::header_at<DictHeader>(heap, top);
}

}  // namespace

// The object an ObjectRef names, mapped through a bare handle of the heap's session (the
// reference the dict holds keeps it alive; a pin is not needed).
Segment attach_object_ref(const Heap& heap, const ObjectRef& r) {
  Handle hd;
  hd.session = heap.root_segment().session();
  hd.object = r.object;
  hd.size = r.size;
  hd.kind = r.kind;
  return Segment::attach(hd);
}

bool items_equal(const Item& a, const Item& b) noexcept {
  const codec::Number x = number_item(a), y = number_item(b);
  if (x.kind != codec::Number::kNotNumber || y.kind != codec::Number::kNotNumber) {
    return x.kind != codec::Number::kNotNumber && y.kind != codec::Number::kNotNumber &&
           codec::numbers_equal(x, y);
  }
  return a == b;
}

std::string item_repr(const Item& v) {
  auto quoted = [](std::string_view s, const char* prefix) {
    std::string r = prefix;
    r += '\'';
    for (unsigned char c : s) {
      if (c == '\'' || c == '\\') {
        r += '\\';
        r += static_cast<char>(c);
      } else if (c < 0x20 || c == 0x7f) {
        char buf[8];
        std::snprintf(buf, sizeof buf, "\\x%02x", c);
        r += buf;
      } else {
        r += static_cast<char>(c);
      }
    }
    return r + '\'';
  };
  switch (v.index()) {
    case 0: return "None";
    case 1: return std::get<bool>(v) ? "True" : "False";
    case 2: return std::to_string(std::get<int64_t>(v));
    case 3: {
      char buf[40];
      std::snprintf(buf, sizeof buf, "%.17g", std::get<double>(v));
      return buf;
    }
    case 4: return quoted(std::get<std::string>(v), "");
    case 5: return quoted(std::get<Bytes>(v).data, "b");
    case 6: return "<pickle of " + std::to_string(std::get<Pickled>(v).data.size()) + " bytes>";
    case 7: return "<int of " + std::to_string(std::get<BigInt>(v).le.size()) + " bytes>";
    case 8: return "<tuple or frozenset image of " + std::to_string(std::get<FrozenKey>(v).image.size()) + " bytes>";
    default: return "<shoal object " + std::get<ObjectRef>(v).object.hex() + ">";
  }
}

// ---- the writer: everything here runs under the dict's lock --------------------------------

class DictWriter : containers::ItemBlocks<detail::dict_kill_at> {
 public:
  explicit DictWriter(Dict& d) : ItemBlocks(d.heap_), h_(header_of(d.heap_, d.top_)) {}

  TableView table() const { return containers::open_table(heap_, h_->table.load(std::memory_order_acquire)); }

  // Gen protocol: bumped before any free of memory a reader may be reading. The fence keeps
  // the frees' (and later reuses') stores after the bump for every reader that sees them.
  void bump_gen() {
    h_->gen.fetch_add(1, std::memory_order_seq_cst);
#if !defined(__SANITIZE_THREAD__)
    std::atomic_thread_fence(std::memory_order_seq_cst);
#endif
  }

  uint64_t store_item(const Encoded& e) { return store_encoded(e); }

  HeapRef new_table(uint32_t log2) {
    const uint64_t bytes = layout::dict_table_bytes(log2);
    const HeapRef ref = heap_.allocate_pending(bytes);
    std::byte* p = heap_.at(ref, bytes);
    std::memset(p, 0, bytes);
    auto* t = reinterpret_cast<layout::DictTable*>(p);
    t->magic = layout::kDictTableMagic;
    t->log2_slots = log2;
    t->capacity = layout::dict_capacity(log2);
    return ref;
  }

  // The free index slot the probe for `hash` reaches first (a valid table always has one).
  static uint64_t free_slot(const TableView& t, uint64_t hash) {
    layout::Probe pr(hash, t.log2);
    for (uint64_t n = 0, limit = pr.limit(); n < limit; ++n, pr.next()) {
      if (t.index()[pr.slot].load(std::memory_order_relaxed) == 0) return pr.slot;
    }
    containers::corrupt("a table without a free slot");
  }

  void begin(uint32_t op) {
    step();  // new blocks allocated (pending), nothing recorded
    h_->intent.pid = sync::self_pid();
    h_->intent.op.store(op, std::memory_order_release);  // after every field of the record
    step();
  }
  void end() {
    step();
    h_->intent.op.store(layout::kDictIdle, std::memory_order_release);
  }

  // Replaces the table by one with room for at least 2 * want entries (compacting away erased
  // entries, keeping the order and seq of the live ones).
  void resize(uint64_t want) {
    uint32_t log2 = layout::kDictMinLog2;
    while (layout::dict_capacity(log2) < 2 * want) {
      if (++log2 > layout::kDictMaxLog2) {
        throw_error(Errc::kOutOfSpace, "dict: more entries than one table can index");
      }
    }
    const TableView old = table();
    const HeapRef nref = new_table(log2);  // may throw OutOfSpaceError: nothing recorded yet
    const TableView nt = containers::open_table(heap_, nref);
    const uint64_t n = layout::dict_nentries(old.header()->counts.load(std::memory_order_relaxed));
    uint64_t live = 0;
    for (uint64_t i = 0; i < n; ++i) {
      const layout::DictEntry& e = old.entries()[i];
      const uint64_t key = e.key.load(std::memory_order_relaxed);
      if (key == layout::kDeletedKey) continue;
      const uint64_t hash = e.hash.load(std::memory_order_relaxed);
      layout::DictEntry& d = nt.entries()[live];
      d.hash.store(hash, std::memory_order_relaxed);
      d.key.store(key, std::memory_order_relaxed);
      d.value.store(e.value.load(std::memory_order_relaxed), std::memory_order_relaxed);
      d.seq.store(e.seq.load(std::memory_order_relaxed), std::memory_order_relaxed);
      nt.index()[free_slot(nt, hash)].store(static_cast<uint32_t>(live + 1), std::memory_order_relaxed);
      ++live;
    }
    nt.header()->counts.store(layout::dict_counts(live, live), std::memory_order_relaxed);
    DictIntent& in = h_->intent;
    in.table = old.ref;
    in.new_table = nref;
    begin(layout::kDictResize);
    h_->table.store(nref, std::memory_order_release);  // linearises: readers use the new table
    step();
    heap_.commit(nref);
    step();
    h_->stats.resizes.fetch_add(1, std::memory_order_relaxed);
    bump_gen();
    step();
    heap_.free(old.ref);
    step();
    end();
  }

  bool set(const KeyProbe& p, const Item& key, const Item& value) {
    TableView t = table();
    uint64_t counts = t.header()->counts.load(std::memory_order_relaxed);
    const int64_t found = containers::find_entry(heap_, t, counts, p);
    DictIntent& in = h_->intent;
    if (found >= 0) {
      layout::DictEntry& e = t.entries()[found];
      const uint64_t nv = store_item(containers::encode_item(value, "dict"));
      add_ref(value, nv);
      in.table = t.ref;
      in.entry = static_cast<uint64_t>(found);
      in.value = nv;
      in.old_value = e.value.load(std::memory_order_relaxed);
      begin(layout::kDictOverwrite);
      e.value.store(nv, std::memory_order_release);  // linearises
      step();
      commit_item(nv);
      step();
      bump_gen();
      step();
      free_item(in.old_value);
      step();
      end();
      return false;
    }
    if (layout::dict_nentries(counts) >= t.capacity) {
      resize(layout::dict_used(counts) + 1);
      t = table();
      counts = t.header()->counts.load(std::memory_order_relaxed);
    }
    const uint64_t k = store_item(containers::encode_item(key, "dict"));
    uint64_t v = 0;
    try {
      v = store_item(containers::encode_item(value, "dict"));
      add_ref(value, v);  // frees v when it throws
    } catch (...) {
      free_item(k);
      throw;
    }
    const uint64_t n = layout::dict_nentries(counts);
    const uint64_t slot = free_slot(t, p.hash);
    // Before the entry can become visible (D9): a popitem must never start above a live entry.
    if (t.header()->pop_hint.load(std::memory_order_relaxed) != 0) {
      t.header()->pop_hint.store(0, std::memory_order_release);
      step();
    }
    layout::DictEntry& e = t.entries()[n];
    e.hash.store(p.hash, std::memory_order_relaxed);
    e.key.store(k, std::memory_order_relaxed);
    e.value.store(v, std::memory_order_relaxed);
    e.seq.store(h_->next_seq.fetch_add(1, std::memory_order_relaxed), std::memory_order_relaxed);
    in.table = t.ref;
    in.entry = n;
    in.slot = slot;
    in.key = k;
    in.value = v;
    begin(layout::kDictInsert);
    t.index()[slot].store(static_cast<uint32_t>(n + 1), std::memory_order_release);
    step();
    // Linearises: lookups, iteration and size() see the entry from this store on.
    t.header()->counts.store(layout::dict_counts(n + 1, layout::dict_used(counts) + 1),
                             std::memory_order_release);
    step();
    commit_item(k);
    step();
    commit_item(v);
    step();
    end();
    return true;
  }

  std::optional<Item> pop(const KeyProbe& p) {
    const TableView t = table();
    const uint64_t counts = t.header()->counts.load(std::memory_order_relaxed);
    const int64_t found = containers::find_entry(heap_, t, counts, p);
    if (found < 0) return std::nullopt;
    Item out = erase_entry(t, counts, static_cast<uint64_t>(found), nullptr);
    maybe_shrink(t, layout::dict_used(counts) - 1);
    return out;
  }

  // The last live entry in insertion order, erased (dict.popitem: LIFO).
  std::optional<std::pair<Item, Item>> popitem() {
    const TableView t = table();
    const uint64_t counts = t.header()->counts.load(std::memory_order_relaxed);
    // Entries at and above the hint are erased (D9): a drain by popitem scans each entry once,
    // not the growing erased tail every time.
    uint64_t i = layout::dict_nentries(counts);
    const uint64_t hint = t.header()->pop_hint.load(std::memory_order_relaxed);
    if (hint != 0 && hint - 1 < i) i = hint - 1;
    while (i-- > 0) {
      if (t.entries()[i].key.load(std::memory_order_relaxed) == layout::kDeletedKey) continue;
      Item key;
      Item value = erase_entry(t, counts, i, &key);
      // Release: never visible before L. A death before it leaves a higher hint: a longer scan.
      t.header()->pop_hint.store(i + 1, std::memory_order_release);
      step();
      maybe_shrink(t, layout::dict_used(counts) - 1);
      return std::make_pair(std::move(key), std::move(value));
    }
    return std::nullopt;
  }

  void maybe_shrink(const TableView& t, uint64_t used) {
    if (t.log2 > layout::kDictMinLog2 && used * 8 < t.capacity) resize(used);
  }

  Item erase_entry(const TableView& t, uint64_t counts, uint64_t entry, Item* key_out) {
    layout::DictEntry& e = t.entries()[entry];
    DictIntent& in = h_->intent;
    in.table = t.ref;
    in.entry = entry;
    in.key = e.key.load(std::memory_order_relaxed);
    in.value = e.value.load(std::memory_order_relaxed);
    // Decoded before anything changes: a value with no C++ type leaves the dict as it was.
    Item out = containers::decode_item(heap_, in.value, [] { return true; }, "dict");
    // A reference comes back mapped by this process before the dict drops its own, so the
    // object outlives the pop in the popper's hands (del maps it too: one attach).
    if (auto* r = std::get_if<ObjectRef>(&out)) r->target = attach_object_ref(heap_, *r);
    if (key_out != nullptr) *key_out = containers::decode_item(heap_, in.key, [] { return true; }, "dict");
    begin(layout::kDictErase);
    e.key.store(layout::kDeletedKey, std::memory_order_release);  // linearises
    step();
    const uint64_t used = layout::dict_used(counts) - 1;
    t.header()->counts.store(layout::dict_counts(layout::dict_nentries(counts), used),
                             std::memory_order_release);
    step();
    bump_gen();
    step();
    free_item(in.key);
    step();
    free_item(in.value);
    step();
    end();
    return out;
  }

  void clear() {
    const TableView old = table();
    const HeapRef nref = new_table(layout::kDictMinLog2);
    DictIntent& in = h_->intent;
    in.table = old.ref;
    in.new_table = nref;
    begin(layout::kDictClear);
    h_->table.store(nref, std::memory_order_release);  // linearises
    step();
    heap_.commit(nref);
    step();
    h_->stats.resizes.fetch_add(1, std::memory_order_relaxed);
    bump_gen();
    step();
    free_table(old.ref, false);
    end();
  }

  // Frees every live entry's nodes, then the table block. `checked`: in recovery, where a
  // dead writer may have freed some of them already.
  void free_table(HeapRef ref, bool checked) {
    if (checked && !block_used(ref)) return;  // the table goes last: all its nodes went before
    const TableView t = containers::open_table(heap_, ref);
    const uint64_t n = layout::dict_nentries(t.header()->counts.load(std::memory_order_relaxed));
    if (n > t.capacity) containers::corrupt("more entries than the table holds");
    for (uint64_t i = 0; i < n; ++i) {
      const layout::DictEntry& e = t.entries()[i];
      const uint64_t key = e.key.load(std::memory_order_relaxed);
      if (key == layout::kDeletedKey) continue;
      const uint64_t value = e.value.load(std::memory_order_relaxed);
      if (checked) {
        free_item_checked(key);
        step();
        free_item_checked(value);
        step();
      } else {
        free_item(key);
        step();
        free_item(value);
        step();
      }
    }
    heap_.free(ref);
  }

  // The next lock holder's repair of an operation whose writer died (or failed) mid-way: the
  // operation is completed when its linearising store happened, else rolled back. Steps and
  // what each leaves: docs/design/dict.md.
  bool recover() {
    DictIntent& in = h_->intent;
    const uint32_t op = in.op.load(std::memory_order_acquire);
    if (op == layout::kDictIdle) return false;
    h_->stats.recoveries.fetch_add(1, std::memory_order_relaxed);
    // Blocks of a rolled-back operation are pending: a dead writer's are reclaimed by the
    // heap (lock() runs Heap::check after this); this process's own (an operation that threw
    // after its intent) are freed here.
    const bool writer_gone = in.pid != sync::self_pid();
    auto roll_back = [&](std::initializer_list<uint64_t> items) {
      for (uint64_t item : items) roll_back_item(item, writer_gone);
    };
    bump_gen();
    step();
    const uint64_t current = h_->table.load(std::memory_order_relaxed);
    switch (op) {
      case layout::kDictInsert: {
        const TableView t = containers::open_table(heap_, in.table);
        if (t.ref != current || in.entry >= t.capacity || in.slot >= t.slots()) {
          containers::corrupt("an insert's intent names another table");
        }
        const uint64_t counts = t.header()->counts.load(std::memory_order_relaxed);
        bool done = layout::dict_nentries(counts) > in.entry;
        if (!done && layout::dict_nentries(counts) == in.entry &&
            t.index()[in.slot].load(std::memory_order_relaxed) == in.entry + 1) {
          // The entry was complete before the intent; only the counts store is missing.
          t.header()->counts.store(layout::dict_counts(in.entry + 1, layout::dict_used(counts) + 1),
                                   std::memory_order_release);
          done = true;
        }
        if (done) {
          commit_item(in.key);
          step();
          commit_item(in.value);
          step();
        } else {
          roll_back({in.key, in.value});
        }
        break;
      }
      case layout::kDictOverwrite: {
        const TableView t = containers::open_table(heap_, in.table);
        if (t.ref != current || in.entry >= t.capacity) {
          containers::corrupt("an overwrite's intent names another table");
        }
        if (t.entries()[in.entry].value.load(std::memory_order_relaxed) == in.value) {
          commit_item(in.value);
          step();
          free_item_checked(in.old_value);
          step();
        } else {
          roll_back({in.value});
        }
        break;
      }
      case layout::kDictErase: {
        const TableView t = containers::open_table(heap_, in.table);
        if (t.ref != current || in.entry >= t.capacity) {
          containers::corrupt("an erase's intent names another table");
        }
        if (t.entries()[in.entry].key.load(std::memory_order_relaxed) == layout::kDeletedKey) {
          free_item_checked(in.key);
          step();
          free_item_checked(in.value);
          step();
        }
        break;
      }
      case layout::kDictResize:
      case layout::kDictClear: {
        if (current == in.new_table) {
          heap_.commit(in.new_table);
          step();
          if (op == layout::kDictResize) {
            free_block_checked(in.table);
            step();
          } else {
            free_table(in.table, true);
          }
        } else if (current == in.table) {
          if (!writer_gone) free_block_checked(in.new_table);
        } else {
          containers::corrupt("a resize's intent names neither the old nor the new table");
        }
        break;
      }
      default: containers::corrupt("an intent record of unknown operation " + std::to_string(op));
    }
    recount();
    end();
    return true;
  }

  // used := the live entries of the current table (an erase may have died between its
  // linearising store and the counts store).
  void recount() {
    const TableView t = table();
    const uint64_t counts = t.header()->counts.load(std::memory_order_relaxed);
    const uint64_t n = layout::dict_nentries(counts);
    if (n > t.capacity) containers::corrupt("more entries than the table holds");
    uint64_t live = 0;
    for (uint64_t i = 0; i < n; ++i) {
      live += t.entries()[i].key.load(std::memory_order_relaxed) != layout::kDeletedKey;
    }
    if (live != layout::dict_used(counts)) {
      t.header()->counts.store(layout::dict_counts(n, live), std::memory_order_release);
    }
  }

  DictHeader* header() const noexcept { return h_; }

 private:
  DictHeader* h_;
};

namespace {
// Holds the dict's lock for one write (recursively when the caller holds it already).
using WriteScope = Dict::Guard;
}  // namespace

// ---- creation and attach --------------------------------------------------------------------

Dict Dict::create(Options opts) {
  Heap heap = Heap::create(Heap::Options{opts.initial_bytes});
  // Private until handle() is called: plain allocations, written before the root names them.
  const auto [top, h] =
      containers::new_header<DictHeader>(heap, layout::kDictMagic, layout::kDictVersion);
  h->hash_seed = frozen::kDefaultHashSeed;
  Dict d(heap, top, h->hash_seed);
  DictWriter w(d);
  const HeapRef t = w.new_table(layout::kDictMinLog2);
  heap.commit(t);
  h->table.store(t, std::memory_order_relaxed);
  heap.root().store(top, std::memory_order_release);  // D1: the header is complete
  return d;
}

Dict Dict::attach(std::string_view handle) { return attach(Heap::attach(handle)); }

Dict Dict::attach(Heap heap) {
  const auto [top, h] = containers::attached_header<DictHeader>(heap, "dict", layout::kDictMagic,
                                                                layout::kDictVersion);
  const uint64_t seed = h->hash_seed;
  return Dict(std::move(heap), top, seed);
}

// ---- the lock ----------------------------------------------------------------------------

bool Dict::held_by_this_thread() const noexcept {
  return sync::RecursiveLock(&header_of(heap_, top_)->lock).held_by_this_thread();
}

uint32_t Dict::lock_depth() const noexcept {
  return sync::RecursiveLock(&header_of(heap_, top_)->lock).depth();
}

SyncStatus Dict::lock(Deadline deadline, bool interruptible) {
  return containers::lock_and_repair(&header_of(heap_, top_)->lock, heap_, deadline,
                                     interruptible,
                                     [&] { return DictWriter(*this).recover(); });
}

void Dict::unlock() {
  containers::unlock_held(&header_of(heap_, top_)->lock, "Dict::unlock", "dict");
}

// ---- writes ------------------------------------------------------------------------------

namespace {
// An operation that throws half-way is repaired at once by this process (repair_on_throw).
template <class F>
auto guarded(Dict& d, F&& f) {
  return containers::repair_on_throw<DictWriter>(d, std::forward<F>(f));
}
}  // namespace

bool Dict::set(const Item& key, const Item& value) {
  const KeyProbe p = containers::probe_of(key, seed_);
  WriteScope g(*this);
  return guarded(*this, [&](DictWriter& w) { return w.set(p, key, value); });
}

std::optional<std::pair<Item, Item>> Dict::popitem() {
  WriteScope g(*this);
  return guarded(*this, [&](DictWriter& w) { return w.popitem(); });
}

std::optional<Item> Dict::pop(const Item& key) {
  const KeyProbe p = containers::probe_of(key, seed_);
  WriteScope g(*this);
  return guarded(*this, [&](DictWriter& w) { return w.pop(p); });
}

void Dict::clear() {
  WriteScope g(*this);
  guarded(*this, [&](DictWriter& w) {
    w.clear();
    return 0;
  });
}

// ---- reads -------------------------------------------------------------------------------

std::optional<Item> Dict::get(const Item& key, bool map_refs) const {
  const KeyProbe p = containers::probe_of(key, seed_);
  const DictHeader* h = header_of(heap_, top_);
  auto read = [&] {
    return optimistic(h, [&](auto& still_valid) -> std::optional<Item> {
      const TableView t = containers::open_table(heap_, h->table.load(std::memory_order_acquire));
      const int64_t e = containers::find_entry(heap_, t, t.counts(), p);
      if (e < 0) return std::nullopt;
      const uint64_t value = racy_load64(&t.entry(static_cast<uint64_t>(e))->value);
      return containers::decode_item(heap_, value, still_valid, "dict");
    });
  };
  if (!map_refs) return read();
  return containers::read_mapped(heap_, read);
}

Segment Dict::attach_ref(const ObjectRef& r) const { return attach_object_ref(heap_, r); }

bool Dict::contains(const Item& key) const {
  const KeyProbe p = containers::probe_of(key, seed_);
  const DictHeader* h = header_of(heap_, top_);
  return optimistic(h, [&](auto&) {
    const TableView t = containers::open_table(heap_, h->table.load(std::memory_order_acquire));
    return containers::find_entry(heap_, t, t.counts(), p) >= 0;
  });
}

uint64_t Dict::size() const {
  const DictHeader* h = header_of(heap_, top_);
  return optimistic(h, [&](auto&) {
    const TableView t = containers::open_table(heap_, h->table.load(std::memory_order_acquire));
    return layout::dict_used(t.counts());
  });
}

Dict::Cursor::Cursor(Heap h, uint64_t top) : heap_(std::move(h)), top_(top) {
  end_seq_ = header_of(heap_, top_)->next_seq.load(std::memory_order_acquire);
}

bool Dict::Cursor::next(Item* key, Item* value) {
  const DictHeader* h = header_of(heap_, top_);
  struct Step {
    bool found = false;
    uint64_t seq = 0;
    Item key, value;
  };
  Step s = optimistic(h, [&](auto& still_valid) {
    Step r;
    const TableView t = containers::open_table(heap_, h->table.load(std::memory_order_acquire));
    const uint64_t n = layout::dict_nentries(t.counts());
    if (n > t.capacity) containers::corrupt("more entries than the table holds");
    // Resume at the first entry not yet passed, found by seq (D6) in whatever table is current
    // now: positions change with every resize, and a table's Ref may be reused by a later one.
    uint64_t pos = 0;
    {
      uint64_t lo = 0, hi = n;
      while (lo < hi) {
        const uint64_t mid = lo + (hi - lo) / 2;
        if (racy_load64(&t.entry(mid)->seq) < last_seq_) {
          lo = mid + 1;
        } else {
          hi = mid;
        }
      }
      pos = lo;
    }
    for (; pos < n; ++pos) {
      const layout::DictEntry* e = t.entry(pos);
      const uint64_t seq = racy_load64(&e->seq);
      if (seq >= end_seq_) break;  // inserted after the cursor was made
      if (seq < last_seq_) continue;
      const uint64_t k = racy_load64(&e->key);
      if (k == layout::kDeletedKey) continue;
      const uint64_t v = racy_load64(&e->value);
      // Only what the caller asked for: iterating keys must not copy every value (a 16 MiB
      // value made each keys() walk cost milliseconds).
      if (key != nullptr) r.key = containers::decode_item(heap_, k, still_valid, "dict");
      if (value != nullptr) r.value = containers::decode_item(heap_, v, still_valid, "dict");
      r.found = true;
      r.seq = seq;
      break;
    }
    return r;
  });
  if (!s.found) {
    last_seq_ = end_seq_;  // the end: later calls find nothing either
    return false;
  }
  last_seq_ = s.seq + 1;
  if (key != nullptr) *key = std::move(s.key);
  if (value != nullptr) *value = std::move(s.value);
  return true;
}

std::vector<std::pair<Item, Item>> Dict::items() const {
  std::vector<std::pair<Item, Item>> out;
  Cursor c = cursor();
  Item k, v;
  while (c.next(&k, &v)) out.emplace_back(std::move(k), std::move(v));
  return out;
}

std::vector<Item> Dict::keys() const {
  std::vector<Item> out;
  Cursor c = cursor();
  Item k;
  while (c.next(&k, nullptr)) out.push_back(std::move(k));
  return out;
}

DictStats Dict::stats() const {
  const DictHeader* h = header_of(heap_, top_);
  DictStats s;
  std::tie(s.size, s.capacity, s.slots) = optimistic(h, [&](auto&) {
    const TableView t = containers::open_table(heap_, h->table.load(std::memory_order_acquire));
    return std::make_tuple(layout::dict_used(t.counts()), t.capacity, t.slots());
  });
  s.resizes = h->stats.resizes.load(std::memory_order_relaxed);
  containers::recovery_and_heap_stats(s, h, heap_);
  return s;
}

DictReport Dict::check() {
  WriteScope g(*this);  // lock() has repaired a dead writer's operation
  const DictHeader* h = header_of(heap_, top_);
  containers::check_no_intent(h, layout::kDictIdle, "dict", "D7");
  const containers::StructureReport s = containers::check_structure(heap_, top_);
  DictReport r;
  r.size = s.used;
  r.entries = s.nentries;
  r.node_blocks = s.node_blocks;
  r.heap = containers::check_heap_at_rest(heap_, s.node_blocks, "dict", "D8");
  return r;
}

}  // namespace shoal
