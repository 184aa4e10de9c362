// src/containers/item_refs.hpp — the broker references that ObjectRef items stand for, for
// every container that stores items in a heap (shoal::Dict, shoal::List). Invariants R1-R3 of
// src/layout/dict_layout.hpp; the steps and what a death between them leaves:
// docs/design/dict.md, "References to other objects". Writers only (under the container's
// lock).
#pragma once

#include <atomic>
#include <cstdint>
#include <variant>

#include "containers/item_core.hpp"
#include "layout/dict_layout.hpp"
#include "shoal/dict.hpp"
#include "shoal/error.hpp"
#include "shoal/heap.hpp"

namespace shoal::containers {

/// R3: the broker reference an ObjectRef value stands for, added (one round trip) after its
/// node is stored pending and before the write that stores it records its intent (a death
/// before that intent leaves one reference too many, kept until the container goes). When the
/// broker refuses (a dead target, another session) the node is freed and the error thrown.
inline void add_item_ref(Heap& heap, const Item& value, uint64_t item) {
  const auto* r = std::get_if<ObjectRef>(&value);
  if (r == nullptr) return;
  try {
    if (!r->target.valid()) {
      throw_error(Errc::kInvalidArgument,
                  "an ObjectRef to store must carry its target segment (ObjectRef::to)");
    }
    heap.root_segment().add_reference(r->target);
  } catch (...) {
    heap.free(item_ref(item));  // no reference was added: nothing to drop
    throw;
  }
}

/// R2: drops the reference an ObjectRef node stands for, once: its state is set first, so a
/// recovery that finds kRefDropped does not drop a second time (which could let go of the
/// count another item naming the same object stands for). A death between the two leaves one
/// reference too many. The node must be a used block (pending included). `step` is the
/// container's kill-point hook.
template <class Step>
void release_item_ref(Heap& heap, uint64_t item, Step&& step) {
  if (layout::tag_of(item) != layout::kObjectRefTag) return;
  auto* n = reinterpret_cast<layout::ObjectRefNode*>(
      heap.at(item_ref(item), sizeof(layout::ObjectRefNode)));
  if (n->state.load(std::memory_order_relaxed) != layout::kRefHeld) return;
  n->state.store(layout::kRefDropped, std::memory_order_relaxed);
  step();
  heap.root_segment().drop_reference(Id128{n->object_hi, n->object_lo});
  step();
}

}  // namespace shoal::containers
