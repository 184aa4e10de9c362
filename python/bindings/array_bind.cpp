// python/bindings/array_bind.cpp — array segments for shoal.Array (python/shoal/_array.py).
//
// C++ owns the layout and builds the ndarray views; numpy owns dtype parsing (shoal._array's
// cached _dtype_from_descr turns the header's descr text into a dtype).
//
// Unpickling an Array is one call from pickle into here (rebuild_array): attach the segment,
// read its header, make the view. It is a plain CPython builtin, not a nanobind function, for two
// reasons: pickle saves builtins by reference (module and name), and a worker that was asleep
// until the handle arrived pays for every page of code it touches on the way (a cold attach
// costs several times a warm one on a VM), so the path is kept short: no Python frame, no
// argument parsing beyond the five positional arguments.
#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#include <numpy/arrayobject.h>

#include <algorithm>
#include <string>
#include <vector>

#include "bindings.hpp"
#include "shoal/array.hpp"

namespace nb = nanobind;
using namespace nb::literals;

namespace shoal::py {
namespace {

// Set by array_install, which shoal._array calls when it is imported (importing numpy's C API
// imports numpy, which importing shoal._shoal must not do); strong references kept for the life
// of the process.
PyObject* g_array_type = nullptr;        // shoal._array.Array
PyObject* g_dtype_from_descr = nullptr;  // shoal._array._dtype_from_descr (an lru_cache)
PyObject* g_attr_ref = nullptr;          // "_shoal_ref", interned

bool ensure_numpy() noexcept {
  if (g_array_type != nullptr) return true;
  PyObject* mod = PyImport_ImportModule("shoal._array");  // calls array_install
  if (mod == nullptr) return false;
  Py_DECREF(mod);
  if (g_array_type == nullptr) {
    PyErr_SetString(PyExc_ImportError, "shoal._array did not install shoal.Array's hooks");
    return false;
  }
  return true;
}

// The bytes an array reaches, relative to its first element: [lo, hi), none when `empty` (a
// dimension is 0). Dimensions must be >= 0. 128-bit sums: 64 dimensions of 63-bit products cannot
// overflow.
struct Reach {
  __int128 lo = 0;
  __int128 hi = 0;
  bool empty = false;
};
Reach reach_of(size_t ndim, const npy_intp* dims, const npy_intp* strides, uint64_t itemsize) {
  Reach r{0, static_cast<__int128>(itemsize), false};
  for (size_t i = 0; i < ndim; ++i) {
    if (dims[i] == 0) {
      r.empty = true;
    } else {
      const __int128 step = static_cast<__int128>(strides[i]) * (dims[i] - 1);
      (step < 0 ? r.lo : r.hi) += step;
    }
  }
  return r;
}

// Makes `self` (an Array numpy just made from `src`) share src's segment when self's elements
// lie in it: a view, a slice, a field. Anything else (a new result, such as `a + 1`) keeps the
// class defaults (no segment). An empty array reaches no byte, so it is placed by its address:
// an empty slice of a shared array is still a view of it. 1: adopted, 0: not, -1: error set.
int adopt(PyObject* self, PyObject* src) noexcept {
  if (!PyObject_TypeCheck(src, reinterpret_cast<PyTypeObject*>(g_array_type)) ||
      !PyArray_Check(self)) {
    return 0;
  }
  PyObject* ref = PyObject_GetAttr(src, g_attr_ref);  // (segment, base, end) or None
  if (ref == nullptr) return -1;
  nb::object ref_owner = nb::steal(ref);
  if (!PyTuple_CheckExact(ref) || PyTuple_GET_SIZE(ref) != 3) return 0;  // None (or tampered)
  const unsigned long long base = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(ref, 1));
  const unsigned long long end = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(ref, 2));
  if (PyErr_Occurred()) return -1;
  auto* a = reinterpret_cast<PyArrayObject*>(self);
  const auto data = static_cast<__int128>(reinterpret_cast<uintptr_t>(PyArray_DATA(a)));
  const Reach r = reach_of(static_cast<size_t>(PyArray_NDIM(a)), PyArray_DIMS(a),
                           PyArray_STRIDES(a), static_cast<uint64_t>(PyArray_ITEMSIZE(a)));
  const bool inside = r.empty || r.lo == r.hi ? base <= data && data <= end
                                              : data + r.lo < end && data + r.hi > base;
  if (!inside) return 0;
  return PyObject_SetAttr(self, g_attr_ref, ref) < 0 ? -1 : 1;
}

