// python/bindings/sync_bind.cpp — the C++ sync objects (include/shoal/sync.hpp) for
// python/shoal/_sync.py: private classes over each object (shoal._shoal.SyncMutex, ...), and
// SyncLock, the base class of shoal.Lock, RLock and Condition.
//
// Waiting (issue 14): the hot methods take positional arguments only (no keyword parsing) but
// SyncLock.acquire, which takes multiprocessing's (block=True, timeout=None) without an
// argument parser; an acquire first tries the non-blocking path with the GIL held and releases
// the GIL only when it must actually wait. It then waits interruptibly: on kInterrupted it
// re-takes the GIL and runs PyErr_CheckSignals(); if a handler raised (Ctrl-C:
// KeyboardInterrupt), the exception propagates with nothing acquired, else it waits again with
// the same absolute deadline. The other classes return statuses as ints (SyncStatus's values:
// 0 ok, 1 owner died, 2 timeout, 4 broken); _sync.py turns them into the stdlib's outcomes.
//
// SyncLock's acquire, release, __enter__, __exit__, owner_died and _locked are raw CPython
// methods (Py_tp_methods, Py_tp_getset): an uncontended `lock.acquire(); lock.release()` is two
// C calls, with no Python frame and no nanobind dispatch, and the owner-died policy (the
// warning, OwnerDiedError) is applied here too. They are what shoal.Lock's speed rests on:
// keep them free of Python-level calls on the path that takes a free lock.
#include <nanobind/nanobind.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <variant>

#include "bindings.hpp"
#include "layout/sync_layout.hpp"
#include "shoal/sync.hpp"

namespace nb = nanobind;
using namespace nb::literals;

