// python/bindings/dict_bind.cpp — shoal._shoal.DictCore, the C++ shoal::Dict
// (include/shoal/dict.hpp) as the base class of shoal.Dict (python/shoal/_containers.py).
//
// Hot paths in C: d[k], d[k] = v, del d[k], k in d, len(d), iter(d) and d.get(k) are raw
// CPython slots and methods (Py_mp_subscript, Py_mp_ass_subscript, Py_mp_length,
// Py_sq_contains, Py_tp_methods) on the nanobind class: no Python frame, no nanobind
// dispatch. Python objects convert to Items directly (items.hpp, shared by every container:
// a FrozenDict's key types as keys; scalars, tuples and frozensets natively as values, dicts
// and lists as new shoal containers held by reference, shoal objects as references to
// themselves (refs.hpp), anything else pickled when allow_pickle). The nested objects this
// object hands out are held by it (refs.hpp, HeldRefs), so a nested read maps them once.
//
// Writes take the dict's write lock first with the GIL held (a free lock: no release), and
// when another process holds it wait without the GIL, interruptibly (Ctrl-C raises
// KeyboardInterrupt with nothing written), then run the operation under it (the core's own
// lock is recursive). A write that takes the lock over from a dead holder warns
// OwnerDiedWarning (the core has completed or rolled back the dead writer's operation).
//
// `delta` counts this object's net size changes, so that an iterator raises dict's
// RuntimeError when this process changed the size under it (other processes' writes do not:
// iteration is weakly consistent against them).
#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>

#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>

#include "bindings.hpp"
#include "container_bind.hpp"
#include "items.hpp"
#include "refs.hpp"
#include "shoal/dict.hpp"
#include "shoal/heap.hpp"

namespace nb = nanobind;
using namespace nb::literals;

