// python/bindings/sync_bind.cpp — the C++ sync objects (include/shoal/sync.hpp) as thin private
// classes (shoal._shoal.SyncMutex, ...); python/shoal/_sync.py builds shoal.Lock and its kin on
// them.
//
// Waiting (issue 14): the hot methods take positional arguments only (no keyword parsing); an
// acquire first tries the non-blocking path with the GIL held and releases the GIL only when it
// must actually wait. It then waits interruptibly: on kInterrupted it re-takes the GIL and runs
// PyErr_CheckSignals(); if a handler raised (Ctrl-C: KeyboardInterrupt), the exception
// propagates with nothing acquired, else it waits again with the same absolute deadline.
// Statuses go back to Python as ints (SyncStatus's values: 0 ok, 1 owner died, 2 timeout,
// 4 broken); _sync.py turns them into the stdlib's outcomes.
#include <nanobind/nanobind.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>

#include <cstdint>
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

  nb::class_<Mutex>(m, "SyncMutex", "shoal::Mutex (private: shoal.Lock wraps it).")
      .def_static("create", &Mutex::create)
      .def_static("from_segment", [](const PySegment& s) { return Mutex::from_segment(s.seg); })
      .def("acquire",
           [](Mutex& mu, bool block, double timeout) {
             return acquire_with([&](Deadline d, bool i) { return mu.lock(d, i); }, block,
                                 timeout);
           })
      .def("release", &Mutex::unlock)
      .def_prop_ro("owner_died", &Mutex::owner_died)
      .def_prop_ro("held", &Mutex::held_by_this_process)
      .def_prop_ro("locked", &Mutex::locked)
      .def("send_handle", [](const Mutex& mu) { return send_handle(mu.segment()); })
      .def("segment", [](const Mutex& mu) { return PySegment{mu.segment()}; });

  nb::class_<RecursiveMutex>(m, "SyncRecursiveMutex", "shoal::RecursiveMutex (private).")
      .def_static("create", &RecursiveMutex::create)
      .def_static("from_segment",
                  [](const PySegment& s) { return RecursiveMutex::from_segment(s.seg); })
      .def("acquire",
           [](RecursiveMutex& mu, bool block, double timeout) {
             return acquire_with([&](Deadline d, bool i) { return mu.lock(d, i); }, block,
                                 timeout);
           })
      .def("release", &RecursiveMutex::unlock)
      .def_prop_ro("count", &RecursiveMutex::count)
      .def_prop_ro("held", &RecursiveMutex::held_by_this_thread)
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

  nb::class_<Condition>(m, "SyncCondition", "shoal::Condition (private).")
      .def_static("create", &Condition::create)
      .def_static("from_segment", [](const PySegment& s) { return Condition::from_segment(s.seg); })
      .def("acquire",
           [](Condition& c, bool block, double timeout) {
             Mutex& mu = c.mutex();
             return acquire_with([&](Deadline d, bool i) { return mu.lock(d, i); }, block,
                                 timeout);
           })
      .def("release", &Condition::unlock)
      .def_prop_ro("owner_died", [](Condition& c) { return c.mutex().owner_died(); })
      .def_prop_ro("held", [](Condition& c) { return c.mutex().held_by_this_process(); })
      .def("wait",
           [](Condition& c, double timeout) {
             // Always waits (it releases the lock): no fast path. The lock is held again on
             // every return, a KeyboardInterrupt included (as threading.Condition.wait).
             return static_cast<int>(wait_released(
                 [&](Deadline d, bool i) { return c.wait(d, i); }, deadline_of(timeout)));
           })
      .def("notify", &Condition::notify)
      .def("notify_all", &Condition::notify_all)
      .def("send_handle", [](const Condition& c) { return send_handle(c.segment()); })
      .def("segment", [](const Condition& c) { return PySegment{c.segment()}; });

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
