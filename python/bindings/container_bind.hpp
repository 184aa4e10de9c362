// python/bindings/container_bind.hpp — what the container bindings (dict_bind.cpp, list_bind.cpp)
// share: the write lock taken as Python waits (the
// try with the GIL held, then interruptibly without it), a write run under the lock with its
// OwnerDiedWarning, the C++ container a constructor's source names, and the lock, handle and
// segment methods. Each binding keeps its own slots, methods and messages; C is shoal::Dict or
// shoal::List, Py its Python object (PyDict, PyList).
#pragma once

#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>

#include <cmath>
#include <string>
#include <utility>

#include "bindings.hpp"
#include "shoal/error.hpp"
#include "shoal/heap.hpp"
#include "shoal/sync.hpp"

namespace shoal::py {

/// Takes the container's lock: the try with the GIL held, then (taken by another process) the
/// interruptible wait without the GIL; a signal handler's exception (Ctrl-C) propagates with
/// nothing taken. timeout < 0: none. Returns kOk, kOwnerDied or kTimeout; may throw.
template <class C>
SyncStatus take_lock(C& c, bool block, double timeout) {
  SyncStatus s = c.lock(Deadline{0}, false);
  if (s != SyncStatus::kTimeout || !block || timeout == 0) return s;
  const Deadline dl = timeout < 0 ? Deadline::never() : Deadline::after(timeout);
  for (;;) {
    {
      nanobind::gil_scoped_release nogil;
      s = c.lock(dl, true);
    }
    if (s != SyncStatus::kInterrupted) return s;
    if (PyErr_CheckSignals() != 0) throw nanobind::python_error();
  }
}

/// Runs f() (which may throw) under the container's lock, taken blocking: 0, or -1 with the
/// error set. Taken from a dead holder, it first warns `owner_died` as `warning`
/// (OwnerDiedWarning); a warning that raises (a filter set to "error") releases the lock and
/// runs nothing.
template <class C, class F>
int write_locked_core(C& c, PyObject* warning, const char* owner_died, F&& f) noexcept {
  try {
    const SyncStatus s = take_lock(c, true, -1.0);
    if (s == SyncStatus::kOwnerDied && PyErr_WarnEx(warning, owner_died, 1) != 0) {
      c.unlock();
      return -1;
    }
    try {
      f();
    } catch (...) {
      c.unlock();
      throw;
    }
    c.unlock();
    return 0;
  } catch (...) {
    set_error_from_current_exception();
    return -1;
  }
}

/// The container a constructor's source names: a new one (None), the one in a
/// shoal._shoal.Heap, or the one a handle names. Creating and attaching by handle run without
/// the GIL.
template <class C>
C open_container(nanobind::handle source) {
  if (source.is_none()) {
    nanobind::gil_scoped_release nogil;
    return C::create();
  }
  if (nanobind::isinstance<Heap>(source)) return C::attach(nanobind::cast<Heap>(source));
  const std::string handle = nanobind::cast<std::string>(source);
  nanobind::gil_scoped_release nogil;
  return C::attach(handle);
}

/// Py_tp_traverse of a container class (Py has a HeldRefs `held`). Our own: nanobind's
/// (installed for a weak-referenceable type) reads tp_dictoffset, which is -1 (a managed dict)
/// for a Python subclass on 3.11+: a wild read during GC.
template <class Py>
int held_traverse(PyObject* self, visitproc visit, void* arg) {
  Py_VISIT(Py_TYPE(self));
  if (nanobind::inst_ready(self)) return nanobind::inst_ptr<Py>(self)->held.traverse(visit, arg);
  return 0;
}

/// Py_tp_clear: the GC breaks a cycle through held objects (a container that holds itself).
template <class Py>
int held_clear(PyObject* self) {
  if (nanobind::inst_ready(self)) nanobind::inst_ptr<Py>(self)->held.clear();
  return 0;
}

/// The counters both containers' stats have, as a dict (the caller adds its own).
template <class Stats>
nanobind::dict stats_dict(const Stats& s) {
  nanobind::dict r;
  r["size"] = s.size;
  r["capacity"] = s.capacity;
  r["recoveries"] = s.recoveries;
  r["heap_live_bytes"] = s.heap_live_bytes;
  r["heap_reserved_bytes"] = s.heap_reserved_bytes;
  return r;
}

/// The container's check(), run without the GIL (it takes the write lock).
template <class C>
auto check_without_gil(C& c) {
  nanobind::gil_scoped_release nogil;
  return c.check();
}

/// The lock, handle and segment methods of a container's class: `Core` is the member of Py
/// that holds the C++ container; the docs that name the container are the caller's (string
/// literals).
template <auto Core, class Py>
void def_lock_and_handle(nanobind::class_<Py>& cls, const char* handle_doc,
                         const char* segment_doc) {
  using namespace nanobind::literals;
  cls.def(
         "_lock",
         [](Py& p, bool block, double timeout) {
           if (std::isnan(timeout)) throw InvalidArgumentError("acquire(): timeout is NaN");
           return static_cast<int>(take_lock(p.*Core, block, timeout));
         },
         "block"_a, "timeout"_a,
         "Take the write lock: 0 taken, 1 taken from a dead holder, 2 timed out. timeout < 0: "
         "none.")
      .def("_unlock", [](Py& p) { (p.*Core).unlock(); }, "Release the write lock once.")
      .def_prop_ro(
          "_lock_depth", [](const Py& p) { return (p.*Core).lock_depth(); },
          "This thread's recursion depth on the write lock (0: not held).")
      .def(
          "send_handle", [](const Py& p) { return send_handle((p.*Core).heap().root_segment()); },
          "The handle pickling writes (held inside shoal.hold, else pinned).")
      .def(
          "handle", [](const Py& p, bool pin) { return (p.*Core).handle(pin); }, "pin"_a = true,
          handle_doc)
      .def(
          "segment", [](const Py& p) { return PySegment{(p.*Core).heap().root_segment()}; },
          segment_doc);
}

}  // namespace shoal::py