// Array.__array_finalize__(self, obj), in C: numpy calls it for every Array it makes (every
// slice, every unpickled array), so it is on the path of `a[5]`; written in Python it would
// cost several ndarray indexings (BENCHMARKS.md). None: made from scratch (make_view sets the
// segment next).
PyObject* array_finalize(PyObject* self, PyObject* obj) noexcept {
  if (obj != Py_None && adopt(self, obj) < 0) return nullptr;
  Py_RETURN_NONE;
}

// Array.__getitem__(self, key): ndarray's, except that a result holding new memory (fancy
// indexing: a[[1, 2]], a[mask]) is a plain ndarray, as `a + 1` is.
PyObject* array_getitem(PyObject* self, PyObject* key) noexcept {
  PyObject* res = PyArray_Type.tp_as_mapping->mp_subscript(self, key);
  if (res == nullptr || Py_TYPE(res) != reinterpret_cast<PyTypeObject*>(g_array_type)) return res;
  PyObject* ref = PyObject_GetAttr(res, g_attr_ref);
  if (ref == nullptr) {
    Py_DECREF(res);
    return nullptr;
  }
  const bool shared = ref != Py_None;
  Py_DECREF(ref);
  if (shared) return res;
  // numpy 1.x makes a boolean-mask result of a subclass as a view of a fresh ndarray that takes
  // the source's flags (read-only for a snapshot); that fresh ndarray, writeable, is what
  // indexing an ndarray gives, so it is the result.
  auto* r = reinterpret_cast<PyArrayObject*>(res);
  PyObject* base = PyArray_BASE(r);
  if (base != nullptr && PyArray_CheckExact(base)) {
    auto* b = reinterpret_cast<PyArrayObject*>(base);
    const int nd = PyArray_NDIM(r);
    if (PyArray_CHKFLAGS(b, NPY_ARRAY_OWNDATA) && PyArray_DATA(b) == PyArray_DATA(r) &&
        PyArray_NDIM(b) == nd && PyArray_EquivTypes(PyArray_DESCR(b), PyArray_DESCR(r)) &&
        std::equal(PyArray_DIMS(b), PyArray_DIMS(b) + nd, PyArray_DIMS(r)) &&
        std::equal(PyArray_STRIDES(b), PyArray_STRIDES(b) + nd, PyArray_STRIDES(r))) {
      Py_INCREF(base);
      Py_DECREF(res);
      return base;
    }
  }
  PyObject* plain = PyArray_View(r, nullptr, &PyArray_Type);
  Py_DECREF(res);
  return plain;
}

PyMethodDef g_finalize_def = {
    "__array_finalize__", reinterpret_cast<PyCFunction>(array_finalize), METH_O,
    "A view of a shared array shares its segment; a new result does not."};
PyMethodDef g_getitem_def = {
    "__getitem__", reinterpret_cast<PyCFunction>(array_getitem), METH_O,
    "ndarray's indexing; a result holding new memory is a plain ndarray."};