namespace shoal::py {
namespace {

// timeout < 0: no deadline (block forever); else seconds from now.
Deadline deadline_of(double timeout) {
  return timeout < 0 ? Deadline::never() : Deadline::after(timeout);
}

// Waits on f(deadline, interruptible) without the GIL, retrying after interruptions whose
// signal handlers did not raise. Called with the GIL held.
template <class F>
SyncStatus wait_released(F&& f, Deadline d) {
  for (;;) {
    SyncStatus s;
    {
      nb::gil_scoped_release nogil;
      s = f(d, true);
    }
    if (s != SyncStatus::kInterrupted) return s;
    if (PyErr_CheckSignals() != 0) throw nb::python_error();
  }
}

// An acquire: the non-blocking try with the GIL held, then (block) the wait without it.
template <class F>
int acquire_with(F&& f, bool block, double timeout) {
  SyncStatus s = f(Deadline{0}, false);
  if (s != SyncStatus::kTimeout || !block || timeout == 0) return static_cast<int>(s);
  return static_cast<int>(wait_released(f, deadline_of(timeout)));
}

template <class T>
T to_number(nb::handle h) {
  if constexpr (std::is_floating_point_v<T>) {
    double d = PyFloat_AsDouble(h.ptr());
    if (d == -1.0 && PyErr_Occurred()) throw nb::python_error();
    return static_cast<T>(d);
  } else {
    // ctypes' semantics: an int out of range wraps (Value('B').value = 256 stores 0).
    if (!PyLong_Check(h.ptr())) {
      throw nb::type_error(("an int is required, not " +
                            std::string(Py_TYPE(h.ptr())->tp_name)).c_str());
    }
    unsigned long long u = PyLong_AsUnsignedLongLongMask(h.ptr());
    if (u == static_cast<unsigned long long>(-1) && PyErr_Occurred()) throw nb::python_error();
    return static_cast<T>(static_cast<std::make_unsigned_t<T>>(u));
  }
}

using AnyValue = std::variant<SharedValue<int8_t>, SharedValue<uint8_t>, SharedValue<int16_t>,
                              SharedValue<uint16_t>, SharedValue<int32_t>, SharedValue<uint32_t>,
                              SharedValue<int64_t>, SharedValue<uint64_t>, SharedValue<float>,
                              SharedValue<double>>;

template <class T>
AnyValue make_value(char typecode, nb::handle initial) {
  return SharedValue<T>::create(initial.is_none() ? T{} : to_number<T>(initial), typecode);
}

AnyValue create_value(char tc, nb::handle initial) {
  switch (tc) {
    case 'b': return make_value<int8_t>(tc, initial);
    case 'B': return make_value<uint8_t>(tc, initial);
    case 'h': return make_value<int16_t>(tc, initial);
    case 'H': return make_value<uint16_t>(tc, initial);
    case 'i': return make_value<int32_t>(tc, initial);
    case 'I': return make_value<uint32_t>(tc, initial);
    case 'l': case 'q': return make_value<int64_t>(tc, initial);
    case 'L': case 'Q': return make_value<uint64_t>(tc, initial);
    case 'f': return make_value<float>(tc, initial);
    case 'd': return make_value<double>(tc, initial);
    default:
      throw nb::type_error(("shoal.Value: unsupported typecode " + std::string(1, tc)).c_str());
  }
}

AnyValue value_from_segment(const Segment& seg) {
  switch (detail::value_typecode(seg)) {
    case 'b': return SharedValue<int8_t>::from_segment(seg);
    case 'B': return SharedValue<uint8_t>::from_segment(seg);
    case 'h': return SharedValue<int16_t>::from_segment(seg);
    case 'H': return SharedValue<uint16_t>::from_segment(seg);
    case 'i': return SharedValue<int32_t>::from_segment(seg);
    case 'I': return SharedValue<uint32_t>::from_segment(seg);
    case 'l': case 'q': return SharedValue<int64_t>::from_segment(seg);
    case 'L': case 'Q': return SharedValue<uint64_t>::from_segment(seg);
    case 'f': return SharedValue<float>::from_segment(seg);
    case 'd': return SharedValue<double>::from_segment(seg);
    default: throw IncompatibleSegmentError("shoal.Value: unknown typecode in a value segment");
  }
}

struct PyValue {
  AnyValue v;
};

// ---- SyncLock: shoal.Lock, RLock and Condition ------------------------------------------------

// shoal.OwnerDiedWarning (a RuntimeWarning); created by register_sync, lives forever.
PyObject* g_owner_died_warning = nullptr;

// The object behind a SyncLock. Exactly one lock is taken by the hot methods: `mu` (a Lock, a
// Value's lock, a Condition's own lock), `rmu` (recursive), or, for a Condition over a given
// lock, the given SyncLock's (so that its policy and an RLock's owner_died record are the
// lock's own, whichever object took it).
struct PyLock {
  Mutex mu;
  RecursiveMutex rmu;
  Condition cond;    // a Condition's (invalid for a Lock or RLock)
  nb::object given;  // a Condition over a given lock: that SyncLock (never itself a Condition)
  bool recursive = false;
  bool raise = false;  // on_owner_died="raise"
  bool died = false;   // recursive: an acquire took it over; stays true until the last release
};

// The PyLock whose lock `self` takes and the object that reports an owner death (its class
// name, its policy): `self`'s own, or its given lock's. nullptr with TypeError set when
// SyncLock.__init__ never ran (a subclass whose __init__ did not call it).
[[gnu::always_inline]] inline PyLock* lock_of(PyObject* self, PyObject** owner) noexcept {
  PyLock* l = ready_inst<PyLock>(self);
  if (l == nullptr) return nullptr;
  if (!l->given.is_valid()) {
    *owner = self;
    return l;
  }
  *owner = l->given.ptr();
  return nb::inst_ptr<PyLock>(l->given);
}

bool held(const PyLock* l) noexcept {
  return l->recursive ? l->rmu.held_by_this_thread() : l->mu.held_by_this_process();
}

// The non-blocking try with the GIL held; then, when block and a live process holds it, the
// interruptible wait without the GIL (timeout < 0: none). May throw (a signal handler's
// exception as nb::python_error, a corrupt word).
[[gnu::always_inline]] inline SyncStatus take(PyLock* l, bool block, double timeout) {
  auto f = [l](Deadline d, bool i) { return l->recursive ? l->rmu.lock(d, i) : l->mu.lock(d, i); };
  const SyncStatus s = f(Deadline{0}, false);
  if (s != SyncStatus::kTimeout || !block || timeout == 0) return s;
  return wait_released(f, deadline_of(timeout));
}

// After an acquire that took the lock over from a dead holder (the lock is held now): an
// RLock's record, then the policy: warnings.warn(OwnerDiedWarning) pointing at the caller's
// line, or OwnerDiedError. 0, or -1 with the error set (a warning filter may turn the warning
// into one); the lock stays held either way.
[[gnu::cold, gnu::noinline]] int report_owner_died(PyObject* owner, PyLock* l) noexcept {
  if (l->recursive) l->died = true;
  const char* name = Py_TYPE(owner)->tp_name;  // a Python class's: its bare name
  if (const char* dot = std::strrchr(name, '.')) name = dot + 1;
  char msg[256];  // no allocation: this function must not throw
  std::snprintf(msg, sizeof msg,
                "shoal.%.100s: the previous holder died holding it (the lock is held now)", name);
  if (l->raise) {
    PyErr_SetString(shoal_error_type(Errc::kOwnerDied), msg);
    return -1;
  }
  return PyErr_WarnEx(g_owner_died_warning, msg, 1);
}

// release(): 0, or -1 with the error set (InvalidArgumentError when not held).
[[gnu::always_inline]] inline int release_lock(PyLock* l) noexcept {
  try {
    if (l->recursive) {
      if (!l->died) {
        l->rmu.unlock();  // the common case: no depth to read
      } else {
        const uint32_t depth = l->rmu.count();
        l->rmu.unlock();
        if (depth == 1) l->died = false;  // the last release ends the report
      }
    } else {
      l->mu.unlock();
    }
    return 0;
  } catch (...) {
    set_error_from_current_exception();
    return -1;
  }
}

bool is_name(PyObject* key, const char* name) noexcept {
  return PyUnicode_Check(key) && PyUnicode_CompareWithASCIIString(key, name) == 0;
}

// acquire's arguments (block=True, timeout=None), positional or keyword, as multiprocessing's,
// into *block and *timeout (-1: none). timeout None or negative: none; ignored without block
// (as there); NaN: InvalidArgumentError (a ValueError). 0, or -1 with the error set. Out of
// line: the common call, acquire(), never comes here.
[[gnu::noinline]] int acquire_args(PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames,
                                   bool* block, double* timeout) noexcept {
  PyObject* block_o = nullptr;
  PyObject* timeout_o = nullptr;
  if (nargs > 2) {
    PyErr_Format(PyExc_TypeError, "acquire() takes at most 2 arguments (%zd given)", nargs);
    return -1;
  }
  if (nargs > 0) block_o = args[0];
  if (nargs > 1) timeout_o = args[1];
  if (kwnames != nullptr) {
    for (Py_ssize_t i = 0, n = PyTuple_GET_SIZE(kwnames); i < n; ++i) {
      PyObject* key = PyTuple_GET_ITEM(kwnames, i);
      PyObject** slot = is_name(key, "block") ? &block_o
                        : is_name(key, "timeout") ? &timeout_o
                                                  : nullptr;
      if (slot == nullptr) {
        PyErr_Format(PyExc_TypeError, "acquire() got an unexpected keyword argument '%S'", key);
        return -1;
      }
      if (*slot != nullptr) {
        PyErr_Format(PyExc_TypeError, "acquire() got multiple values for argument '%S'", key);
        return -1;
      }
      *slot = args[nargs + i];
    }
  }
  if (block_o != nullptr) {
    const int b = PyObject_IsTrue(block_o);
    if (b < 0) return -1;
    *block = b != 0;
  }
  if (*block && timeout_o != nullptr && timeout_o != Py_None) {
    const double t = PyFloat_AsDouble(timeout_o);
    if (t == -1.0 && PyErr_Occurred()) return -1;
    if (std::isnan(t)) {
      PyErr_SetString(shoal_error_type(Errc::kInvalidArgument), "acquire(): timeout is NaN");
      return -1;
    }
    *timeout = t < 0 ? -1.0 : t;
  }
  return 0;
}

// acquire(block=True, timeout=None): True, or False when the timeout passed (at once without
// block).
PyObject* lock_acquire(PyObject* self, PyObject* const* args, Py_ssize_t nargs,
                       PyObject* kwnames) {
  PyObject* owner = nullptr;
  PyLock* l = lock_of(self, &owner);
  if (l == nullptr) return nullptr;
  bool block = true;
  double timeout = -1.0;
  if ((nargs != 0 || kwnames != nullptr) &&
      acquire_args(args, nargs, kwnames, &block, &timeout) != 0) {
    return nullptr;
  }
  SyncStatus s;
  try {
    s = take(l, block, timeout);
  } catch (...) {
    set_error_from_current_exception();
    return nullptr;
  }
  if (s == SyncStatus::kOk) Py_RETURN_TRUE;
  if (s == SyncStatus::kTimeout) Py_RETURN_FALSE;
  if (report_owner_died(owner, l) != 0) return nullptr;  // held: OwnerDiedError or the warning
  Py_RETURN_TRUE;
}

PyObject* lock_release(PyObject* self, PyObject*) {
  PyObject* owner = nullptr;
  PyLock* l = lock_of(self, &owner);
  if (l == nullptr || release_lock(l) != 0) return nullptr;
  Py_RETURN_NONE;
}

PyObject* lock_enter(PyObject* self, PyObject*) {
  PyObject* owner = nullptr;
  PyLock* l = lock_of(self, &owner);
  if (l == nullptr) return nullptr;
  SyncStatus s;
  try {
    s = take(l, true, -1.0);
  } catch (...) {
    set_error_from_current_exception();
    return nullptr;
  }
  if (s == SyncStatus::kOwnerDied && report_owner_died(owner, l) != 0) {
    // The lock came with the error (OwnerDiedError, or the warning turned into one): `with`
    // runs no __exit__ when __enter__ raises, so release it here, then re-raise.
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (held(l) && release_lock(l) != 0) PyErr_Clear();
    PyErr_Restore(type, value, tb);
    return nullptr;
  }
  Py_RETURN_TRUE;
}

PyObject* lock_exit(PyObject* self, PyObject* const*, Py_ssize_t) {
  return lock_release(self, nullptr);
}

PyObject* lock_locked(PyObject* self, PyObject*) {
  PyObject* owner = nullptr;
  PyLock* l = lock_of(self, &owner);
  if (l == nullptr) return nullptr;
  if (l->recursive) {
    PyErr_SetString(PyExc_TypeError, "_locked(): not for a recursive lock");
    return nullptr;
  }
  return PyBool_FromLong(l->mu.locked() ? 1 : 0);
}

PyObject* lock_owner_died(PyObject* self, void*) {
  PyObject* owner = nullptr;
  PyLock* l = lock_of(self, &owner);
  if (l == nullptr) return nullptr;
  // A Lock's flag is shared (any process's acquire that took over sets it); an RLock's is this
  // object's record (its holder is a thread of this process).
  return PyBool_FromLong((l->recursive ? l->died : l->mu.owner_died()) ? 1 : 0);
}

int lock_traverse(PyObject* self, visitproc visit, void* arg) {
  Py_VISIT(Py_TYPE(self));
  if (nb::inst_ready(self)) {
    PyLock* l = nb::inst_ptr<PyLock>(self);
    if (l->given.is_valid()) Py_VISIT(l->given.ptr());
  }
  return 0;
}

PyMethodDef lock_methods[] = {
    {"acquire", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(lock_acquire)),
     METH_FASTCALL | METH_KEYWORDS,
     "acquire($self, /, block=True, timeout=None)\n--\n\n"
     "Take the lock: True; False when `timeout` seconds pass first (at once with block=False). "
     "A lock whose holder died is taken over: OwnerDiedWarning (on_owner_died=\"raise\": "
     "OwnerDiedError), the lock held either way. Ctrl-C during the wait raises "
     "KeyboardInterrupt, the lock not held."},
    {"release", lock_release, METH_NOARGS,
     "release($self, /)\n--\n\nRelease the lock (InvalidArgumentError, a ValueError, when not "
     "held)."},
    {"__enter__", lock_enter, METH_NOARGS,
     "__enter__($self, /)\n--\n\nacquire(); an owner-died error releases the lock before it "
     "propagates."},
    {"__exit__", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(lock_exit)),
     METH_FASTCALL, "__exit__($self, *exc)\n--\n\nrelease()."},
    {"_locked", lock_locked, METH_NOARGS,
     "_locked($self, /)\n--\n\nWhether any process holds the (not recursive) lock."},
    {nullptr, nullptr, 0, nullptr}};

