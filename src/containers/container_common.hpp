// src/containers/container_common.hpp — the scaffolding shoal::Dict and shoal::List share
// around their own write protocols: the kill-point hook of the tests, the optimistic reader
// loop (the gen protocol), the item blocks a writer stores, commits, frees and, in recovery,
// frees only while they are still used blocks, the repair of an operation that threw half-way,
// and the header checks of create and attach. Each container's operations, intents and
// recovery stay in its own .cpp (docs/design/dict.md, docs/design/list.md); what is here
// behaves the same for both, so a fix here is a fix for both.
#pragma once

#include <sched.h>
#include <signal.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <utility>
#include <variant>

#include "containers/item_core.hpp"
#include "containers/item_refs.hpp"
#include "shoal/dict.hpp"
#include "shoal/error.hpp"
#include "shoal/heap.hpp"

namespace shoal::containers {

/// A point between two steps of a write: the test hook (detail::dict_kill_at,
/// detail::list_kill_at) counts down and SIGKILLs this process when it reaches the step.
inline void kill_point(std::atomic<int64_t>& kill_at) {
  if (kill_at.load(std::memory_order_relaxed) > 0 &&
      kill_at.fetch_sub(1, std::memory_order_relaxed) == 1) {
    ::raise(SIGKILL);
  }
}

/// The container header at `top` in the heap (its size checked by Heap::at).
template <class Header>
Header* header_at(const Heap& heap, uint64_t top) {
  return reinterpret_cast<Header*>(heap.at(top, sizeof(Header)));
}

/// Readers: run f(still_valid) until it completes with gen unchanged across it. A read that
/// failed (a bounds check, a bad tag) while gen moved was reading freed memory: retried. One
/// that failed while gen stood still read the container as it is: the error is real, and
/// thrown. `Header` has the `std::atomic<uint64_t> gen` that writers bump.
template <class Header, class F>
auto optimistic(const Header* h, F&& f) {
  for (uint32_t attempt = 0;; ++attempt) {
    const uint64_t g0 = h->gen.load(std::memory_order_acquire);  // pairs with bump_gen
    auto still_valid = [&] { return h->gen.load(std::memory_order_acquire) == g0; };
    try {
      auto r = f(still_valid);
      // The reads above were acquire loads (racy_load*): this load cannot move before them.
      if (h->gen.load(std::memory_order_relaxed) == g0) return r;
    } catch (const StaleRead&) {
    } catch (const Error&) {
      if (still_valid()) throw;
    }
    if (attempt >= 64) ::sched_yield();  // a writer that frees in a loop: let it run
  }
}

/// A value read by `read()` (an optional Item) with its ObjectRef's target mapped. A reference
/// whose object went between the read and the map (a writer replaced the value and dropped its
/// reference: a value the container holds is alive, R1) is read again; one that stays stale
/// after three reads is thrown (StaleHandleError).
template <class Read>
std::optional<Item> read_mapped(const Heap& heap, Read&& read) {
  for (int attempt = 0;; ++attempt) {
    std::optional<Item> v = read();
    auto* r = v ? std::get_if<ObjectRef>(&*v) : nullptr;
    if (r == nullptr) return v;
    try {
      r->target = attach_object_ref(heap, *r);
      return v;
    } catch (const StaleHandleError&) {
      if (attempt >= 3) throw;
    }
  }
}

/// The item blocks of a container's writer (under its lock): stored pending, committed with
/// the operation, freed with their broker reference (R2). `KillAt` is the container's test
/// hook. The `_checked` forms and roll_back_item are recovery's: a dead writer may have freed
/// some of the blocks an intent names already.
template <std::atomic<int64_t>& KillAt>
class ItemBlocks {
 public:
  explicit ItemBlocks(Heap& heap) : heap_(heap) {}

  /// The item word of an encoded item: inline, or a new pending block holding its node.
  uint64_t store_encoded(const Encoded& e) {
    if (e.node.empty()) return e.inline_item;
    const HeapRef r = heap_.allocate_pending(e.node.size());
    std::memcpy(heap_.at(r, e.node.size()), e.node.data(), e.node.size());
    return r | static_cast<uint64_t>(e.tag);
  }
  void commit_item(uint64_t item) {
    if (item_has_node(item)) heap_.commit(item_ref(item));
  }
  void free_item(uint64_t item) {
    if (!item_has_node(item)) return;
    release_ref(item);
    heap_.free(item_ref(item));
  }
  // R2, R3 (containers/item_refs.hpp).
  void add_ref(const Item& value, uint64_t item) { add_item_ref(heap_, value, item); }
  void release_ref(uint64_t item) {
    release_item_ref(heap_, item, [] { kill_point(KillAt); });
  }
  // Whether a Ref still names a used block. Reliable in recovery because nothing allocates in
  // this heap between a writer's death and the recovery (every allocation is made under the
  // container's lock), so a block the dead writer freed still has its free header.
  bool block_used(HeapRef ref) {
    try {
      (void)heap_.usable_size(ref);
      return true;
    } catch (const InvalidArgumentError&) {
      return false;
    }
  }
  void free_block_checked(HeapRef ref) {
    if (ref != 0 && block_used(ref)) heap_.free(ref);
  }
  void free_item_checked(uint64_t item) {
    if (!item_has_node(item) || !block_used(item_ref(item))) return;
    release_ref(item);
    heap_.free(item_ref(item));
  }
  // A rolled-back write's new item: its reference goes (R3 added it before the intent); its
  // block too when this process wrote it (a dead writer's pending blocks go to Heap::check).
  void roll_back_item(uint64_t item, bool writer_gone) {
    if (!item_has_node(item) || !block_used(item_ref(item))) return;
    release_ref(item);
    if (!writer_gone) heap_.free(item_ref(item));
  }