// array_install(Array, dtype_from_descr): called once by shoal._array, after the class exists.
void array_install(nb::handle type, nb::handle dtype_from_descr) {
  if (g_array_type != nullptr) return;  // an importlib.reload of shoal._array: keep the first
  if (_import_array() < 0) throw nb::python_error();
  if (!PyType_Check(type.ptr()) ||
      !PyType_IsSubtype(reinterpret_cast<PyTypeObject*>(type.ptr()), &PyArray_Type)) {
    throw nb::type_error("array_install needs an ndarray subclass");
  }
  g_attr_ref = PyUnicode_InternFromString("_shoal_ref");
  if (g_attr_ref == nullptr) throw nb::python_error();
  auto* t = reinterpret_cast<PyTypeObject*>(type.ptr());
  for (PyMethodDef* def : {&g_finalize_def, &g_getitem_def}) {
    nb::object descr = nb::steal(PyDescr_NewMethod(t, def));
    if (!descr.is_valid() || PyObject_SetAttrString(type.ptr(), def->ml_name, descr.ptr()) < 0) {
      throw nb::python_error();
    }
  }
  g_dtype_from_descr = nb::borrow(dtype_from_descr).release().ptr();
  g_array_type = nb::borrow(type).release().ptr();
}

[[noreturn]] void decode_error(const std::string& what) { throw DecodeError(what); }

// The dtypes of the last few descr texts seen, so that an attach neither makes a str of the
// text nor calls the lru_cache: a process attaches arrays of few dtypes, and both cost µs in a
// worker woken by the handle. Strong references; the GIL guards it.
struct DtypeCacheEntry {
  std::string descr;
  PyObject* dtype = nullptr;
};
DtypeCacheEntry g_dtypes[8];
size_t g_dtypes_next = 0;

// A new reference to the dtype `descr` describes (shoal._array._dtype_from_descr's), or null
// with the error set.
PyObject* dtype_of(std::string_view descr, PyObject* descr_obj) {
  for (const DtypeCacheEntry& e : g_dtypes) {
    if (e.dtype != nullptr && e.descr == descr) return Py_NewRef(e.dtype);
  }
  nb::object text = descr_obj != nullptr
                        ? nb::borrow(descr_obj)
                        : nb::steal(PyUnicode_FromStringAndSize(
                              descr.data(), static_cast<Py_ssize_t>(descr.size())));
  if (!text.is_valid()) return nullptr;
  PyObject* dt = PyObject_CallOneArg(g_dtype_from_descr, text.ptr());
  if (dt == nullptr || !PyArray_DescrCheck(dt)) return dt;  // the caller refuses a non-dtype
  DtypeCacheEntry& slot = g_dtypes[g_dtypes_next++ % std::size(g_dtypes)];
  slot.descr.assign(descr);
  Py_XSETREF(slot.dtype, Py_NewRef(dt));
  return dt;
}

// A pickled view's shape or strides: a tuple (or list) of at most NPY_MAXDIMS ints.
std::vector<npy_intp> int_sequence(PyObject* obj, const char* what) {
  PyObject* seq = PySequence_Fast(obj, "");
  if (seq == nullptr) {
    PyErr_Clear();
    decode_error(std::string("array view ") + what + " is not a sequence of ints");
  }
  std::vector<npy_intp> out;
  const Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
  if (n > 32) {  // NPY_MAXDIMS of numpy 1.x (2.x allows 64; shoal writes at most 32)
    Py_DECREF(seq);
    decode_error(std::string("array view ") + what + " has " + std::to_string(n) +
                 " dimensions, more than 32");
  }
  out.reserve(static_cast<size_t>(n));
  for (Py_ssize_t i = 0; i < n; ++i) {
    PyObject* item = PySequence_Fast_GET_ITEM(seq, i);
    const long long v = PyLong_Check(item) ? PyLong_AsLongLong(item) : -1;
    if (!PyLong_Check(item) || (v == -1 && PyErr_Occurred())) {
      PyErr_Clear();
      Py_DECREF(seq);
      decode_error(std::string("array view ") + what + " holds a non-int or an int too large");
    }
    out.push_back(static_cast<npy_intp>(v));
  }
  Py_DECREF(seq);
  return out;
}

std::string dims_text(const std::vector<npy_intp>& v) {
  std::string s = "(";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + (v.size() == 1 ? ",)" : ")");
}