PyGetSetDef lock_getset[] = {
    {"owner_died", lock_owner_died, nullptr,
     "True from an acquire that found the previous holder dead until the release (an RLock's: "
     "until the last release).",
     nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr}};

PyType_Slot lock_slots[] = {{Py_tp_methods, lock_methods},
                            {Py_tp_getset, lock_getset},
                            {Py_tp_traverse, reinterpret_cast<void*>(lock_traverse)},
                            {0, nullptr}};

// lock_of for the nanobind methods (which check that __init__ ran): the PyLock whose lock
// `self` takes.
PyLock* target(nb::handle self) {
  PyObject* owner = nullptr;
  PyLock* l = lock_of(self.ptr(), &owner);
  if (l == nullptr) throw nb::python_error();
  return l;
}

// A Condition's: the condition's and the lock's PyLock (its own or the given one's), and the
// object that reports an owner death.
struct CondParts {
  PyLock* cond;
  PyLock* lock;
  PyObject* owner;
};
CondParts cond_of(nb::pointer_and_handle<PyLock> self) {
  if (!self.p->cond.valid()) throw nb::type_error("not a shoal.Condition");
  PyObject* owner = nullptr;
  PyLock* l = lock_of(self.h.ptr(), &owner);
  if (l == nullptr) throw nb::python_error();
  return {self.p, l, owner};
}

}  // namespace

