// python/bindings/list_bind.cpp — shoal._shoal.ListCore, the C++ shoal::List
// (include/shoal/list.hpp) as the base class of shoal.List (python/shoal/_containers.py).
//
// Hot paths in C: l[i], l[a:b:c], l[i] = v, l[a:b:c] = vs, del l[i], del l[a:b:c], len(l),
// x in l, iter(l) and l.append(v) are raw CPython slots and methods (Py_mp_subscript,
// Py_mp_ass_subscript, Py_mp_length, Py_sq_length, Py_sq_contains, Py_tp_iter, Py_tp_methods)
// on the nanobind class: no Python frame, no nanobind dispatch. Values convert to Items as a
// shoal.Dict's values do (items.cpp): the same types natively, anything else pickled when
// allow_pickle.
//
// Writes take the list's write lock first with the GIL held (a free lock: no release), and when
// another process holds it wait without the GIL, interruptibly (Ctrl-C raises KeyboardInterrupt
// with nothing written), then run the operation under it (the core's own lock is recursive). A
// write that takes the lock over from a dead holder warns OwnerDiedWarning (the core has
// completed or rolled back the dead writer's operation). Values are converted (and pickled)
// before the lock is taken: pickling runs Python code.
#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "bindings.hpp"
#include "container_bind.hpp"
#include "items.hpp"
#include "shoal/heap.hpp"
#include "shoal/list.hpp"

namespace nb = nanobind;
using namespace nb::literals;

