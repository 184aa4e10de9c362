// python/bindings/items.cpp — Python objects as shoal::Items and back (items.hpp).
#include "items.hpp"

#include "bindings.hpp"
#include "refs.hpp"

#include <string>
#include <utility>
#include <variant>

namespace shoal::py {
namespace {

PyObject* g_pickle_dumps = nullptr;  // pickle.dumps, imported on first use; lives forever
PyObject* g_pickle_loads = nullptr;

}  // namespace

int import_pickle() noexcept {
  if (g_pickle_dumps != nullptr) return 0;
  PyObject* mod = PyImport_ImportModule("pickle");
  if (mod == nullptr) return -1;
  g_pickle_dumps = PyObject_GetAttrString(mod, "dumps");
  g_pickle_loads = PyObject_GetAttrString(mod, "loads");
  Py_DECREF(mod);
  if (g_pickle_dumps == nullptr || g_pickle_loads == nullptr) return -1;
  return 0;
}

// A key as an Item: 1, or 0 when the key is hashable but no stored key can equal it (`store`:
// TypeError instead), or -1 with the error set (unhashable: TypeError as dict's).
int key_item(PyObject* o, Item* out, bool store) noexcept {
  if (o == Py_None) {
    *out = std::monostate{};
    return 1;
  }
  if (PyBool_Check(o)) {
    *out = o == Py_True;
    return 1;
  }
  if (PyLong_Check(o)) {
    int overflow = 0;
    const long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (overflow == 0) {
      if (v == -1 && PyErr_Occurred()) return -1;
      *out = static_cast<int64_t>(v);
      return 1;
    }
    if (bigint_item(o, out) != 0) return -1;
    return 1;
  }
  if (PyFloat_Check(o)) {
    *out = PyFloat_AS_DOUBLE(o);
    return 1;
  }
  if (PyUnicode_Check(o)) {
    Py_ssize_t n = 0;
    const char* s = PyUnicode_AsUTF8AndSize(o, &n);
    if (s == nullptr) {  // lone surrogates: no UTF-8 form, cannot be stored
      if (!store) {
        PyErr_Clear();
        return 0;
      }
      return -1;
    }
    *out = std::string(s, static_cast<size_t>(n));
    return 1;
  }
  if (PyBytes_Check(o)) {
    *out = Bytes{std::string(PyBytes_AS_STRING(o), static_cast<size_t>(PyBytes_GET_SIZE(o)))};
    return 1;
  }
  if (is_frozen_key_type(o)) return frozen_key_item(o, out, store);
  if (PyObject_Hash(o) == -1) return -1;  // unhashable: dict's TypeError
  if (!store) return 0;
  PyErr_Format(PyExc_TypeError,
               "shoal.Dict keys are None, bool, int, float, str, bytes, or tuples/frozensets of "
               "these (the keys a FrozenDict takes), not %.200s",
               Py_TYPE(o)->tp_name);
  return -1;
}

// A value as an Item: 0, or -1 with the error set (allow_pickle: anything else is pickled,
// else TypeError naming `container`).
int value_item(bool allow_pickle, PyObject* o, Item* out, const char* container) noexcept {
  if (o == Py_None) {
    *out = std::monostate{};
    return 0;
  }
  PyTypeObject* t = Py_TYPE(o);
  if (t == &PyBool_Type) {
    *out = o == Py_True;
    return 0;
  }
  if (t == &PyLong_Type) {
    int overflow = 0;
    const long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (overflow == 0) {
      if (v == -1 && PyErr_Occurred()) return -1;
      *out = static_cast<int64_t>(v);
      return 0;
    }
  } else if (t == &PyFloat_Type) {
    *out = PyFloat_AS_DOUBLE(o);
    return 0;
  } else if (t == &PyUnicode_Type) {
    Py_ssize_t n = 0;
    const char* s = PyUnicode_AsUTF8AndSize(o, &n);
    if (s != nullptr) {
      *out = std::string(s, static_cast<size_t>(n));
      return 0;
    }
    PyErr_Clear();  // lone surrogates: pickled below
  } else if (t == &PyBytes_Type) {
    *out = Bytes{std::string(PyBytes_AS_STRING(o), static_cast<size_t>(PyBytes_GET_SIZE(o)))};
    return 0;
  }
  if (t == &PyLong_Type) return bigint_item(o, out);  // beyond 64 bits
  // A dict or list (a new shoal container), a shoal container, array or sync object: stored by
  // reference (refs.hpp).
  const int ref = ref_item(o, allow_pickle, out);
  if (ref != 0) return ref < 0 ? -1 : 0;
  if (t == &PyTuple_Type || t == &PyFrozenSet_Type) {
    // The codec's encoding, when every element is a key type (else pickled below).
    const int r = frozen_key_item(o, out, false);
    if (r < 0) PyErr_Clear();  // unhashable elements: pickled
    if (r == 1) return 0;
  }
  if (!allow_pickle) {
    PyErr_Format(PyExc_TypeError,
                 "%s(allow_pickle=False) stores None, bool, int, float, str, bytes, tuples "
                 "and frozensets of those, and shoal objects and dicts and lists by reference, "
                 "not %.200s (allow_pickle=True stores it pickled)",
                 container, t->tp_name);
    return -1;
  }
  if (import_pickle() != 0) return -1;
  PyObject* five = PyLong_FromLong(5);
  if (five == nullptr) return -1;
  PyObject* args[] = {o, five};
  PyObject* data = PyObject_Vectorcall(g_pickle_dumps, args, 2, nullptr);
  Py_DECREF(five);
  if (data == nullptr) return -1;
  if (!PyBytes_Check(data)) {
    Py_DECREF(data);
    PyErr_SetString(PyExc_TypeError, "pickle.dumps did not return bytes");
    return -1;
  }
  try {
    *out = Pickled{std::string(PyBytes_AS_STRING(data), static_cast<size_t>(PyBytes_GET_SIZE(data)))};
  } catch (...) {
    Py_DECREF(data);
    PyErr_NoMemory();
    return -1;
  }
  Py_DECREF(data);
  return 0;
}

// An Item as a new reference, or nullptr with the error set.
PyObject* to_py(const Item& v, const Dict* d, HeldRefs* held) noexcept {
  switch (v.index()) {
    case 0: Py_RETURN_NONE;
    case 1: return PyBool_FromLong(std::get<bool>(v));
    case 2: return PyLong_FromLongLong(std::get<int64_t>(v));
    case 3: return PyFloat_FromDouble(std::get<double>(v));
    case 4: {
      const std::string& s = std::get<std::string>(v);
      return PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), "surrogatepass");
    }
    case 5: {
      const std::string& b = std::get<Bytes>(v).data;
      return PyBytes_FromStringAndSize(b.data(), static_cast<Py_ssize_t>(b.size()));
    }
    case 7: return bigint_to_py(std::get<BigInt>(v));
    case 8: return frozen_key_to_py(std::get<FrozenKey>(v));
    case 9: {
      const ObjectRef& r = std::get<ObjectRef>(v);
      if (d == nullptr && !r.target.valid()) {
        PyErr_SetString(PyExc_RuntimeError, "shoal: a reference read without its container");
        return nullptr;
      }
      return ref_to_py(d, r, held);
    }
    default: {
      if (import_pickle() != 0) return nullptr;
      const std::string& p = std::get<Pickled>(v).data;
      PyObject* b = PyBytes_FromStringAndSize(p.data(), static_cast<Py_ssize_t>(p.size()));
      if (b == nullptr) return nullptr;
      PyObject* r = PyObject_CallOneArg(g_pickle_loads, b);
      Py_DECREF(b);
      return r;
    }
  }
}

}  // namespace shoal::py