 protected:
  Heap& heap_;
};

/// Runs f(writer) with a new Writer over `c` (whose lock the caller holds). An operation that
/// throws half-way (only a corrupt heap can make a step after the intent throw) is repaired at
/// once by this process, as the next writer would.
template <class Writer, class C, class F>
auto repair_on_throw(C& c, F&& f) {
  Writer w(c);
  try {
    return f(w);
  } catch (...) {
    try {
      w.recover();
    } catch (...) {
    }
    throw;
  }
}

/// A new container header in a new heap: zeroed, its magic, version and size written, in a
/// plain (committed) block; private until the caller publishes it in the heap's root.
template <class Header>
std::pair<HeapRef, Header*> new_header(Heap& heap, uint64_t magic, uint32_t version) {
  const HeapRef top = heap.allocate(sizeof(Header));
  std::byte* p = heap.at(top, sizeof(Header));
  std::memset(p, 0, sizeof(Header));
  auto* h = reinterpret_cast<Header*>(p);
  h->magic = magic;
  h->version = version;
  h->header_bytes = sizeof(Header);
  return {top, h};
}

/// The header the heap's root names, checked as attach checks it: IncompatibleSegmentError
/// when the heap holds no container of this kind (`who`: "dict", "list") or one of another
/// layout version, CorruptSegmentError when the header's size is wrong.
template <class Header>
std::pair<uint64_t, const Header*> attached_header(const Heap& heap, const char* who,
                                                   uint64_t magic, uint32_t version) {
  const uint64_t top = heap.root().load(std::memory_order_acquire);  // pairs with create
  const std::string name = who;
  if (top == 0) throw_error(Errc::kIncompatible, name + ": the heap holds no " + name);
  const Header* h = header_at<Header>(heap, top);
  if (h->magic != magic) {
    throw_error(Errc::kIncompatible, name + ": the heap holds something else than a " + name);
  }
  if (h->version != version) {
    // Refused, never misread: a build of another version would take items or fields it does
    // not know for its own. Say what to do: the processes sharing it must run one shoal.
    throw_error(Errc::kIncompatible,
                name + ": layout version " + std::to_string(h->version) + ", this build reads " +
                    std::to_string(version) + ": every process sharing a " + name +
                    " must run the same shoal version; attach it from the version that created "
                    "it, or create a new " + name + " with this one");
  }
  if (h->header_bytes != sizeof(Header)) {
    throw_error(Errc::kCorrupt, name + ": the header's size is wrong");
  }
  return {top, h};
}

/// stats()'s counters that both containers keep: the recoveries in the header's stats and the
/// heap's bytes.
template <class Stats, class Header>
void recovery_and_heap_stats(Stats& s, const Header* h, const Heap& heap) {
  s.recoveries = h->stats.recoveries.load(std::memory_order_relaxed);
  const HeapStats hs = heap.stats();
  s.heap_live_bytes = hs.live_bytes;
  s.heap_reserved_bytes = hs.reserved_bytes;
}

/// check()'s first rule, under the lock after lock() repaired a dead writer's operation: no
/// intent is left pending (`idle`: the container's idle op). `rule` ("D7", "L6") names it.
template <class Header>
void check_no_intent(const Header* h, uint32_t idle, const char* who, const char* rule) {
  if (h->intent.op.load(std::memory_order_acquire) != idle) {
    corrupt_in(who, std::string(rule) + ": an intent is pending after recovery");
  }
}

/// check()'s heap side, the container at rest under its lock: no pending block, and exactly
/// the header, the array or table, and `node_blocks` used. `rule` names the invariant ("D8",
/// "L7"), `who` the container; CorruptSegmentError otherwise.
inline HeapReport check_heap_at_rest(Heap& heap, uint64_t node_blocks, const char* who,
                                     const char* rule) {
  HeapReport r = heap.check();
  const std::string w = who;
  if (r.pending_blocks != 0) {
    corrupt_in(who, std::string(rule) + ": " + std::to_string(r.pending_blocks) +
                        " pending blocks while the " + w + " is at rest");
  }
  if (r.used_blocks != 2 + node_blocks) {
    corrupt_in(who, std::string(rule) + ": the heap has " + std::to_string(r.used_blocks) +
                        " used blocks; the " + w + " reaches " +
                        std::to_string(2 + node_blocks));
  }
  return r;
}

}  // namespace shoal::containers