// The array header: from the copy a fast attach read with pread when it holds the whole header
// (no page fault: the first page is left for the first element read), else from the mapping,
// which also gives the authoritative error for a bad header.
ArrayInfo array_info(const Segment& seg) {
  const std::span<const std::byte> head = seg.head_copy();
  if (!head.empty()) {
    if (auto r = parse_array_header(head.data(), seg.size(), head.size())) return r.take();
  }
  return parse_array_header(seg.data(), seg.size()).take();
}

// The ndarray (a shoal.Array) over an array segment: the whole array when `shape` is None,
// otherwise the pickled view (offset into the element area, shape, strides, dtype descr),
// checked to lie inside the element area. Returns a new reference.
PyObject* make_view(PyObject* seg_obj, PyObject* offset, PyObject* shape, PyObject* strides,
                    PyObject* descr) {
  if (!ensure_numpy()) throw nb::python_error();
  PySegment* s = nullptr;
  if (!nb::try_cast<PySegment*>(nb::handle(seg_obj), s) || s == nullptr) {
    PyErr_SetString(PyExc_TypeError, "expected a shoal._shoal.Segment");
    throw nb::python_error();
  }
  if (!s->seg.valid()) {
    PyErr_SetString(PyExc_ValueError, "segment is closed");
    throw nb::python_error();
  }
  if (s->seg.kind() != ObjectKind::kArray) {
    throw InvalidArgumentError("segment does not hold an array");
  }
  const ArrayInfo info = array_info(s->seg);
  const bool whole = shape == Py_None;

  // The dtype: the header's, or the view's own (a field of a structured array, a .view(dt)).
  nb::object dt;
  if (whole) {
    dt = nb::steal(dtype_of(info.descr, nullptr));
  } else {
    Py_ssize_t n = 0;
    const char* p = PyUnicode_Check(descr) ? PyUnicode_AsUTF8AndSize(descr, &n) : nullptr;
    if (p == nullptr) {  // not a str, or not encodable: the lru_cache call reports it
      PyErr_Clear();
      dt = nb::steal(PyObject_CallOneArg(g_dtype_from_descr, descr));
    } else {
      dt = nb::steal(dtype_of(std::string_view(p, static_cast<size_t>(n)), descr));
    }
  }
  if (!dt.is_valid()) throw nb::python_error();
  if (!PyArray_DescrCheck(dt.ptr())) decode_error("array dtype description is not a dtype");
  auto* d = reinterpret_cast<PyArray_Descr*>(dt.ptr());
  // Bytes from shared memory are never Python object pointers: a forged descr naming one is
  // refused before numpy could read an address out of the segment.
  if (PyDataType_REFCHK(d)) {
    decode_error("array dtype description " + nb::cast<std::string>(nb::str(dt)) +
                 " holds Python objects, which a shared array cannot");
  }
  const auto itemsize = static_cast<uint64_t>(PyDataType_ELSIZE(d));

  std::vector<npy_intp> dims;
  std::vector<npy_intp> steps;
  uint64_t start = 0;  // byte offset of the view's first element in the element area
  if (whole) {
    if (itemsize != info.itemsize) {
      decode_error("array segment says itemsize " + std::to_string(info.itemsize) +
                   ", its dtype has " + std::to_string(itemsize));
    }
    for (uint64_t n : info.shape) dims.push_back(static_cast<npy_intp>(n));
  } else {
    long long off = PyLong_Check(offset) ? PyLong_AsLongLong(offset) : -1;
    if (off == -1 && PyErr_Occurred()) PyErr_Clear();
    if (!PyLong_Check(offset) || off < 0 || static_cast<uint64_t>(off) > info.nbytes) {
      const std::string shown = PyLong_Check(offset) && off != -1 ? std::to_string(off)
                              : nb::cast<std::string>(nb::repr(nb::handle(offset)));
      decode_error("array view offset " + shown + " is outside the " +
                   std::to_string(info.nbytes) + "-byte array");
    }
    start = static_cast<uint64_t>(off);
    dims = int_sequence(shape, "shape");
    steps = int_sequence(strides, "strides");
    // Every byte the view can reach lies in [start + lo, start + hi) of the element area.
    const bool bad = dims.size() != steps.size() ||
                     std::any_of(dims.begin(), dims.end(), [](npy_intp n) { return n < 0; });
    const Reach r = bad ? Reach{} : reach_of(dims.size(), dims.data(), steps.data(), itemsize);
    const __int128 first = static_cast<__int128>(start);
    if (bad ||
        (!r.empty && (first + r.lo < 0 || first + r.hi > static_cast<__int128>(info.nbytes)))) {
      decode_error("array view (offset " + std::to_string(start) + ", shape " + dims_text(dims) +
                   ", strides " + dims_text(steps) + ", dtype " +
                   nb::cast<std::string>(nb::str(dt)) + ") does not fit the " +
                   std::to_string(info.nbytes) + "-byte array");
    }
  }

  int flags = s->seg.read_only() ? 0 : NPY_ARRAY_WRITEABLE;
  if (whole && info.fortran) flags |= NPY_ARRAY_F_CONTIGUOUS;  // numpy then lays out F strides
  // The base holds a buffer export of the segment, so Segment.close() refuses while the
  // array lives, and a read-only segment's array can never be made writeable.
  nb::object base = nb::steal(PyMemoryView_FromObject(seg_obj));
  if (!base.is_valid()) throw nb::python_error();
  std::byte* data = s->seg.data() + info.data_offset + start;
  Py_INCREF(d);  // PyArray_NewFromDescr steals a reference to the dtype
  PyObject* arr = PyArray_NewFromDescr(reinterpret_cast<PyTypeObject*>(g_array_type), d,
                                       static_cast<int>(dims.size()), dims.data(),
                                       whole ? nullptr : steps.data(), data, flags, nullptr);
  if (arr == nullptr) {
    if (!PyErr_ExceptionMatches(PyExc_ValueError)) throw nb::python_error();
    // numpy refused the shape or dtype (a forged one, "array is too big"): say so as ours.
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    nb::object why = nb::steal(value != nullptr ? PyObject_Str(value) : nullptr);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    PyErr_Clear();
    decode_error("array view of dtype " + nb::cast<std::string>(nb::str(dt)) + " and shape " +
                 dims_text(dims) + " cannot be made: " +
                 (why.is_valid() ? nb::cast<std::string>(why) : std::string("numpy refused it")));
  }
  nb::object out = nb::steal(arr);
  if (PyArray_SetBaseObject(reinterpret_cast<PyArrayObject*>(arr), base.release().ptr()) < 0) {
    throw nb::python_error();
  }
  const auto elements = reinterpret_cast<uintptr_t>(s->seg.data() + info.data_offset);
  nb::object ref = nb::steal(Py_BuildValue("(OKK)", seg_obj,
                                            static_cast<unsigned long long>(elements),
                                            static_cast<unsigned long long>(elements + info.nbytes)));
  if (!ref.is_valid() || PyObject_SetAttr(arr, g_attr_ref, ref.ptr()) < 0) throw nb::python_error();
  return out.release().ptr();
}

