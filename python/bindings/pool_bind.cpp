// python/bindings/pool_bind.cpp — the inner loop of a shoal.Pool worker (shoal/_pool_worker.py).
//
// A worker runs a chunk's tasks one after another, and before each writes the task's index into
// its row of the pool's slot table (a shared int64 table the parent reads after a death, to tell
// the task that was running from those whose results died buffered in the worker: see
// docs/design/pool.md). In Python that loop cost about 80 ns a task over multiprocessing's
// `list(map(fn, chunk))`; here it is a call and a relaxed store.
//
// What must stay true:
// - the index store comes before the call, so a worker killed inside task i shows index i;
// - a task's Exception (not a BaseException such as KeyboardInterrupt or SystemExit, which
//   propagate) stops the run and is returned with the position of its task, its traceback kept,
//   for the caller to record as that task's error and go on from the next one.
#include <atomic>
#include <cstdint>

#include "bindings.hpp"
#include "shoal/error.hpp"

namespace nb = nanobind;
using namespace nb::literals;

namespace shoal::py {
namespace {

// The exception being raised, normalized, its traceback attached (Python 3.11 has no
// PyErr_GetRaisedException). Returns a new reference.
PyObject* take_exception() noexcept {
  PyObject *type = nullptr, *value = nullptr, *tb = nullptr;
  PyErr_Fetch(&type, &value, &tb);
  PyErr_NormalizeException(&type, &value, &tb);
  if (tb != nullptr && value != nullptr) PyException_SetTraceback(value, tb);
  Py_XDECREF(type);
  Py_XDECREF(tb);
  return value;
}

nb::tuple run_tasks(nb::handle fn, nb::list args, Py_ssize_t pos, Py_ssize_t end, bool star,
                    const PySegment& slot, uint64_t at, int64_t index, nb::list out) {
  if (!slot.seg.valid() || slot.seg.read_only() || at >= slot.seg.size() / sizeof(int64_t)) {
    throw InvalidArgumentError("run_tasks: the slot word is outside the writable slot table");
  }
  if (pos < 0 || end < pos || end > PyList_GET_SIZE(args.ptr())) {
    throw nb::index_error("run_tasks: [pos, end) is not inside args");
  }
  // The table is shared: its words are written and read by several processes (the parent
  // reads a dead worker's row), so the store is atomic, its order with the call the program's.
  std::atomic_ref<int64_t> word(reinterpret_cast<int64_t*>(slot.seg.data())[at]);
  for (Py_ssize_t i = pos; i < end; ++i) {
    // fn may do anything, resizing the list included: look again each time.
    if (i >= PyList_GET_SIZE(args.ptr())) throw nb::index_error("run_tasks: args shrank");
    word.store(index + (i - pos), std::memory_order_relaxed);
    nb::object a = nb::borrow(PyList_GET_ITEM(args.ptr(), i));
    PyObject* r = nullptr;
    if (!star) {
      r = PyObject_CallOneArg(fn.ptr(), a.ptr());
    } else if (PyTuple_CheckExact(a.ptr())) {
      r = PyObject_Call(fn.ptr(), a.ptr(), nullptr);
    } else if (PyObject* t = PySequence_Tuple(a.ptr()); t != nullptr) {  // fn(*a): any iterable
      r = PyObject_Call(fn.ptr(), t, nullptr);
      Py_DECREF(t);
    }
    if (r == nullptr) {
      if (!PyErr_ExceptionMatches(PyExc_Exception)) throw nb::python_error();
      return nb::make_tuple(i, nb::steal(take_exception()));
    }
    const int rc = PyList_Append(out.ptr(), r);
    Py_DECREF(r);
    if (rc < 0) throw nb::python_error();
  }
  return nb::make_tuple(end, nb::none());
}

}  // namespace

void register_pool(nb::module_& m) {
  m.def("run_tasks", &run_tasks, "fn"_a, "args"_a, "pos"_a, "end"_a, "star"_a, "slot"_a, "at"_a,
        "index"_a, "out"_a,
        "Private (shoal.Pool's worker): call fn(a), or fn(*a) when star, for a in args[pos:end],\n"
        "appending each result to out; before each call store the task's index (index for\n"
        "args[pos], then one more each) into int64 word `at` of the slot table segment.\n"
        "Returns (end, None), or (i, exc) when the task at position i raised the Exception exc\n"
        "(its traceback kept; the tasks before it have their results in out). A BaseException\n"
        "that is not an Exception propagates.");
}

}  // namespace shoal::py
