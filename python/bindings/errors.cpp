// python/bindings/errors.cpp — the one translation table from shoal::Errc to Python exceptions.
//
// Each class derives from ShoalError and, where a Python user would reach for a builtin, from
// that builtin too (msgspec's DecodeError is also a ValueError), so `except ValueError` works.
#include <nanobind/nanobind.h>

#include <array>
#include <initializer_list>
#include <string>

#include "bindings.hpp"
#include "shoal/error.hpp"

namespace nb = nanobind;

namespace shoal::py {
namespace {

// Indexed by Errc; filled once at import, never freed (module lifetime = process lifetime).
// register_errors checks that every code has its class; an unknown code maps to ShoalError.
std::array<PyObject*, static_cast<size_t>(Errc::kCount)> g_types{};
PyObject* g_base = nullptr;  // ShoalError

PyObject* make_type(nb::module_& m, const char* name, std::initializer_list<PyObject*> bases,
                    const char* doc) {
  PyObject* tuple = PyTuple_New(static_cast<Py_ssize_t>(bases.size()));
  Py_ssize_t i = 0;
  for (PyObject* b : bases) {
    Py_INCREF(b);
    PyTuple_SET_ITEM(tuple, i++, b);
  }
  std::string full = std::string("shoal.") + name;
  PyObject* t = PyErr_NewExceptionWithDoc(full.c_str(), doc, tuple, nullptr);
  Py_DECREF(tuple);
  if (t == nullptr) throw nb::python_error();
  m.attr(name) = nb::borrow(t);
  return t;  // the reference from PyErr_NewException is kept for the process's lifetime
}

}  // namespace

void register_errors(nb::module_& m) {
  PyObject* base = make_type(m, "ShoalError", {PyExc_Exception},
                             "Base of every error shoal raises.");
  g_base = base;
  auto set = [&](Errc c, PyObject* t) { g_types[static_cast<size_t>(c)] = t; };
  set(Errc::kInvalidArgument,
      make_type(m, "InvalidArgumentError", {base, PyExc_ValueError},
                "A bad argument value, detected before any shared memory is touched."));
  set(Errc::kExists, make_type(m, "SegmentExistsError", {base, PyExc_FileExistsError},
                               "A named object with this name already exists."));
  set(Errc::kNotFound, make_type(m, "SegmentNotFoundError", {base, PyExc_FileNotFoundError},
                                 "No named object has this name."));
  set(Errc::kIncompatible,
      make_type(m, "IncompatibleSegmentError", {base},
                "Magic, format version or layout fingerprint differ from this build's."));
  set(Errc::kCorrupt, make_type(m, "CorruptSegmentError", {base},
                                "An invariant failed on data read from shared memory."));
  set(Errc::kOutOfSpace,
      make_type(m, "OutOfSpaceError", {base, PyExc_MemoryError},
                "The request exceeds MemAvailable, the cgroup limit or SHOAL_MAX_BYTES."));
  PyObject* timeout = make_type(m, "ShoalTimeoutError", {base, PyExc_TimeoutError},
                                "A deadline passed (the broker's start or answer, a wait).");
  set(Errc::kTimeout, timeout);
  set(Errc::kLockTimeout,
      make_type(m, "LockTimeoutError", {timeout},
                "A wait for a lock, semaphore, condition, event or barrier passed its deadline."));
  set(Errc::kOwnerDied, make_type(m, "OwnerDiedError", {base},
                                  "A lock was acquired, but its previous holder died holding it."));
  set(Errc::kStaleHandle,
      make_type(m, "StaleHandleError", {base},
                "The handle names an object already freed, or a session that is not running."));
  set(Errc::kSessionGone,
      make_type(m, "SessionGoneError", {base},
                "The session broker is gone: mapped objects work, new attaches do not."));
  set(Errc::kDecode, make_type(m, "DecodeError", {base, PyExc_ValueError},
                               "A malformed handle, blob or file; the message names the offset."));
  set(Errc::kPermission,
      make_type(m, "AccessDeniedError", {base, PyExc_PermissionError},
                "The runtime directory or session belongs to another user."));
  set(Errc::kSystem, make_type(m, "ShoalOSError", {base, PyExc_OSError},
                               "An operating-system call failed; the message has the errno."));

  for (size_t i = 1; i < g_types.size(); ++i) {
    if (g_types[i] == nullptr) {
      throw nb::import_error(("shoal: errors.cpp has no Python class for error code " +
                              std::string(errc_name(static_cast<Errc>(i))))
                                 .c_str());
    }
  }

  nb::register_exception_translator(
      [](const std::exception_ptr& p, void*) {
        try {
          std::rethrow_exception(p);
        } catch (const shoal::Error& e) {
          set_shoal_error(e);
        }
      },
      nullptr);
}

PyObject* shoal_error_type(Errc c) noexcept {
  auto i = static_cast<size_t>(c);
  return i > 0 && i < g_types.size() ? g_types[i] : g_base;
}

void set_shoal_error(const shoal::Error& e) noexcept {
  PyErr_SetString(shoal_error_type(e.code()), e.what());
}

void set_error_from_current_exception() noexcept {
  try {
    throw;
  } catch (const shoal::Error& e) {
    set_shoal_error(e);
  } catch (nb::python_error& e) {
    e.restore();
  } catch (const nb::builtin_exception& e) {  // nb::type_error(...) and kin, as nanobind maps them
    PyObject* t = PyExc_RuntimeError;
    switch (e.type()) {
      case nb::exception_type::stop_iteration: t = PyExc_StopIteration; break;
      case nb::exception_type::index_error: t = PyExc_IndexError; break;
      case nb::exception_type::key_error: t = PyExc_KeyError; break;
      case nb::exception_type::value_error: t = PyExc_ValueError; break;
      case nb::exception_type::type_error: t = PyExc_TypeError; break;
      case nb::exception_type::buffer_error: t = PyExc_BufferError; break;
      case nb::exception_type::import_error: t = PyExc_ImportError; break;
      case nb::exception_type::attribute_error: t = PyExc_AttributeError; break;
      default: break;
    }
    PyErr_SetString(t, e.what());
  } catch (const std::out_of_range& e) {
    PyErr_SetString(PyExc_IndexError, e.what());
  } catch (const std::bad_alloc&) {
    PyErr_NoMemory();
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_RuntimeError, e.what());
  } catch (...) {
    PyErr_SetString(PyExc_RuntimeError, "unknown C++ exception");
  }
}

}  // namespace shoal::py