PyObject* arg_or_none(PyObject* const* args, Py_ssize_t nargs, Py_ssize_t i) {
  return i < nargs ? args[i] : Py_None;
}

// The builtins' shared signature, f(first, offset=None, shape=None, strides=None, descr=None),
// where `segment_of(first)` gives the Segment object the view is made over.
template <class SegmentOf>
PyObject* view_builtin(const char* name, PyObject* const* args, Py_ssize_t nargs,
                       SegmentOf segment_of) noexcept {
  if (nargs < 1 || nargs > 5) {
    PyErr_Format(PyExc_TypeError, "%s takes 1 to 5 arguments (%zd given)", name, nargs);
    return nullptr;
  }
  try {
    nb::object seg = segment_of(args[0]);
    return make_view(seg.ptr(), arg_or_none(args, nargs, 1), arg_or_none(args, nargs, 2),
                     arg_or_none(args, nargs, 3), arg_or_none(args, nargs, 4));
  } catch (...) {
    set_error_from_current_exception();
    return nullptr;
  }
}

// rebuild_array(handle, ...): what unpickling a shoal.Array calls (shoal._glue.rebuild_array
// is this function).
PyObject* rebuild_array(PyObject*, PyObject* const* args, Py_ssize_t nargs) noexcept {
  return view_builtin("rebuild_array", args, nargs, [](PyObject* handle) {
    return nb::object(nb::cast(attach_segment(nb::handle(handle))));
  });
}

