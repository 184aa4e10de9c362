// python/bindings/refs.hpp — the items of shoal's mutable containers that need more than a
// scalar conversion: tuple and frozenset keys (as the codec encodes them: a frozen image), ints
// beyond 64 bits, and references to other shoal objects (nested containers that stay live).
//
// What becomes a reference is Python's decision (python/shoal/_containers.py, the hooks set by
// set_container_hooks): a plain dict (or list, once shoal.List exists) stored into a
// container becomes a NEW shoal container, stored by reference; a shoal container, a whole
// shoal.Array or a lock/semaphore/event/value is stored as a reference to itself. Reading a
// reference back gives the Python object over the same shared object; one per object per
// process while it lives (a cache of weak references), so `d["a"] is d["a"]`.
#pragma once

#include <nanobind/nanobind.h>

#include <functional>
#include <unordered_map>
#include <vector>

#include "shoal/dict.hpp"

namespace shoal::py {

/// A tuple, frozenset, FrozenTuple or FrozenSet key as a FrozenKey (the codec's encoding, a
/// frozen image, with the default hash seed): 1; 0 when !store and no stored key can equal it
/// (an element of a type no key has); -1 with the error set (unhashable: TypeError; store: an
/// element of a type keys do not take, TypeError).
int frozen_key_item(PyObject* o, Item* out, bool store) noexcept;
/// Whether frozen_key_item takes `o` (a tuple, frozenset, FrozenTuple or FrozenSet).
bool is_frozen_key_type(PyObject* o) noexcept;
/// An int beyond 64 bits as a BigInt: 0, or -1 with the error set.
int bigint_item(PyObject* o, Item* out) noexcept;
/// A value stored by reference: 1 (*out is an ObjectRef, its target mapped), 0 when `o` is not
/// one (store it as before), -1 with the error set.
int ref_item(PyObject* o, bool allow_pickle, Item* out) noexcept;

/// New references, or nullptr with the error set.
PyObject* bigint_to_py(const BigInt& b) noexcept;
PyObject* frozen_key_to_py(const FrozenKey& k) noexcept;
/// The objects a container's Python object has handed out for its references, held (strong
/// references) so that reading `d["a"]["x"]` again finds `d["a"]` mapped: without it, each read
/// would map the nested object afresh (a broker round trip and an mmap: 47 us a read measured
/// for lst[0]["y"] in a release build, against 0.2-0.4 us with the holder),
/// as the Python object read last died at once. A process therefore keeps a nested object it
/// read mapped while the parent's Python object lives, until the parent is seen not to refer
/// to it any more: a removal made through this Python object clears the holder, and it is
/// pruned of the objects the parent no longer names whenever it grows past twice the parent's
/// size (so it stays within that bound). Traversed and cleared by the GC (a dict that holds
/// itself holds its own Python object).
struct HeldRefs {
  std::unordered_map<Id128, PyObject*, Id128Hash> objs;
  // For a container other than a Dict (which ref_to_py walks itself): its size, and the ids
  // its references name now (the pruning's walk).
  std::function<uint64_t()> size;
  std::function<void(std::vector<Id128>*)> names;
  HeldRefs() = default;
  HeldRefs(const HeldRefs&) = delete;
  HeldRefs& operator=(const HeldRefs&) = delete;
  HeldRefs(HeldRefs&& o) noexcept
      : objs(std::move(o.objs)), size(std::move(o.size)), names(std::move(o.names)) {
    o.objs.clear();
  }
  ~HeldRefs() { clear(); }
  void clear() noexcept;
  int traverse(visitproc visit, void* arg) noexcept;
};

/// The Python object over the object `r` names, mapped through `d` when `r` was read unmapped
/// (StaleHandleError when it is gone: the caller reads again); kept in `held` when given.
PyObject* ref_to_py(const Dict* d, const ObjectRef& r, HeldRefs* held = nullptr) noexcept;
/// The cached Python object of `r`'s object, new reference, or nullptr (no error) when none.
PyObject* cached_ref(const ObjectRef& r) noexcept;

void register_refs(nanobind::module_& m);

}  // namespace shoal::py
