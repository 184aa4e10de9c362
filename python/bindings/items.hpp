// python/bindings/items.hpp — Python objects as shoal::Items and back: the conversion every
// container binding (dict_bind.cpp, list_bind.cpp) shares, so that a value a Dict can hold any
// container can hold, stored the same way.
//
//   keys    the key types a FrozenDict takes: None, bool, int (any size; an int subclass as
//           its int value), float, str, bytes, and tuples/frozensets of these (FrozenTuple and
//           FrozenSet keys as the tuple/frozenset they equal), hashed by the codec. Another
//           hashable key is TypeError when stored and simply absent when looked up (no stored
//           key can equal it); an unhashable key is TypeError, as dict's.
//   values  None, bool, int, float, str, bytes of exactly those types natively, and tuples and
//           frozensets of key types; a plain dict (a new shoal.Dict), a list (a new shoal.List,
//           once registered), a shoal container, whole array, frozen root or sync object as a
//           reference (refs.hpp); anything else (a subclass, a user class) as a pickle,
//           shoal::Pickled (a kPickle node: never confused with a stored bytes), when
//           allow_pickle; TypeError otherwise.
//
// All of these need the GIL (pickling runs Python).
#pragma once

#include <nanobind/nanobind.h>

#include "refs.hpp"
#include "shoal/dict.hpp"

namespace shoal::py {

/// Imports pickle.dumps/loads once (0), or -1 with the error set.
int import_pickle() noexcept;
/// A key as an Item: 1, or 0 when the key is hashable but no stored key can equal it (`store`:
/// TypeError instead), or -1 with the error set (unhashable: TypeError as dict's).
int key_item(PyObject* o, Item* out, bool store) noexcept;
/// A value as an Item: 0, or -1 with the error set (allow_pickle: anything else is pickled,
/// else TypeError naming `container`, "shoal.Dict" or "shoal.List").
int value_item(bool allow_pickle, PyObject* o, Item* out, const char* container) noexcept;
/// An Item as a new reference, or nullptr with the error set. A reference read unmapped (a
/// Cursor's) is mapped through `d` (StaleHandleError when its object went meanwhile: read
/// again); one read mapped needs no `d`.
PyObject* to_py(const Item& v, const Dict* d = nullptr, HeldRefs* held = nullptr) noexcept;

}  // namespace shoal::py