namespace shoal::py {
namespace {

PyObject* g_owner_died_warning = nullptr;  // shoal._shoal.OwnerDiedWarning (borrowed, immortal)

struct PyDict {
  Dict d;
  bool allow_pickle = true;
  int64_t delta = 0;  // this object's net size changes (the iterators' RuntimeError)
  HeldRefs held;      // the nested objects this object handed out (refs.hpp)
};

// The PyDict of `self`, or nullptr with TypeError set (bindings.hpp).
[[gnu::always_inline]] inline PyDict* dict_of(PyObject* self) noexcept {
  return ready_inst<PyDict>(self);
}

void set_key_error(PyObject* key) noexcept {
  PyObject* t = PyTuple_Pack(1, key);  // as CPython: a tuple key is not unpacked
  if (t == nullptr) return;
  PyErr_SetObject(PyExc_KeyError, t);
  Py_DECREF(t);
}

// Runs f() (which may throw) under the dict's lock: 0, or -1 with the error set.
template <class F>
int write_locked(PyDict* pd, F&& f) noexcept {
  return write_locked_core(pd->d, g_owner_died_warning,
                           "shoal.Dict: a writer died holding the dict's lock; its last single "
                           "operation was completed or rolled back (a compound update it made "
                           "under d.lock is not rolled back)",
                           std::forward<F>(f));
}

// ---- the slots --------------------------------------------------------------------------

Py_ssize_t dict_len(PyObject* self) noexcept {
  PyDict* pd = dict_of(self);
  if (pd == nullptr) return -1;
  try {
    return static_cast<Py_ssize_t>(pd->d.size());
  } catch (...) {
    set_error_from_current_exception();
    return -1;
  }
}

// d[key] as a new reference; nullptr with KeyError (found = false) or another error set.
PyObject* lookup(PyDict* pd, PyObject* key, bool* found) noexcept {
  *found = false;
  Item k;
  const int r = key_item(key, &k, false);
  if (r < 0) return nullptr;
  if (r == 0) return nullptr;
  for (int attempt = 0;; ++attempt) {
    std::optional<Item> v;
    try {
      v = pd->d.get(k, false);  // a reference: mapped below, once per object per process
    } catch (...) {
      set_error_from_current_exception();
      return nullptr;
    }
    if (!v) return nullptr;
    *found = true;
    PyObject* r = to_py(*v, &pd->d, &pd->held);
    // A reference whose object went after the read (a writer replaced it and nobody else held
    // it): read again, as Dict::get does.
    if (r == nullptr && attempt < 3 && std::holds_alternative<ObjectRef>(*v) &&
        PyErr_ExceptionMatches(shoal_error_type(Errc::kStaleHandle))) {
      PyErr_Clear();
      *found = false;
      continue;
    }
    return r;
  }
}

PyObject* dict_getitem(PyObject* self, PyObject* key) noexcept {
  PyDict* pd = dict_of(self);
  if (pd == nullptr) return nullptr;
  bool found = false;
  PyObject* r = lookup(pd, key, &found);
  if (r == nullptr && !found && !PyErr_Occurred()) {
    // A subclass's __missing__, as dict's __getitem__ calls it (looked up on the type, bound
    // as a method; no exception is made when there is none).
    static PyObject* name = PyUnicode_InternFromString("__missing__");
    if (name == nullptr) return nullptr;
    PyObject* missing = _PyType_Lookup(Py_TYPE(self), name);  // borrowed
    if (missing != nullptr) {
      Py_INCREF(missing);
      PyObject* f = missing;
      if (descrgetfunc get = Py_TYPE(missing)->tp_descr_get) {
        f = get(missing, self, reinterpret_cast<PyObject*>(Py_TYPE(self)));
        Py_DECREF(missing);
        if (f == nullptr) return nullptr;
      }
      PyObject* res = PyObject_CallOneArg(f, key);
      Py_DECREF(f);
      return res;
    }
    set_key_error(key);
  }
  return r;
}

int dict_setitem(PyObject* self, PyObject* key, PyObject* value) noexcept {
  PyDict* pd = dict_of(self);
  if (pd == nullptr) return -1;
  Item k;
  if (value == nullptr) {  // del d[key]
    const int r = key_item(key, &k, false);
    if (r < 0) return -1;
    if (r == 0) {
      set_key_error(key);
      return -1;
    }
    bool removed = false;
    if (write_locked(pd, [&] { removed = pd->d.pop(k).has_value(); }) != 0) return -1;
    pd->held.clear();  // a removal: what this object held may be gone from the dict
    if (!removed) {
      set_key_error(key);
      return -1;
    }
    --pd->delta;
    return 0;
  }
  if (key_item(key, &k, true) < 0) return -1;
  Item v;
  if (value_item(pd->allow_pickle, value, &v, "shoal.Dict") != 0) return -1;  // before the lock: pickling runs Python
  bool added = false;
  if (write_locked(pd, [&] { added = pd->d.set(k, v); }) != 0) return -1;
  if (added) ++pd->delta;
  return 0;
}

int dict_contains(PyObject* self, PyObject* key) noexcept {
  PyDict* pd = dict_of(self);
  if (pd == nullptr) return -1;
  Item k;
  const int r = key_item(key, &k, false);
  if (r <= 0) return r;
  try {
    return pd->d.contains(k) ? 1 : 0;
  } catch (...) {
    set_error_from_current_exception();
    return -1;
  }
}

// get(key, default=None)
PyObject* dict_get(PyObject* self, PyObject* const* args, Py_ssize_t nargs) noexcept {
  if (nargs < 1 || nargs > 2) {
    PyErr_Format(PyExc_TypeError, "get expected 1 or 2 arguments, got %zd", nargs);
    return nullptr;
  }
  PyDict* pd = dict_of(self);
  if (pd == nullptr) return nullptr;
  bool found = false;
  PyObject* r = lookup(pd, args[0], &found);
  if (r != nullptr || found || PyErr_Occurred()) return r;
  PyObject* dflt = nargs == 2 ? args[1] : Py_None;
  return Py_NewRef(dflt);
}

// pop(key[, default])
PyObject* dict_pop(PyObject* self, PyObject* const* args, Py_ssize_t nargs) noexcept {
  if (nargs < 1 || nargs > 2) {
    PyErr_Format(PyExc_TypeError, "pop expected 1 or 2 arguments, got %zd", nargs);
    return nullptr;
  }
  PyDict* pd = dict_of(self);
  if (pd == nullptr) return nullptr;
  Item k;
  const int r = key_item(args[0], &k, false);
  if (r < 0) return nullptr;
  std::optional<Item> v;
  if (r == 1 && write_locked(pd, [&] { v = pd->d.pop(k); }) != 0) return nullptr;
  if (v) pd->held.clear();
  if (!v) {
    if (nargs == 2) return Py_NewRef(args[1]);
    set_key_error(args[0]);
    return nullptr;
  }
  --pd->delta;
  return to_py(*v);
}

// popitem(): the last inserted (key, value); KeyError when empty.
PyObject* dict_popitem(PyObject* self, PyObject*) noexcept {
  PyDict* pd = dict_of(self);
  if (pd == nullptr) return nullptr;
  std::optional<std::pair<Item, Item>> kv;
  if (write_locked(pd, [&] { kv = pd->d.popitem(); }) != 0) return nullptr;
  pd->held.clear();
  if (!kv) {
    PyErr_SetString(PyExc_KeyError, "popitem(): dictionary is empty");
    return nullptr;
  }
  --pd->delta;
  PyObject* k = to_py(kv->first);
  if (k == nullptr) return nullptr;
  PyObject* v = to_py(kv->second);
  if (v == nullptr) {
    Py_DECREF(k);
    return nullptr;
  }
  PyObject* t = PyTuple_Pack(2, k, v);
  Py_DECREF(k);
  Py_DECREF(v);
  return t;
}

// setdefault(key, default=None), atomic: under the lock.
PyObject* dict_setdefault(PyObject* self, PyObject* const* args, Py_ssize_t nargs) noexcept {
  if (nargs < 1 || nargs > 2) {
    PyErr_Format(PyExc_TypeError, "setdefault expected 1 or 2 arguments, got %zd", nargs);
    return nullptr;
  }
  PyDict* pd = dict_of(self);
  if (pd == nullptr) return nullptr;
  PyObject* dflt = nargs == 2 ? args[1] : Py_None;
  Item k, v;
  if (key_item(args[0], &k, true) < 0 || value_item(pd->allow_pickle, dflt, &v, "shoal.Dict") != 0) return nullptr;
  std::optional<Item> old;
  bool added = false;
  if (write_locked(pd, [&] {
        old = pd->d.get(k);
        if (!old) added = pd->d.set(k, v);
      }) != 0) {
    return nullptr;
  }
  if (added) ++pd->delta;
  return old ? to_py(*old, &pd->d, &pd->held) : Py_NewRef(dflt);
}

PyObject* dict_clear(PyObject* self, PyObject*) noexcept {
  PyDict* pd = dict_of(self);
  if (pd == nullptr) return nullptr;
  uint64_t n = 0;
  if (write_locked(pd, [&] {
        n = pd->d.size();
        pd->d.clear();
      }) != 0) {
    return nullptr;
  }
  pd->held.clear();
  pd->delta -= static_cast<int64_t>(n);
  Py_RETURN_NONE;
}

// ---- iteration --------------------------------------------------------------------------

enum IterMode : int { kKeys = 0, kValues = 1, kItems = 2 };

struct PyDictIter {
  Dict::Cursor cursor;
  nb::object owner;  // the DictCore: its delta
  int64_t delta = 0;
  int mode = kKeys;
  bool done = false;
};

PyObject* iter_next(PyDictIter& it) {
  if (it.done) return nullptr;
  PyDict* pd = nb::inst_ptr<PyDict>(it.owner);
  if (pd->delta != it.delta) {
    it.done = true;
    PyErr_SetString(PyExc_RuntimeError, "dictionary changed size during iteration");
    throw nb::python_error();
  }
  Item k, v;
  if (!it.cursor.next(it.mode == kValues ? nullptr : &k, it.mode == kKeys ? nullptr : &v)) {
    it.done = true;
    return nullptr;
  }
  PyDict* owner = nb::inst_ptr<PyDict>(it.owner);
  if (it.mode == kKeys) return to_py(k);
  if (it.mode == kValues) return to_py(v, &owner->d, &owner->held);
  PyObject* ko = to_py(k);
  if (ko == nullptr) return nullptr;
  PyObject* vo = to_py(v, &owner->d, &owner->held);
  if (vo == nullptr) {
    Py_DECREF(ko);
    return nullptr;
  }
  PyObject* t = PyTuple_Pack(2, ko, vo);
  Py_DECREF(ko);
  Py_DECREF(vo);
  return t;
}

PyObject* iter_iternext(PyObject* self) noexcept {
  if (!nb::inst_ready(self)) {
    PyErr_SetString(PyExc_TypeError, "not initialised");
    return nullptr;
  }
  try {
    return iter_next(*nb::inst_ptr<PyDictIter>(self));  // nullptr without an error: the end
  } catch (...) {
    set_error_from_current_exception();
    return nullptr;
  }
}

PyObject* iter_self(PyObject* self) noexcept { return Py_NewRef(self); }

int iter_traverse(PyObject* self, visitproc visit, void* arg) {
  Py_VISIT(Py_TYPE(self));
  if (nb::inst_ready(self)) {
    PyDictIter* it = nb::inst_ptr<PyDictIter>(self);
    if (it->owner.is_valid()) Py_VISIT(it->owner.ptr());
  }
  return 0;
}

PyType_Slot iter_slots[] = {{Py_tp_iter, reinterpret_cast<void*>(iter_self)},
                            {Py_tp_iternext, reinterpret_cast<void*>(iter_iternext)},
                            {Py_tp_traverse, reinterpret_cast<void*>(iter_traverse)},
                            {0, nullptr}};

nb::object make_iter(nb::handle self, int mode);

PyObject* dict_iter(PyObject* self) noexcept {
  if (dict_of(self) == nullptr) return nullptr;
  try {
    return make_iter(self, kKeys).release().ptr();
  } catch (...) {
    set_error_from_current_exception();
    return nullptr;
  }
}

PyMethodDef dict_methods[] = {
    {"get", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(dict_get)), METH_FASTCALL,
     "get($self, key, default=None, /)\n--\n\nThe value for key if key is in the dict, else "
     "default. Never blocks."},
    {"pop", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(dict_pop)), METH_FASTCALL,
     "pop($self, key, default=<unrepresentable>, /)\n--\n\nRemove key and return its value; "
     "default when the key is absent, KeyError without one. Atomic across processes."},
    {"popitem", dict_popitem, METH_NOARGS,
     "popitem($self, /)\n--\n\nRemove and return the last inserted (key, value) pair (LIFO); "
     "KeyError when empty. Atomic across processes."},
    {"setdefault", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(dict_setdefault)),
     METH_FASTCALL,
     "setdefault($self, key, default=None, /)\n--\n\nd[key] if key is in the dict, else insert "
     "key with default and return default. Atomic across processes (one step under the lock)."},
    {"clear", dict_clear, METH_NOARGS,
     "clear($self, /)\n--\n\nRemove every item. Atomic across processes."},
    {nullptr, nullptr, 0, nullptr}};