// array_view(segment, ...): the same over a segment already attached.
PyObject* array_view(PyObject*, PyObject* const* args, Py_ssize_t nargs) noexcept {
  return view_builtin("array_view", args, nargs,
                      [](PyObject* segment) { return nb::borrow<nb::object>(segment); });
}

PyMethodDef g_methods[] = {
    {"rebuild_array", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(rebuild_array)),
     METH_FASTCALL,
     "rebuild_array(handle, offset=None, shape=None, strides=None, descr=None)\n--\n\n"
     "Attach the array segment a handle names and return the shoal.Array over it: the whole\n"
     "array, or the view that (offset, shape, strides, descr) describe (a pickled view)."},
    {"array_view", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(array_view)),
     METH_FASTCALL,
     "array_view(segment, offset=None, shape=None, strides=None, descr=None)\n--\n\n"
     "The shoal.Array over an array segment already attached (see rebuild_array)."},
    {nullptr, nullptr, 0, nullptr}};

}  // namespace

void register_array(nb::module_& m) {
  m.def("array_install", &array_install, "array_type"_a, "dtype_from_descr"_a,
        "Install shoal.Array's C hooks (__array_finalize__, __getitem__); shoal._array calls it.");
  m.def(
      "array_adopt",
      [](nb::handle self, nb::handle src) {
        if (!ensure_numpy()) throw nb::python_error();
        const int r = adopt(self.ptr(), src.ptr());
        if (r < 0) throw nb::python_error();
        return r == 1;
      },
      "array"_a, "source"_a,
      "Make `array` share `source`'s segment if its elements lie in it; True if it does.");
  m.def(
      "array_create",
      [](const std::string& descr, uint64_t itemsize, const std::vector<uint64_t>& shape,
         bool fortran) {
        nb::gil_scoped_release nogil;
        Array a = Array::create(descr, itemsize, shape, fortran);
        return PySegment{a.segment()};
      },
      "descr"_a, "itemsize"_a, "shape"_a, "fortran"_a = false,
      "Create a zero-filled array segment; returns the Segment.");
  m.def(
      "array_share",
      [](const std::string& descr, uint64_t itemsize, const std::vector<uint64_t>& shape,
         bool fortran, nb::handle data, bool seal) {
        // The elements come as any C-contiguous buffer of raw bytes (shoal.share passes a
        // uint8 view of the array in memory order); copied with pwrite, GIL released.
        Py_buffer view;
        if (PyObject_GetBuffer(data.ptr(), &view, PyBUF_C_CONTIGUOUS) != 0) throw nb::python_error();
        struct Release {
          Py_buffer* v;
          ~Release() { PyBuffer_Release(v); }
        } release{&view};
        const void* ptr = view.buf;
        const auto n = static_cast<uint64_t>(view.len);
        nb::gil_scoped_release nogil;
        Array a = Array::create_from(descr, itemsize, shape, fortran, ptr, n, seal);
        return PySegment{a.segment()};
      },
      "descr"_a, "itemsize"_a, "shape"_a, "fortran"_a, "data"_a, "seal"_a = true,
      "Create an array segment holding a copy of `data` (sealed read-only when `seal`).");
  // Builtins named as attributes of this module, so that pickle saves them by reference.
  nb::object name = m.attr("__name__");
  for (PyMethodDef* def = g_methods; def->ml_name != nullptr; ++def) {
    nb::object f = nb::steal(PyCFunction_NewEx(def, nullptr, name.ptr()));
    if (!f.is_valid()) throw nb::python_error();
    m.attr(def->ml_name) = f;
  }
}

}  // namespace shoal::py