namespace shoal::py {
namespace {

PyObject* g_owner_died_warning = nullptr;  // shoal._shoal.OwnerDiedWarning (borrowed, immortal)

struct PyList {
  List l;
  bool allow_pickle = true;
  HeldRefs held;  // the nested objects this object handed out (refs.hpp)
};

// The PyList of `self`, or nullptr with TypeError set (bindings.hpp).
[[gnu::always_inline]] inline PyList* list_of(PyObject* self) noexcept {
  return ready_inst<PyList>(self);
}

// Runs f() (which may throw) under the list's lock: 0, or -1 with the error set.
template <class F>
int write_locked(PyList* pl, F&& f) noexcept {
  if (write_locked_core(pl->l, g_owner_died_warning,
                        "shoal.List: a writer died holding the list's lock; its last single "
                        "operation was completed or rolled back (a compound update it made "
                        "under l.lock is not rolled back)",
                        std::forward<F>(f)) != 0) {
    return -1;
  }
  pl->held.clear();  // a write may have removed what this object held
  return 0;
}

// The values of a Python iterable as Items: 0, or -1 with the error set.
int values_of(const PyList* pl, PyObject* seq, const char* what, std::vector<Item>* out) noexcept {
  PyObject* fast = PySequence_Fast(seq, what);
  if (fast == nullptr) return -1;
  const Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
  PyObject** items = PySequence_Fast_ITEMS(fast);
  try {
    out->reserve(static_cast<size_t>(n));
    for (Py_ssize_t i = 0; i < n; ++i) {
      Item v;
      if (value_item(pl->allow_pickle, items[i], &v, "shoal.List") != 0) {
        Py_DECREF(fast);
        return -1;
      }
      out->push_back(std::move(v));
    }
  } catch (...) {
    Py_DECREF(fast);
    PyErr_NoMemory();
    return -1;
  }
  Py_DECREF(fast);
  return 0;
}

// Items as a new Python list, or nullptr with the error set.
PyObject* py_list_of(const std::vector<Item>& vs) noexcept {
  PyObject* out = PyList_New(static_cast<Py_ssize_t>(vs.size()));
  if (out == nullptr) return nullptr;
  for (size_t i = 0; i < vs.size(); ++i) {
    PyObject* o = to_py(vs[i]);
    if (o == nullptr) {
      Py_DECREF(out);
      return nullptr;
    }
    PyList_SET_ITEM(out, static_cast<Py_ssize_t>(i), o);
  }
  return out;
}

// A Python slice as a shoal::Slice: 0, or -1 with the error set. PySlice_Unpack's defaults
// for None (PY_SSIZE_T_MIN/MAX) clamp exactly as None does.
int slice_of(PyObject* key, Slice* out) noexcept {
  Py_ssize_t start = 0, stop = 0, step = 0;
  if (PySlice_Unpack(key, &start, &stop, &step) < 0) return -1;
  out->start = start;
  out->stop = stop;
  out->step = step;
  return 0;
}

// An index as int64 (any int; a huge one saturates, which is out of range either way): 0, or
// -1 with the error set (TypeError naming list indices, as list's).
int index_of(PyObject* key, int64_t* out) noexcept {
  if (!PyIndex_Check(key)) {
    PyErr_Format(PyExc_TypeError, "list indices must be integers or slices, not %.200s",
                 Py_TYPE(key)->tp_name);
    return -1;
  }
  const Py_ssize_t i = PyNumber_AsSsize_t(key, nullptr);  // clamps, no OverflowError
  if (i == -1 && PyErr_Occurred()) return -1;
  *out = i;
  return 0;
}

// ---- the slots --------------------------------------------------------------------------

Py_ssize_t list_len(PyObject* self) noexcept {
  PyList* pl = list_of(self);
  if (pl == nullptr) return -1;
  try {
    return static_cast<Py_ssize_t>(pl->l.size());
  } catch (...) {
    set_error_from_current_exception();
    return -1;
  }
}

PyObject* list_getitem(PyObject* self, PyObject* key) noexcept {
  PyList* pl = list_of(self);
  if (pl == nullptr) return nullptr;
  if (PySlice_Check(key)) {
    Slice s;
    if (slice_of(key, &s) != 0) return nullptr;
    std::vector<Item> vs;
    try {
      vs = pl->l.slice(s);
    } catch (...) {
      set_error_from_current_exception();
      return nullptr;
    }
    return py_list_of(vs);
  }
  int64_t i = 0;
  if (index_of(key, &i) != 0) return nullptr;
  std::optional<Item> v;
  try {
    v = pl->l.get(i);
  } catch (...) {
    set_error_from_current_exception();
    return nullptr;
  }
  if (!v) {
    PyErr_SetString(PyExc_IndexError, "list index out of range");
    return nullptr;
  }
  return to_py(*v, nullptr, &pl->held);
}

int list_setitem(PyObject* self, PyObject* key, PyObject* value) noexcept {
  PyList* pl = list_of(self);
  if (pl == nullptr) return -1;
  if (PySlice_Check(key)) {
    Slice s;
    if (slice_of(key, &s) != 0) return -1;
    if (value == nullptr) return write_locked(pl, [&] { pl->l.del_slice(s); });
    std::vector<Item> vs;
    if (values_of(pl, value, "can only assign an iterable", &vs) != 0) return -1;
    return write_locked(pl, [&] { pl->l.set_slice(s, vs); });
  }
  int64_t i = 0;
  if (index_of(key, &i) != 0) return -1;
  bool ok = false;
  if (value == nullptr) {
    if (write_locked(pl, [&] { ok = pl->l.pop(i).has_value(); }) != 0) return -1;
  } else {
    Item v;
    if (value_item(pl->allow_pickle, value, &v, "shoal.List") != 0) return -1;
    if (write_locked(pl, [&] { ok = pl->l.set(i, v); }) != 0) return -1;
  }
  if (!ok) {
    PyErr_SetString(PyExc_IndexError, "list assignment index out of range");
    return -1;
  }
  return 0;
}

// x in l: Python's == against each element in turn (a walk by index, as list's), stopping at
// the first equal one.
int list_contains(PyObject* self, PyObject* x) noexcept {
  PyList* pl = list_of(self);
  if (pl == nullptr) return -1;
  try {
    List::Cursor c = pl->l.cursor();
    Item v;
    while (c.next(&v)) {
      PyObject* o = to_py(v);
      if (o == nullptr) return -1;
      const int r = PyObject_RichCompareBool(o, x, Py_EQ);
      Py_DECREF(o);
      if (r != 0) return r;
    }
    return 0;
  } catch (...) {
    set_error_from_current_exception();
    return -1;
  }
}

PyObject* list_append(PyObject* self, PyObject* value) noexcept {
  PyList* pl = list_of(self);
  if (pl == nullptr) return nullptr;
  Item v;
  if (value_item(pl->allow_pickle, value, &v, "shoal.List") != 0) return nullptr;
  if (write_locked(pl, [&] { pl->l.append(v); }) != 0) return nullptr;
  Py_RETURN_NONE;
}

// ---- iteration --------------------------------------------------------------------------

struct PyListIter {
  List::Cursor cursor;
};

PyObject* iter_iternext(PyObject* self) noexcept {
  if (!nb::inst_ready(self)) {
    PyErr_SetString(PyExc_TypeError, "not initialised");
    return nullptr;
  }
  try {
    Item v;
    if (!nb::inst_ptr<PyListIter>(self)->cursor.next(&v)) return nullptr;  // the end
    return to_py(v);
  } catch (...) {
    set_error_from_current_exception();
    return nullptr;
  }
}

PyObject* iter_self(PyObject* self) noexcept { return Py_NewRef(self); }

int iter_traverse(PyObject* self, visitproc visit, void* arg) {
  Py_VISIT(Py_TYPE(self));
  return 0;
}

PyType_Slot iter_slots[] = {{Py_tp_iter, reinterpret_cast<void*>(iter_self)},
                            {Py_tp_iternext, reinterpret_cast<void*>(iter_iternext)},
                            {Py_tp_traverse, reinterpret_cast<void*>(iter_traverse)},
                            {0, nullptr}};

PyObject* list_iter(PyObject* self) noexcept {
  PyList* pl = list_of(self);
  if (pl == nullptr) return nullptr;
  try {
    return nb::cast(PyListIter{pl->l.cursor()}).release().ptr();
  } catch (...) {
    set_error_from_current_exception();
    return nullptr;
  }
}

PyMethodDef list_methods[] = {
    {"append", list_append, METH_O,
     "append($self, object, /)\n--\n\nAppend object to the end of the list. Atomic across "
     "processes."},
    {nullptr, nullptr, 0, nullptr}};

// Traverse and clear: container_bind.hpp (a list that holds itself is a cycle the GC breaks).
PyType_Slot list_slots[] = {{Py_tp_traverse, reinterpret_cast<void*>(held_traverse<PyList>)},
                            {Py_tp_clear, reinterpret_cast<void*>(held_clear<PyList>)},
                            {Py_mp_length, reinterpret_cast<void*>(list_len)},
                            {Py_sq_length, reinterpret_cast<void*>(list_len)},
                            {Py_mp_subscript, reinterpret_cast<void*>(list_getitem)},
                            {Py_mp_ass_subscript, reinterpret_cast<void*>(list_setitem)},
                            {Py_sq_contains, reinterpret_cast<void*>(list_contains)},
                            {Py_tp_iter, reinterpret_cast<void*>(list_iter)},
                            {Py_tp_methods, list_methods},
                            {0, nullptr}};

// Runs f under the lock from a nanobind method (errors propagate as exceptions).
template <class F>
void locked(PyList& pl, F&& f) {
  if (write_locked(&pl, std::forward<F>(f)) != 0) throw nb::python_error();
}

std::vector<Item> values_vec(const PyList& pl, nb::handle seq) {
  std::vector<Item> vs;
  if (values_of(&pl, seq.ptr(), "expected an iterable", &vs) != 0) throw nb::python_error();
  return vs;
}

}  // namespace

void register_list(nb::module_& m) {
  g_owner_died_warning = m.attr("OwnerDiedWarning").ptr();  // register_sync made it

  nb::class_<PyListIter>(m, "ListIterator", nb::type_slots(iter_slots),
                         "An iterator over a shoal.List (private): by index, weakly consistent "
                         "across processes.");

  nb::class_<PyList> cls(m, "ListCore", nb::type_slots(list_slots), nb::is_weak_referenceable(),
                         "The C++ shoal::List behind shoal.List (private): its hot methods, in C.");
  cls.def(
         "__init__",
         [](PyList* self, nb::handle source, bool allow_pickle) {
           PyList* pl = new (self) PyList{open_container<List>(source), allow_pickle, HeldRefs{}};
            const List* lp = &pl->l;  // lives as long as the held objects (both in *pl)
            pl->held.size = [lp] { return lp->size(); };
            pl->held.names = [lp](std::vector<Id128>* ids) {
              for (const Item& v : lp->items()) {
                if (const auto* r = std::get_if<ObjectRef>(&v)) ids->push_back(r->object);
              }
            };
          },
          "source"_a.none(), "allow_pickle"_a,
          "A new list (source None), the list a handle names, or the list in a shoal._shoal.Heap "
          "(IncompatibleSegmentError when the heap holds no list).")
      .def_prop_ro(
          "allow_pickle", [](const PyList& l) { return l.allow_pickle; },
          "Whether values of other types than None, bool, int, float, str and bytes are stored "
          "by pickling (else TypeError).")
      .def(
          "_items",
          [](const PyList& l) {
            nb::object r = nb::steal(py_list_of(l.l.items()));
            if (!r.is_valid()) throw nb::python_error();
            return r;
          },
          "Every element as a plain list, read at one instant.")
      .def(
          "_extend",
          [](PyList& l, nb::handle seq) {
            std::vector<Item> vs = values_vec(l, seq);
            locked(l, [&] { l.l.extend(vs); });
          },
          "values"_a, "Append every value of a sequence, all or none, in one step.")
      .def(
          "_insert",
          [](PyList& l, int64_t i, nb::handle value) {
            Item v;
            if (value_item(l.allow_pickle, value.ptr(), &v, "shoal.List") != 0) throw nb::python_error();
            locked(l, [&] { l.l.insert(i, v); });
          },
          "index"_a, "value"_a.none(), "Insert before index (clamped as list.insert).")
      .def(
          "_pop",
          [](PyList& l, int64_t i) -> nb::object {
            std::optional<Item> v;
            locked(l, [&] { v = l.l.pop(i); });
            if (!v) return nb::none();
            nb::object r = nb::steal(to_py(*v));
            if (!r.is_valid()) throw nb::python_error();
            return nb::make_tuple(r);
          },
          "index"_a, "Remove and return (element,) at index; None when out of range.")
      .def("clear", [](PyList& l) { locked(l, [&] { l.l.clear(); }); },
           "Remove every element. Atomic across processes.")
      .def("reverse", [](PyList& l) { locked(l, [&] { l.l.reverse(); }); },
           "Reverse the list in place, in one step for other processes.")
      .def(
          "_permute",
          [](PyList& l, const std::vector<uint64_t>& perm) {
            locked(l, [&] { l.l.permute(perm); });
          },
          "perm"_a, "Element j becomes the old element perm[j], in one step.")
      .def(
          "_set_all",
          [](PyList& l, nb::handle seq) {
            std::vector<Item> vs = values_vec(l, seq);
            locked(l, [&] { l.l.set_slice(Slice{}, vs); });
          },
          "values"_a, "Replace every element by the values of a sequence, in one step.")
      .def(
          "_stats",
          [](const PyList& l) {
            const ListStats s = l.l.stats();
            nb::dict r = stats_dict(s);
            r["replaces"] = s.replaces;
            return r;
          },
          "Counters of the list and its heap.")
      .def(
          "_check",
          [](PyList& l) {
            const ListReport r = check_without_gil(l.l);
            return nb::make_tuple(r.size, r.capacity, r.node_blocks);
          },
          "Takes the lock (repairing a dead writer's operation) and checks every invariant "
          "(CorruptSegmentError names the first failure): (size, capacity, node blocks).");
  def_lock_and_handle<&PyList::l>(
      cls, "A handle naming this list, for shoal.attach in any process of the session.",
      "The list's root segment (what shoal.hold holds).");
}

}  // namespace shoal::py