// Traverse and clear: container_bind.hpp (a dict that holds itself is a cycle the GC breaks).
PyType_Slot dict_slots[] = {{Py_tp_traverse, reinterpret_cast<void*>(held_traverse<PyDict>)},
                            {Py_tp_clear, reinterpret_cast<void*>(held_clear<PyDict>)},
                            {Py_mp_length, reinterpret_cast<void*>(dict_len)},
                            {Py_mp_subscript, reinterpret_cast<void*>(dict_getitem)},
                            {Py_mp_ass_subscript, reinterpret_cast<void*>(dict_setitem)},
                            {Py_sq_contains, reinterpret_cast<void*>(dict_contains)},
                            {Py_tp_iter, reinterpret_cast<void*>(dict_iter)},
                            {Py_tp_methods, dict_methods},
                            {0, nullptr}};

nb::object make_iter(nb::handle self, int mode) {
  PyDict* pd = nb::inst_ptr<PyDict>(self);
  PyDictIter it{pd->d.cursor(), nb::borrow(self), pd->delta, mode, false};
  return nb::cast(std::move(it));
}

nb::list items_list(PyDict& pd, int mode) {
  nb::list out;
  Dict::Cursor c = pd.d.cursor();
  Item k, v;
  while (c.next(mode == kValues ? nullptr : &k, mode == kKeys ? nullptr : &v)) {
    if (mode == kItems) {
      nb::object ko = nb::steal(to_py(k));
      if (!ko.is_valid()) throw nb::python_error();
      nb::object vo = nb::steal(to_py(v, &pd.d, &pd.held));
      if (!vo.is_valid()) throw nb::python_error();
      out.append(nb::make_tuple(ko, vo));
    } else {
      nb::object o = nb::steal(to_py(mode == kKeys ? k : v, &pd.d, &pd.held));
      if (!o.is_valid()) throw nb::python_error();
      out.append(o);
    }
  }
  return out;
}

}  // namespace