void register_sync(nb::module_& m) {
  m.def(
      "sync_type",
      [](const PySegment& s) -> uint32_t {
        const Segment& seg = s.seg;
        if (!seg.valid() || seg.size() < layout::kSyncHeaderSize) {
          throw nb::value_error("not a sync segment");
        }
        layout::SyncHeader h;
        std::memcpy(&h, seg.data(), sizeof h);
        return h.type;
      },
      "segment"_a,
      "The type of a sync object's segment: 1 mutex, 2 recursive mutex, 3 semaphore, 4 event, "
      "5 condition, 6 barrier, 7 value.");

  nb::class_<Mutex>(m, "SyncMutex", "shoal::Mutex (private: the core of a shoal.Lock).")
      .def_static("create", &Mutex::create)
      .def_static("from_segment", [](const PySegment& s) { return Mutex::from_segment(s.seg); })
      .def("send_handle", [](const Mutex& mu) { return send_handle(mu.segment()); })
      .def("segment", [](const Mutex& mu) { return PySegment{mu.segment()}; });

  nb::class_<RecursiveMutex>(m, "SyncRecursiveMutex",
                             "shoal::RecursiveMutex (private: the core of a shoal.RLock).")
      .def_static("create", &RecursiveMutex::create)
      .def_static("from_segment",
                  [](const PySegment& s) { return RecursiveMutex::from_segment(s.seg); })
      .def("send_handle", [](const RecursiveMutex& mu) { return send_handle(mu.segment()); })
      .def("segment", [](const RecursiveMutex& mu) { return PySegment{mu.segment()}; });

  nb::class_<Semaphore>(m, "SyncSemaphore", "shoal::Semaphore (private).")
      .def_static("create", &Semaphore::create, "value"_a, "bounded"_a, "recover"_a)
      .def_static("from_segment", [](const PySegment& s) { return Semaphore::from_segment(s.seg); })
      .def("acquire",
           [](Semaphore& sem, bool block, double timeout) {
             return acquire_with([&](Deadline d, bool i) { return sem.acquire(d, i); }, block,
                                 timeout);
           })
      .def("release", &Semaphore::release)
      .def_prop_ro("value", &Semaphore::value)
      .def_prop_ro("initial_value", &Semaphore::initial_value)
      .def_prop_ro("bounded", &Semaphore::bounded)
      .def("send_handle", [](const Semaphore& s) { return send_handle(s.segment()); })
      .def("segment", [](const Semaphore& s) { return PySegment{s.segment()}; });

  nb::class_<Event>(m, "SyncEvent", "shoal::Event (private).")
      .def_static("create", &Event::create)
      .def_static("from_segment", [](const PySegment& s) { return Event::from_segment(s.seg); })
      .def("set", &Event::set)
      .def("clear", &Event::clear)
      .def("is_set", &Event::is_set)
      .def("wait",
           [](Event& e, double timeout) {
             return acquire_with([&](Deadline d, bool i) { return e.wait(d, i); }, true,
                                 timeout);
           })
      .def("send_handle", [](const Event& e) { return send_handle(e.segment()); })
      .def("segment", [](const Event& e) { return PySegment{e.segment()}; });

  nb::class_<Condition>(m, "SyncCondition",
                        "shoal::Condition (private: the core of a shoal.Condition).")
      .def_static("create", &Condition::create)
      .def_static("from_segment", [](const PySegment& s) { return Condition::from_segment(s.seg); })
      .def("send_handle", [](const Condition& c) { return send_handle(c.segment()); })
      .def("segment", [](const Condition& c) { return PySegment{c.segment()}; });

  g_owner_died_warning = PyErr_NewExceptionWithDoc(
      "shoal.OwnerDiedWarning",
      "A lock was acquired, but its previous holder died holding it: what it guards may be\n"
      "half-updated. The lock is held; ``lock.owner_died`` stays True until it is released.",
      PyExc_RuntimeWarning, nullptr);
  if (g_owner_died_warning == nullptr) throw nb::python_error();
  m.attr("OwnerDiedWarning") = nb::borrow(g_owner_died_warning);

  nb::class_<PyLock>(m, "SyncLock", nb::type_slots(lock_slots), nb::is_weak_referenceable(),
                     "The base of shoal.Lock, RLock and Condition (private): their lock "
                     "methods, in C.")
      .def(
          "__init__",
          [](PyLock* self, nb::handle core, bool raise, nb::handle lock) {
            PyLock l;  // checked before anything is constructed in place
            l.raise = raise;
            if (nb::isinstance<Mutex>(core)) {
              l.mu = nb::cast<Mutex&>(core);
            } else if (nb::isinstance<RecursiveMutex>(core)) {
              l.rmu = nb::cast<RecursiveMutex&>(core);
              l.recursive = true;
            } else if (nb::isinstance<Condition>(core)) {
              l.cond = nb::cast<Condition&>(core);
              if (lock.is_none()) {
                l.mu = l.cond.mutex();
              } else {
                if (!nb::isinstance<PyLock>(lock) || !nb::inst_ready(lock) ||
                    nb::inst_ptr<PyLock>(lock)->cond.valid()) {
                  throw nb::type_error("a condition's lock is a shoal.Lock or shoal.RLock");
                }
                l.given = nb::borrow(lock);
              }
            } else {
              throw nb::type_error("SyncLock: core is a SyncMutex, SyncRecursiveMutex or "
                                   "SyncCondition");
            }
            new (self) PyLock(std::move(l));
          },
          "core"_a, "raise_on_died"_a, "lock"_a = nb::none())
      .def_prop_ro("_policy",
                   [](nb::handle self) { return target(self)->raise ? "raise" : "warn"; })
      .def_prop_ro(
          "_held", [](nb::handle self) { return held(target(self)); },
          "Whether this process (an RLock: this thread) holds the lock (a condition's: the one "
          "it uses).")
      .def_prop_ro(
          "_count",
          [](nb::handle self) {
            const PyLock* l = target(self);
            return l->recursive ? l->rmu.count() : (l->mu.held_by_this_process() ? 1u : 0u);
          },
          "An RLock's depth held by this thread (a Lock: 1 when this process holds it).")
      .def_prop_ro("_given",
                   [](const PyLock& l) { return l.given.is_valid() ? l.given : nb::none(); })
      .def("send_handle",
           [](const PyLock& l) {
             return send_handle(l.cond.valid() ? l.cond.segment()
                                : l.recursive ? l.rmu.segment()
                                              : l.mu.segment());
           })
      .def("segment",
           [](const PyLock& l) {
             return PySegment{l.cond.valid() ? l.cond.segment()
                              : l.recursive ? l.rmu.segment()
                                            : l.mu.segment()};
           })
      .def(
          "_wait",
          [](nb::pointer_and_handle<PyLock> self, double timeout) {
            CondParts c = cond_of(self);
            Condition& cond = c.cond->cond;
            PyLock* l = c.lock;
            const bool own = !c.cond->given.is_valid();
            const SyncStatus s = wait_released(
                [&](Deadline d, bool i) {
                  if (own) return cond.wait(d, i);
                  return l->recursive ? cond.wait(l->rmu, d, i) : cond.wait(l->mu, d, i);
                },
                deadline_of(timeout));
            if (s == SyncStatus::kOwnerDied && report_owner_died(c.owner, l) != 0) {
              throw nb::python_error();  // held, as on every return
            }
            return s != SyncStatus::kTimeout;
          },
          "timeout"_a,
          "Condition.wait (timeout < 0: none); the lock is held again on every return.")
      .def(
          "_notify",
          [](nb::pointer_and_handle<PyLock> self, int64_t n) {
            CondParts c = cond_of(self);
            if (!held(c.lock)) throw std::runtime_error("cannot notify on un-acquired lock");
            if (n > 0) c.cond->cond.notify(static_cast<uint32_t>(std::min<int64_t>(n, UINT32_MAX)));
          },
          "n"_a)
      .def("_notify_all", [](nb::pointer_and_handle<PyLock> self) {
        CondParts c = cond_of(self);
        if (!held(c.lock)) throw std::runtime_error("cannot notify on un-acquired lock");
        c.cond->cond.notify_all();
      });

  nb::class_<Barrier>(m, "SyncBarrier", "shoal::Barrier (private).")
      .def_static("create", &Barrier::create, "parties"_a, "timeout"_a)
      .def_static("from_segment", [](const PySegment& s) { return Barrier::from_segment(s.seg); })
      .def("wait",
           [](Barrier& b, double timeout) {
             uint32_t index = 0;
             SyncStatus s = wait_released(
                 [&](Deadline d, bool i) { return b.wait(d, i, &index); },
                 timeout < 0 ? deadline_of(b.timeout() == HUGE_VAL ? -1.0 : b.timeout())
                             : deadline_of(timeout));
             return std::make_pair(static_cast<int>(s), index);
           })
      .def("abort", &Barrier::abort)
      .def("reset", &Barrier::reset)
      .def_prop_ro("broken", &Barrier::broken)
      .def_prop_ro("parties", &Barrier::parties)
      .def_prop_ro("timeout", &Barrier::timeout)
      .def_prop_ro("n_waiting", &Barrier::n_waiting)
      .def("send_handle", [](const Barrier& b) { return send_handle(b.segment()); })
      .def("segment", [](const Barrier& b) { return PySegment{b.segment()}; });

  nb::class_<PyValue>(m, "SyncValue", "shoal::SharedValue<T> (private: shoal.Value wraps it).")
      .def_static(
          "create",
          [](const std::string& typecode, nb::handle initial) {
            if (typecode.size() != 1) throw nb::type_error("a typecode is one character");
            return PyValue{create_value(typecode[0], initial)};
          },
          "typecode"_a, "initial"_a.none())
      .def_static("from_segment",
                  [](const PySegment& s) { return PyValue{value_from_segment(s.seg)}; })
      .def("load",
           [](const PyValue& pv) {
             return std::visit([](const auto& v) { return nb::cast(v.load()); }, pv.v);
           })
      .def_prop_ro(
          "value",
          [](const PyValue& pv) {
            return std::visit([](const auto& v) { return nb::cast(v.load()); }, pv.v);
          },
          "load() as a property: shoal.Value.value reads it with no Python frame.")
      .def("store",
           [](PyValue& pv, nb::handle x) {
             std::visit(
                 [&](auto& v) {
                   using T = std::remove_cvref_t<decltype(v.load())>;
                   v.store(to_number<T>(x));
                 },
                 pv.v);
           })
      .def("add",
           [](PyValue& pv, nb::handle x) {
             return std::visit(
                 [&](auto& v) {
                   using T = std::remove_cvref_t<decltype(v.load())>;
                   return nb::cast(v.add(to_number<T>(x)));
                 },
                 pv.v);
           })
      .def("exchange",
           [](PyValue& pv, nb::handle x) {
             return std::visit(
                 [&](auto& v) {
                   using T = std::remove_cvref_t<decltype(v.load())>;
                   return nb::cast(v.exchange(to_number<T>(x)));
                 },
                 pv.v);
           })
      .def("compare_exchange",
           [](PyValue& pv, nb::handle expected, nb::handle desired) {
             return std::visit(
                 [&](auto& v) {
                   using T = std::remove_cvref_t<decltype(v.load())>;
                   T e = to_number<T>(expected);
                   return v.compare_exchange(e, to_number<T>(desired));
                 },
                 pv.v);
           })
      .def_prop_ro("typecode",
                   [](const PyValue& pv) {
                     return std::visit([](const auto& v) { return std::string(1, v.typecode()); },
                                       pv.v);
                   })
      .def_prop_ro("address",
                   [](PyValue& pv) {
                     return std::visit(
                         [](auto& v) {
                           using T = std::remove_cvref_t<decltype(v.load())>;
                           layout::ValueState* st = detail::value_state(
                               v.segment(), sizeof(T), detail::value_kind_of<T>());
                           return reinterpret_cast<uintptr_t>(detail::value_bytes(st));
                         },
                         pv.v);
                   })
      .def("lock",
           [](PyValue& pv) { return std::visit([](auto& v) { return v.get_lock(); }, pv.v); })
      .def("send_handle",
           [](const PyValue& pv) {
             return std::visit([](const auto& v) { return send_handle(v.segment()); }, pv.v);
           })
      .def("segment", [](const PyValue& pv) {
        return std::visit([](const auto& v) { return PySegment{v.segment()}; }, pv.v);
      });
}

}  // namespace shoal::py
