// python/bindings/refs.hpp — the items of shoal's mutable containers that need more than a
// scalar conversion: tuple and frozenset keys (as the codec encodes them: a frozen image), ints
// beyond 64 bits, and references to other shoal objects (nested containers that stay live).
//
// What becomes a reference is Python's decision (python/shoal/_containers.py, the hooks set by
// _set_container_hooks): a plain dict (or list, once shoal.List exists) stored into a
// container becomes a NEW shoal container, stored by reference; a shoal container, a whole
// shoal.Array or a lock/semaphore/event/value is stored as a reference to itself. Reading a
// reference back gives the Python object over the same shared object; one per object per
// process while it lives (a cache of weak references), so `d["a"] is d["a"]`.
#pragma once

#include <nanobind/nanobind.h>

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
/// The Python object over the object `r` names, mapped through `d` when `r` was read unmapped
/// (StaleHandleError when it is gone: the caller reads again).
PyObject* ref_to_py(const Dict* d, const ObjectRef& r) noexcept;
/// The cached Python object of `r`'s object, new reference, or nullptr (no error) when none.
PyObject* cached_ref(const ObjectRef& r) noexcept;

void register_refs(nanobind::module_& m);

}  // namespace shoal::py