void register_dict(nb::module_& m) {
  g_owner_died_warning = m.attr("OwnerDiedWarning").ptr();  // register_sync made it

  nb::class_<PyDictIter>(m, "DictIterator", nb::type_slots(iter_slots),
                         "An iterator over a shoal.Dict (private): weakly consistent across "
                         "processes; RuntimeError when this process changed the size.");

  nb::class_<PyDict> cls(m, "DictCore", nb::type_slots(dict_slots), nb::is_weak_referenceable(),
                         "The C++ shoal::Dict behind shoal.Dict (private): its hot methods, in C.");
  cls.def(
         "__init__",
         [](PyDict* self, nb::handle source, bool allow_pickle) {
           new (self) PyDict{open_container<Dict>(source), allow_pickle, 0, HeldRefs{}};
         },
          "source"_a.none(), "allow_pickle"_a,
          "A new dict (source None), the dict a handle names, or the dict in a shoal._shoal.Heap "
          "(IncompatibleSegmentError when the heap holds no dict).")
      .def_prop_ro(
          "allow_pickle", [](const PyDict& d) { return d.allow_pickle; },
          "Whether values of other types than None, bool, int, float, str and bytes are stored "
          "by pickling (else TypeError).")
      .def(
          "_iter", [](nb::handle self, int mode) { return make_iter(self, mode); }, "mode"_a,
          "An iterator: 0 keys, 1 values, 2 items.")
      .def(
          "_list", [](PyDict& d, int mode) { return items_list(d, mode); }, "mode"_a,
          "One walk as a list: 0 keys, 1 values, 2 (key, value) pairs.")
      .def(
          "_stats",
          [](const PyDict& d) {
            const DictStats s = d.d.stats();
            nb::dict r = stats_dict(s);
            r["slots"] = s.slots;
            r["resizes"] = s.resizes;
            return r;
          },
          "Counters of the dict and its heap.")
      .def(
          "_check",
          [](PyDict& d) {
            const DictReport r = check_without_gil(d.d);
            return nb::make_tuple(r.size, r.entries, r.node_blocks);
          },
          "Takes the lock (repairing a dead writer's operation) and checks every invariant "
          "(CorruptSegmentError names the first failure): (size, entries, node blocks).");
  def_lock_and_handle<&PyDict::d>(
      cls, "A handle naming this dict, for shoal.attach in any process of the session.",
      "The dict's root segment (what shoal.hold holds).");
}

}  // namespace shoal::py
