// python/bindings/bindings.hpp — declarations shared by the binding translation units.
#pragma once

#include <nanobind/nanobind.h>

#include "shoal/segment.hpp"

namespace shoal::py {

/// The Python object behind shoal._shoal.Segment.
struct PySegment {
  Segment seg;
  Py_ssize_t exports = 0;  // live Py_buffer views; guarded by the GIL
};

/// Segment.attach(handle): any object is taken (a non-str raises TypeError, an unencodable str
/// DecodeError); the attach itself runs without the GIL.
PySegment attach_segment(nanobind::handle handle);
/// shoal._shoal.Hold, what shoal.hold(obj) returns: a Segment::Hold (python/shoal/_hold.py).
struct PyHold {
  Segment::Hold hold;
};
/// The handle pickling writes (HandleMode::kSend): held while a Hold lives, else pinned (the
/// round trip then runs without the GIL).
std::string send_handle(const Segment& seg);

/// The T behind `self` (a nanobind instance) for a raw CPython slot or method, or nullptr with
/// TypeError set when its __init__ never ran (a subclass whose __init__ did not call
/// super().__init__()).
template <class T>
[[gnu::always_inline]] inline T* ready_inst(PyObject* self) noexcept {
  if (!nanobind::inst_ready(self)) {
    PyErr_Format(PyExc_TypeError,
                 "%s object is not initialised: its __init__ must call super().__init__()",
                 Py_TYPE(self)->tp_name);
    return nullptr;
  }
  return nanobind::inst_ptr<T>(self);
}

void register_errors(nanobind::module_& m);
/// For raw CPython slot functions (which nanobind does not wrap): inside a catch block, set the
/// Python error that matches the exception being handled (ShoalError subclasses, IndexError for
/// std::out_of_range, MemoryError, nanobind's builtin exceptions (nb::type_error, ...) as the
/// builtins they name, a pending nanobind python_error restored).
void set_error_from_current_exception() noexcept;
void set_shoal_error(const shoal::Error& e) noexcept;
/// The Python class for an Errc (ShoalError when unknown); borrowed, lives forever.
PyObject* shoal_error_type(Errc c) noexcept;
/// The bound on nesting of every recursive walk (python/bindings/nesting.cpp): Python's recursion
/// limit and, whatever that limit is, the C stack. enter_nested returns 0, or -1 with
/// RecursionError set ("... nesting too deep<where>: ..."); pair each 0 with leave_nested().
/// check_stack is the C stack half alone, for walks whose Python frames Python already counts.
int enter_nested(const char* where) noexcept;
void leave_nested() noexcept;
int check_stack(const char* where) noexcept;
void register_segment(nanobind::module_& m);
void register_array(nanobind::module_& m);
void register_frozen(nanobind::module_& m);
void register_heap(nanobind::module_& m);
void register_sync(nanobind::module_& m);
void register_dict(nanobind::module_& m);  // after register_sync (OwnerDiedWarning)
void register_list(nanobind::module_& m);  // after register_sync (OwnerDiedWarning)
void register_pipe(nanobind::module_& m);
void register_queue(nanobind::module_& m);
void register_refs(nanobind::module_& m);
void register_pool(nanobind::module_& m);
}  // namespace shoal::py
