// python/bindings/frozen_bind.cpp — frozen object graphs for Python: the encoder (freeze) and the
// view types FrozenDict / FrozenList / FrozenTuple / FrozenSet.
//
// The views are raw CPython types (PyType_FromSpec), not nanobind classes: `d[k]`, `k in d`,
// `len`, iteration and `l[i]` are the hot paths the issue measures against dict and list, and
// they go straight from the type slot to the table probe with no argument conversion layer.
// shoal/_frozen.py subclasses each base with the matching collections.abc mixin (`__slots__ =
// ()`, so the instance layout stays ours) and hands the subclasses back through
// _frozen_init(); every view this file creates is an instance of those subclasses.
//
// Ownership: a view holds a strong reference to its FrozenImage (the owner of the mapping);
// views never reference each other, so no cycles and no GC traversal are needed.
// Leaves are decoded into new Python objects on every access (no per-process cache: a cache
// would be the private copy this feature exists to avoid).
// Every slot function catches C++ exceptions (DecodeError from a corrupt image) and turns them
// into Python exceptions: no exception may cross the C API boundary.
#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <cmath>
#include <cstring>
#include <string>
#include <unordered_map>
#include <vector>

#include "bindings.hpp"
#include "layout/frozen_layout.hpp"
#include "shoal/frozen.hpp"

namespace nb = nanobind;
using namespace nb::literals;

namespace shoal::py {
namespace {

using frozen::Builder;
using frozen::Frozen;
using frozen::Image;
using layout::Tag;
using Ref = uint64_t;

inline Tag tag_of(Ref r) { return static_cast<Tag>(r & layout::kTagMask); }
inline int64_t inline_int(Ref r) { return static_cast<int64_t>(r) >> 4; }
inline bool is_container(Tag t) {
  return t == Tag::kList || t == Tag::kTuple || t == Tag::kDict || t == Tag::kSet ||
         t == Tag::kFrozenSet;
}

// ---- the Python-side pieces, set once by _frozen_init --------------------------------------
struct Registry {
  PyTypeObject* dict_cls = nullptr;
  PyTypeObject* list_cls = nullptr;
  PyTypeObject* tuple_cls = nullptr;
  PyTypeObject* set_cls = nullptr;
  PyObject* ndarray_type = nullptr;   // numpy.ndarray
  PyObject* ndarray_parts = nullptr;  // a -> (descr, itemsize, shape, fortran, buffer) | None
  PyObject* ndarray_leaf = nullptr;   // (owner, offset, nbytes, descr, shape, fortran) -> ndarray
  PyObject* pickle_dumps = nullptr;   // obj -> bytes (protocol 5)
  PyObject* pickle_loads = nullptr;   // bytes-like -> obj
};
Registry g;

PyTypeObject* g_owner_type = nullptr;
PyTypeObject* g_dict_base = nullptr;
PyTypeObject* g_list_base = nullptr;
PyTypeObject* g_tuple_base = nullptr;
PyTypeObject* g_set_base = nullptr;
PyTypeObject* g_iter_type = nullptr;

// ---- FrozenImage: owns the mapping ---------------------------------------------------------
struct OwnerObject {
  PyObject_HEAD
  Frozen* frozen;      // heap-allocated; the Image inside has a stable address
  const Image* image;  // == &frozen->image()
  bool allow_pickle;
};

// ---- views ---------------------------------------------------------------------------------
struct ViewObject {
  PyObject_HEAD
  OwnerObject* owner;        // strong reference
  const Image* image;        // owner->image
  Ref ref;                   // this container's ref
  uint64_t count;            // items / entries
  const std::byte* items;    // seq: Ref[count]
  const std::byte* slots;    // table: entries in slot order, 1 << log2_slots of them
  const std::byte* order;    // table: uint32_t[count], the slot of each entry in insertion order
  uint32_t log2_slots;
  uint32_t entry_words;
  uint64_t seed;
};

struct IterObject {
  PyObject_HEAD
  ViewObject* view;  // strong reference
  uint64_t index;
  int what;  // 0 items of a seq / keys of a table, 1 values, 2 (key, value) pairs
  PyObject* spare[2];  // ints this iterator made, reused once nobody else holds them
};

inline Ref load_ref(const std::byte* p) {
  Ref r;
  std::memcpy(&r, p, 8);
  return r;
}

PyObject* decode(OwnerObject* owner, Ref r);

// Fills a view's cached pointers after checking its node (F2, F3). Throws DecodeError.
void fill_view(ViewObject* v, Tag t) {
  const Image& im = *v->image;
  const std::byte* p = im.node(v->ref, 16);
  uint64_t count;
  std::memcpy(&count, p, 8);
  if (t == Tag::kList || t == Tag::kTuple) {
    if (count > (im.size() / 8)) throw_error(Errc::kDecode, "frozen sequence length is corrupt");
    p = im.node(v->ref, 16, count * 8);
    v->count = count;
    v->items = p + 16;
    return;
  }
  uint32_t log2_slots, entry_words;
  std::memcpy(&log2_slots, p + 8, 4);
  std::memcpy(&entry_words, p + 12, 4);
  const uint32_t want_words = t == Tag::kDict ? 3 : 2;
  if (entry_words != want_words || log2_slots < layout::kMinLog2Slots ||
      log2_slots > layout::kMaxLog2Slots || count > (uint64_t{1} << log2_slots) / 2 ||
      count > im.size() / 16) {
    throw_error(Errc::kDecode, "frozen table header is corrupt");
  }
  const uint64_t nslots = uint64_t{1} << log2_slots;
  if (nslots > im.size() / 16) throw_error(Errc::kDecode, "frozen table is larger than its image");
  const uint64_t slots_bytes = nslots * entry_words * 8;
  p = im.node(v->ref, 16, slots_bytes + count * 4);
  v->count = count;
  v->slots = p + 16;
  v->order = p + 16 + slots_bytes;
  v->log2_slots = log2_slots;
  v->entry_words = entry_words;
}

// The i-th entry (insertion order) of a table view, its order value checked. Throws DecodeError.
const std::byte* entry_at(const ViewObject* v, uint64_t i) {
  uint32_t s;
  std::memcpy(&s, v->order + i * 4, 4);
  if (uint64_t{s} >> v->log2_slots != 0) {  // 64-bit: log2_slots may be 32 or more
    throw_error(Errc::kDecode, "frozen table order is corrupt");
  }
  const std::byte* e = v->slots + uint64_t{s} * v->entry_words * 8;
  if (load_ref(e + 8) == layout::kEmptyKey) {
    throw_error(Errc::kDecode, "frozen table order names an empty slot");
  }
  return e;
}

PyObject* new_view(OwnerObject* owner, Ref r) {
  const Tag t = tag_of(r);
  PyTypeObject* cls = t == Tag::kDict                          ? g.dict_cls
                      : t == Tag::kList                        ? g.list_cls
                      : t == Tag::kTuple                       ? g.tuple_cls
                      : (t == Tag::kSet || t == Tag::kFrozenSet) ? g.set_cls
                                                               : nullptr;
  if (cls == nullptr) {
    PyErr_SetString(PyExc_RuntimeError, "shoal._frozen is not initialised");
    return nullptr;
  }
  auto* v = reinterpret_cast<ViewObject*>(cls->tp_alloc(cls, 0));
  if (v == nullptr) return nullptr;
  Py_INCREF(owner);
  v->owner = owner;
  v->image = owner->image;
  v->ref = r;
  v->seed = owner->image->hash_seed();
  try {
    fill_view(v, t);
  } catch (...) {
    Py_DECREF(v);
    set_error_from_current_exception();
    return nullptr;
  }
  return reinterpret_cast<PyObject*>(v);
}

const std::byte* blob(const Image& im, Ref r, uint64_t* nbytes, uint64_t* flags = nullptr) {
  const std::byte* p = im.node(r, 16);
  uint64_t n;
  std::memcpy(&n, p, 8);
  if (flags != nullptr) std::memcpy(flags, p + 8, 8);
  im.node(r, 16, n);  // throws unless the bytes fit
  *nbytes = n;
  return p + 16;
}

PyObject* make_str(const std::byte* s, uint64_t n, uint64_t flags) {
  if (n > static_cast<uint64_t>(PY_SSIZE_T_MAX)) {
    PyErr_SetString(PyExc_OverflowError, "frozen str too long");
    return nullptr;
  }
  if ((flags & layout::kStrAscii) != 0) {
    // Trust the flag only after checking it would not build an invalid str: scanning is cheap
    // next to the allocation, and a forged flag must not create a non-ASCII "ASCII" string.
    PyObject* o = PyUnicode_New(static_cast<Py_ssize_t>(n), 127);
    if (o == nullptr) return nullptr;
    auto* dst = static_cast<unsigned char*>(PyUnicode_DATA(o));
    unsigned char bad = 0;
    for (uint64_t i = 0; i < n; ++i) {
      const auto c = static_cast<unsigned char>(s[i]);
      bad |= c;
      dst[i] = c;
    }
    if ((bad & 0x80) == 0) return o;
    Py_DECREF(o);
  }
  PyObject* o =
      PyUnicode_DecodeUTF8(reinterpret_cast<const char*>(s), static_cast<Py_ssize_t>(n),
                           (flags & layout::kStrSurrogates) != 0 ? "surrogatepass" : nullptr);
  if (o == nullptr && PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
    // Text the builder wrote always decodes: failing UTF-8 means the image is corrupt.
    PyErr_Clear();
    PyErr_SetString(shoal_error_type(Errc::kDecode),
                    "frozen str is not valid UTF-8 (the image is corrupt)");
  }
  return o;
}

PyObject* g_decode_error() { return shoal_error_type(Errc::kDecode); }

PyObject* make_bigint(const std::byte* b, uint64_t n) {
  if (n == 0 || n > (uint64_t{1} << 32)) {
    PyErr_SetString(g_decode_error(), "frozen integer has an invalid length");
    return nullptr;
  }
  return _PyLong_FromByteArray(reinterpret_cast<const unsigned char*>(b), static_cast<size_t>(n),
                               /*little_endian=*/1, /*is_signed=*/1);
}

PyObject* decode_ndarray(OwnerObject* owner, Ref r) {
  frozen::NdView nd = frozen::Value(owner->image, r).as_ndarray();
  PyObject* shape = PyTuple_New(static_cast<Py_ssize_t>(nd.shape.size()));
  if (shape == nullptr) return nullptr;
  for (size_t i = 0; i < nd.shape.size(); ++i) {
    PyTuple_SET_ITEM(shape, static_cast<Py_ssize_t>(i), PyLong_FromUnsignedLongLong(nd.shape[i]));
  }
  PyObject* descr =
      PyUnicode_FromStringAndSize(nd.descr.data(), static_cast<Py_ssize_t>(nd.descr.size()));
  if (descr == nullptr) {
    Py_DECREF(shape);
    if (PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
      PyErr_Clear();
      PyErr_SetString(shoal_error_type(Errc::kDecode),
                      "frozen ndarray dtype text is not valid UTF-8 (the image is corrupt)");
    }
    return nullptr;
  }
  PyObject* res = PyObject_CallFunction(
      g.ndarray_leaf, "OKKNNO", reinterpret_cast<PyObject*>(owner),
      static_cast<unsigned long long>(nd.data_offset), static_cast<unsigned long long>(nd.nbytes),
      descr, shape, nd.fortran ? Py_True : Py_False);
  return res;
}

PyObject* decode_pickle(OwnerObject* owner, Ref r) {
  if (!owner->allow_pickle) {
    PyErr_SetString(PyExc_ValueError,
                    "this frozen object holds a pickled leaf, and unpickling is disabled: pass "
                    "allow_pickle=True to shoal.load() if you trust the file");
    return nullptr;
  }
  uint64_t n;
  const std::byte* p = blob(*owner->image, r, &n);
  PyObject* mv = PyMemoryView_FromMemory(const_cast<char*>(reinterpret_cast<const char*>(p)),
                                         static_cast<Py_ssize_t>(n), PyBUF_READ);
  if (mv == nullptr) return nullptr;
  PyObject* res = PyObject_CallOneArg(g.pickle_loads, mv);
  Py_DECREF(mv);
  return res;
}

// Any value: leaves become new Python objects, containers become views.
PyObject* decode(OwnerObject* owner, Ref r) {
  try {
    switch (tag_of(r)) {
      case Tag::kNone:
        Py_RETURN_NONE;
      case Tag::kFalse:
        Py_RETURN_FALSE;
      case Tag::kTrue:
        Py_RETURN_TRUE;
      case Tag::kInt:
        return PyLong_FromLongLong(inline_int(r));
      case Tag::kFloat: {
        const std::byte* p = owner->image->node(r, 16);
        double d;
        std::memcpy(&d, p, 8);
        return PyFloat_FromDouble(d);
      }
      case Tag::kBigInt: {
        uint64_t n;
        const std::byte* p = blob(*owner->image, r, &n);
        return make_bigint(p, n);
      }
      case Tag::kStr: {
        uint64_t n, flags;
        const std::byte* p = blob(*owner->image, r, &n, &flags);
        return make_str(p, n, flags);
      }
      case Tag::kBytes: {
        uint64_t n;
        const std::byte* p = blob(*owner->image, r, &n);
        return PyBytes_FromStringAndSize(reinterpret_cast<const char*>(p),
                                         static_cast<Py_ssize_t>(n));
      }
      case Tag::kList:
      case Tag::kTuple:
      case Tag::kDict:
      case Tag::kSet:
      case Tag::kFrozenSet:
        return new_view(owner, r);
      case Tag::kNdarray:
        return decode_ndarray(owner, r);
      case Tag::kPickle:
        return decode_pickle(owner, r);
    }
    PyErr_SetString(g_decode_error(), "frozen image holds a reserved tag (corrupt data)");
    return nullptr;
  } catch (...) {
    set_error_from_current_exception();
    return nullptr;
  }
}

// ---- plain copies (thaw, and keys compared by Python equality) ------------------------------
PyObject* thaw(OwnerObject* owner, Ref r, int depth);

PyObject* thaw_table(OwnerObject* owner, ViewObject* v, Tag t, int depth) {
  const bool is_dict = t == Tag::kDict;
  PyObject* res = is_dict ? PyDict_New() : (t == Tag::kSet ? PySet_New(nullptr) : PyFrozenSet_New(nullptr));
  if (res == nullptr) return nullptr;
  for (uint64_t i = 0; i < v->count; ++i) {
    const std::byte* e;
    try {
      e = entry_at(v, i);
    } catch (...) {
      set_error_from_current_exception();
      Py_DECREF(res);
      return nullptr;
    }
    PyObject* k = thaw(owner, load_ref(e + 8), depth + 1);
    if (k == nullptr) {
      Py_DECREF(res);
      return nullptr;
    }
    int rc;
    if (is_dict) {
      PyObject* val = thaw(owner, load_ref(e + 16), depth + 1);
      rc = val == nullptr ? -1 : PyDict_SetItem(res, k, val);
      Py_XDECREF(val);
    } else {
      rc = PySet_Add(res, k);
    }
    Py_DECREF(k);
    if (rc != 0) {
      Py_DECREF(res);
      return nullptr;
    }
  }
  return res;
}

PyObject* thaw(OwnerObject* owner, Ref r, int depth) {
  const Tag t = tag_of(r);
  if (!is_container(t)) return decode(owner, r);
  if (Py_EnterRecursiveCall(" while thawing a frozen object") != 0) return nullptr;
  PyObject* res = nullptr;
  PyObject* view = new_view(owner, r);
  if (view != nullptr) {
    auto* v = reinterpret_cast<ViewObject*>(view);
    if (t == Tag::kList || t == Tag::kTuple) {
      const auto n = static_cast<Py_ssize_t>(v->count);
      res = t == Tag::kList ? PyList_New(n) : PyTuple_New(n);
      for (Py_ssize_t i = 0; res != nullptr && i < n; ++i) {
        PyObject* item = thaw(owner, load_ref(v->items + i * 8), depth + 1);
        if (item == nullptr) {
          Py_CLEAR(res);
          break;
        }
        if (t == Tag::kList) PyList_SET_ITEM(res, i, item);
        else PyTuple_SET_ITEM(res, i, item);
      }
    } else {
      res = thaw_table(owner, v, t, depth);
    }
    Py_DECREF(view);
  }
  Py_LeaveRecursiveCall();
  return res;
}

// ---- hashing a Python key the way the builder hashed the stored one --------------------------
// Returns 0 and sets *h, 1 when the object is of a type no frozen key can equal (never found),
// -1 with a Python error set.
int key_hash(PyObject* key, uint64_t seed, uint64_t* h, int depth);

int utf8_of(PyObject* s, const char** data, Py_ssize_t* n, PyObject** tmp) {
  *tmp = nullptr;
  const char* d = PyUnicode_AsUTF8AndSize(s, n);
  if (d != nullptr) {
    *data = d;
    return 0;
  }
  // Lone surrogates have no UTF-8 form; shoal stores them as Python's surrogatepass does.
  PyErr_Clear();
  *tmp = PyUnicode_AsEncodedString(s, "utf-8", "surrogatepass");
  if (*tmp == nullptr) return -1;
  *data = PyBytes_AS_STRING(*tmp);
  *n = PyBytes_GET_SIZE(*tmp);
  return 0;
}

int key_hash(PyObject* key, uint64_t seed, uint64_t* h, int depth) {
  if (key == Py_None) {
    *h = frozen::hash::kNoneHash;
    return 0;
  }
  if (PyBool_Check(key)) {
    *h = key == Py_True ? 1 : 0;
    return 0;
  }
  if (PyLong_Check(key)) {
    // int's own hash (deterministic for every int; subclasses may override __hash__, but as
    // keys they are stored as plain ints, so the plain hash is the one that matches).
    Py_hash_t ph = PyLong_Type.tp_hash(key);
    if (ph == -1 && PyErr_Occurred()) return -1;
    *h = static_cast<uint64_t>(ph);
    return 0;
  }
  if (PyFloat_Check(key)) {
    *h = static_cast<uint64_t>(frozen::hash::of_float(PyFloat_AS_DOUBLE(key)));
    return 0;
  }
  if (PyUnicode_Check(key)) {
    const char* d;
    Py_ssize_t n;
    PyObject* tmp;
    if (utf8_of(key, &d, &n, &tmp) != 0) return -1;
    *h = frozen::hash::of_bytes(seed, d, static_cast<size_t>(n));
    Py_XDECREF(tmp);
    return 0;
  }
  if (PyBytes_Check(key)) {
    *h = frozen::hash::of_bytes(seed, PyBytes_AS_STRING(key),
                                static_cast<size_t>(PyBytes_GET_SIZE(key)));
    return 0;
  }
  if (PyTuple_Check(key) || PyFrozenSet_Check(key)) {
    if (depth > 200) {
      PyErr_SetString(PyExc_RecursionError, "frozen key nested too deeply");
      return -1;
    }
    std::vector<uint64_t> hs;
    hs.reserve(static_cast<size_t>(PyObject_Length(key)));
    PyObject* it = PyObject_GetIter(key);
    if (it == nullptr) return -1;
    int rc = 0;
    while (PyObject* item = PyIter_Next(it)) {
      uint64_t eh;
      rc = key_hash(item, seed, &eh, depth + 1);
      Py_DECREF(item);
      if (rc != 0) break;
      hs.push_back(eh);
    }
    Py_DECREF(it);
    if (rc != 0) return rc;
    if (PyErr_Occurred()) return -1;
    *h = static_cast<uint64_t>(PyTuple_Check(key) ? frozen::hash::of_tuple(hs)
                                                  : frozen::hash::of_frozenset(hs));
    return 0;
  }
  if (PyObject_TypeCheck(key, g_tuple_base)) {
    // A FrozenTuple (a key read back from a frozen dict) hashes as the tuple it equals.
    nb::object plain = nb::steal(PySequence_Tuple(key));
    if (!plain.is_valid()) return -1;
    return key_hash(plain.ptr(), seed, h, depth + 1);
  }
  if (PyObject_TypeCheck(key, g_set_base)) {
    nb::object plain = nb::steal(PyFrozenSet_New(key));
    if (!plain.is_valid()) return -1;
    return key_hash(plain.ptr(), seed, h, depth + 1);
  }
  // Any other hashable object probes with its own hash (unhashable ones raise, as in a dict).
  // Python requires equal objects to hash equal, and the numeric tower hashes by value
  // (hash(Decimal(1)) == hash(numpy.int64(1)) == hash(1)), so numbers equal to a stored int or
  // float key are found; objects of unrelated types simply miss.
  const Py_hash_t ph = PyObject_Hash(key);
  if (ph == -1) return -1;
  *h = static_cast<uint64_t>(ph);
  return 0;
}

// Python equality between a stored key and a Python object. 1 equal, 0 not, -1 error.
int key_equal(ViewObject* v, Ref kref, PyObject* key) {
  const Tag t = tag_of(kref);
  if (PyUnicode_CheckExact(key)) {
    if (t != Tag::kStr) return 0;
    const char* d;
    Py_ssize_t n;
    PyObject* tmp;
    if (utf8_of(key, &d, &n, &tmp) != 0) return -1;
    uint64_t sn;
    const std::byte* s = blob(*v->image, kref, &sn);
    const int eq = sn == static_cast<uint64_t>(n) && std::memcmp(s, d, sn) == 0;
    Py_XDECREF(tmp);
    return eq;
  }
  if (PyBytes_CheckExact(key)) {
    if (t != Tag::kBytes) return 0;
    uint64_t sn;
    const std::byte* s = blob(*v->image, kref, &sn);
    return sn == static_cast<uint64_t>(PyBytes_GET_SIZE(key)) &&
           std::memcmp(s, PyBytes_AS_STRING(key), sn) == 0;
  }
  // The stored key as a plain object (tuples and frozensets as real ones) and Python's ==.
  // (An exact int against an inline int never gets here: lookup() compares those itself.)
  PyObject* stored = thaw(v->owner, kref, 0);
  if (stored == nullptr) return -1;
  const int eq = PyObject_RichCompareBool(stored, key, Py_EQ);
  Py_DECREF(stored);
  return eq;
}

// Slot index of `key`, -1 when absent, -2 with a Python error set (unhashable keys raise
// TypeError, as in a dict).
int64_t lookup(ViewObject* v, PyObject* key) {
  PyObject* const probe_key = key;
  bool probe_int_ok = false;
  long long probe_int = 0;
  uint64_t h;
  // Fast hash for the two key types the benchmarks (and most users) use.
  if (PyUnicode_CheckExact(key) && PyUnicode_IS_ASCII(key)) {
    h = frozen::hash::of_bytes(v->seed, PyUnicode_DATA(key),
                               static_cast<size_t>(PyUnicode_GET_LENGTH(key)));
  } else if (PyLong_CheckExact(key)) {
    int overflow;
    probe_int = PyLong_AsLongLongAndOverflow(key, &overflow);
    if (overflow == 0 && probe_int != -1) {
      probe_int_ok = true;
      h = static_cast<uint64_t>(frozen::hash::of_int(probe_int));
    } else {
      PyErr_Clear();
      probe_int_ok = overflow == 0 && probe_int == -1;
      Py_hash_t ph = PyLong_Type.tp_hash(key);
      if (ph == -1 && PyErr_Occurred()) return -2;
      h = static_cast<uint64_t>(ph);
    }
  } else {
    const int rc = key_hash(key, v->seed, &h, 0);
    if (rc < 0) return -2;
    if (rc == 1) return -1;
  }
  if (v->count == 0) return -1;
  const uint64_t stride = uint64_t{v->entry_words} * 8;
  layout::Probe pr(h, v->log2_slots);
  const uint64_t limit = pr.limit();
  try {
    for (uint64_t n = 0; n < limit; ++n, pr.next()) {
      const std::byte* e = v->slots + pr.slot * stride;
      const Ref key = load_ref(e + 8);
      if (key == layout::kEmptyKey) return -1;
      if (load_ref(e) != h) continue;
      // An int key compares inline, without a call (the hot case of int-keyed tables).
      if (tag_of(key) == Tag::kInt && PyLong_CheckExact(probe_key)) {
        if (probe_int_ok && probe_int == inline_int(key)) return static_cast<int64_t>(pr.slot);
        continue;
      }
      const int eq = key_equal(v, key, probe_key);
      if (eq < 0) return -2;
      if (eq > 0) return static_cast<int64_t>(pr.slot);
    }
  } catch (...) {
    set_error_from_current_exception();
    return -2;
  }
  return -1;
}

void set_key_error(PyObject* key) {
  // As dict does: a tuple key is wrapped so KeyError's args are (key,).
  PyObject* tup = PyTuple_Pack(1, key);
  if (tup == nullptr) return;
  PyErr_SetObject(PyExc_KeyError, tup);
  Py_DECREF(tup);
}

// ---- slots shared by every view ------------------------------------------------------------
void view_dealloc(PyObject* self) {
  auto* v = reinterpret_cast<ViewObject*>(self);
  PyTypeObject* tp = Py_TYPE(self);
  if (PyType_IS_GC(tp)) PyObject_GC_UnTrack(self);
  Py_XDECREF(v->owner);
  tp->tp_free(self);
  Py_DECREF(tp);
}

Py_ssize_t view_len(PyObject* self) {
  return static_cast<Py_ssize_t>(reinterpret_cast<ViewObject*>(self)->count);
}

PyObject* new_iter(ViewObject* v, int what) {
  auto* it = PyObject_New(IterObject, g_iter_type);
  if (it == nullptr) return nullptr;
  Py_INCREF(v);
  it->view = v;
  it->index = 0;
  it->what = what;
  it->spare[0] = it->spare[1] = nullptr;
  return reinterpret_cast<PyObject*>(it);
}

PyObject* view_iter(PyObject* self) { return new_iter(reinterpret_cast<ViewObject*>(self), 0); }

PyObject* view_thaw(PyObject* self, PyObject*) {
  auto* v = reinterpret_cast<ViewObject*>(self);
  return thaw(v->owner, v->ref, 0);
}

PyObject* view_owner(PyObject* self, void*) {
  auto* v = reinterpret_cast<ViewObject*>(self);
  Py_INCREF(v->owner);
  return reinterpret_cast<PyObject*>(v->owner);
}

PyObject* view_ref(PyObject* self, void*) {
  return PyLong_FromUnsignedLongLong(reinterpret_cast<ViewObject*>(self)->ref);
}

PyObject* view_iter_what(PyObject* self, PyObject* arg) {
  const long what = PyLong_AsLong(arg);
  if (what == -1 && PyErr_Occurred()) return nullptr;
  auto* v = reinterpret_cast<ViewObject*>(self);
  if (what < 0 || what > 2 || (what > 0 && v->entry_words != 3)) {
    PyErr_SetString(PyExc_ValueError, "_iter takes 0 (keys), 1 (values) or 2 (items) of a dict");
    return nullptr;
  }
  return new_iter(v, static_cast<int>(what));
}

// Entry i in insertion order: the key (what 0) or value (1); negative i counts from the end.
PyObject* view_entry(PyObject* self, PyObject* args) {
  Py_ssize_t i;
  int what = 0;
  if (!PyArg_ParseTuple(args, "n|i", &i, &what)) return nullptr;
  auto* v = reinterpret_cast<ViewObject*>(self);
  const auto n = static_cast<Py_ssize_t>(v->count);
  if (i < 0) i += n;
  if (i < 0 || i >= n) {
    PyErr_SetString(PyExc_IndexError, "frozen entry index out of range");
    return nullptr;
  }
  if (v->entry_words == 0) return decode(v->owner, load_ref(v->items + i * 8));
  if (what == 1 && v->entry_words != 3) {
    PyErr_SetString(PyExc_ValueError, "a set has no values");
    return nullptr;
  }
  try {
    return decode(v->owner, load_ref(entry_at(v, static_cast<uint64_t>(i)) + (what == 1 ? 16 : 8)));
  } catch (...) {
    set_error_from_current_exception();
    return nullptr;
  }
}

PyMethodDef view_methods[] = {
    {"thaw", view_thaw, METH_NOARGS, "A plain Python copy (dict, list, tuple, set, frozenset), deep."},
    {"_iter", view_iter_what, METH_O, "Iterator over keys (0), values (1) or items (2)."},
    {"_entry", view_entry, METH_VARARGS, "Entry i in insertion order: key, or value (what=1)."},
    {nullptr, nullptr, 0, nullptr},
};

PyGetSetDef view_getset[] = {
    {"_owner", view_owner, nullptr, "The FrozenImage this view reads.", nullptr},
    {"_ref", view_ref, nullptr, "This container's reference inside the image.", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};

// ---- dict / set ----------------------------------------------------------------------------
PyObject* dict_subscript(PyObject* self, PyObject* key) {
  auto* v = reinterpret_cast<ViewObject*>(self);
  const int64_t idx = lookup(v, key);
  if (idx >= 0) return decode(v->owner, load_ref(v->slots + idx * 24 + 16));
  if (idx == -1) set_key_error(key);
  return nullptr;
}

int table_contains(PyObject* self, PyObject* key) {
  const int64_t idx = lookup(reinterpret_cast<ViewObject*>(self), key);
  if (idx == -2) {
    // `[1] in d` raises TypeError for a dict; for a set too.
    return -1;
  }
  return idx >= 0 ? 1 : 0;
}

PyObject* dict_get(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
  if (nargs < 1 || nargs > 2) {
    PyErr_SetString(PyExc_TypeError, "get expected 1 or 2 arguments");
    return nullptr;
  }
  auto* v = reinterpret_cast<ViewObject*>(self);
  const int64_t idx = lookup(v, args[0]);
  if (idx >= 0) return decode(v->owner, load_ref(v->slots + idx * 24 + 16));
  if (idx == -2) return nullptr;
  PyObject* dflt = nargs == 2 ? args[1] : Py_None;
  Py_INCREF(dflt);
  return dflt;
}

PyMethodDef dict_methods[] = {
    {"get", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(dict_get)), METH_FASTCALL,
     "D.get(k[, d]) -> D[k] if k in D, else d (default None)."},
    {"thaw", view_thaw, METH_NOARGS, "A plain Python copy (dict, list, tuple, set, frozenset), deep."},
    {"_iter", view_iter_what, METH_O, "Iterator over keys (0), values (1) or items (2)."},
    {"_entry", view_entry, METH_VARARGS, "Entry i in insertion order: key, or value (what=1)."},
    {nullptr, nullptr, 0, nullptr},
};

// ---- list / tuple --------------------------------------------------------------------------
PyObject* seq_item(PyObject* self, Py_ssize_t i) {
  auto* v = reinterpret_cast<ViewObject*>(self);
  if (i < 0 || static_cast<uint64_t>(i) >= v->count) {
    PyErr_SetString(PyExc_IndexError, PyType_IsSubtype(Py_TYPE(self), g_tuple_base)
                                          ? "tuple index out of range"
                                          : "list index out of range");
    return nullptr;
  }
  return decode(v->owner, load_ref(v->items + i * 8));
}

PyObject* seq_subscript(PyObject* self, PyObject* key) {
  auto* v = reinterpret_cast<ViewObject*>(self);
  const bool is_tuple = PyType_IsSubtype(Py_TYPE(self), g_tuple_base);
  if (PyIndex_Check(key)) {
    Py_ssize_t i = PyNumber_AsSsize_t(key, PyExc_IndexError);
    if (i == -1 && PyErr_Occurred()) return nullptr;
    if (i < 0) i += static_cast<Py_ssize_t>(v->count);
    return seq_item(self, i);
  }
  if (PySlice_Check(key)) {
    Py_ssize_t start, stop, step;
    if (PySlice_Unpack(key, &start, &stop, &step) < 0) return nullptr;
    const Py_ssize_t n =
        PySlice_AdjustIndices(static_cast<Py_ssize_t>(v->count), &start, &stop, step);
    // A slice is new data: a plain list (or tuple), as list[a:b] is.
    PyObject* res = is_tuple ? PyTuple_New(n) : PyList_New(n);
    if (res == nullptr) return nullptr;
    for (Py_ssize_t k = 0, i = start; k < n; ++k, i += step) {
      PyObject* item = decode(v->owner, load_ref(v->items + i * 8));
      if (item == nullptr) {
        Py_DECREF(res);
        return nullptr;
      }
      if (is_tuple) PyTuple_SET_ITEM(res, k, item);
      else PyList_SET_ITEM(res, k, item);
    }
    return res;
  }
  PyErr_Format(PyExc_TypeError, "%s indices must be integers or slices, not %.200s",
               is_tuple ? "tuple" : "list", Py_TYPE(key)->tp_name);
  return nullptr;
}

int seq_contains(PyObject* self, PyObject* x) {
  auto* v = reinterpret_cast<ViewObject*>(self);
  for (uint64_t i = 0; i < v->count; ++i) {
    const Ref r = load_ref(v->items + i * 8);
    // Cheap exact checks before building an object.
    if (PyLong_CheckExact(x) && tag_of(r) == Tag::kInt) {
      int overflow;
      const long long xv = PyLong_AsLongLongAndOverflow(x, &overflow);
      if (overflow == 0 && xv == inline_int(r)) return 1;
      continue;
    }
    PyObject* item = decode(v->owner, r);
    if (item == nullptr) return -1;
    const int eq = PyObject_RichCompareBool(item, x, Py_EQ);
    Py_DECREF(item);
    if (eq != 0) return eq;
  }
  return 0;
}

// ---- iterator ------------------------------------------------------------------------------
void iter_dealloc(PyObject* self) {
  PyTypeObject* tp = Py_TYPE(self);
  auto* it = reinterpret_cast<IterObject*>(self);
  Py_XDECREF(it->view);
  Py_XDECREF(it->spare[0]);
  Py_XDECREF(it->spare[1]);
  PyObject_Free(self);
  Py_DECREF(tp);  // a heap type: every instance holds a reference to it
}

// An int for an iterator to return. `for x in frozen_list` and sum() drop each int before
// asking for the one after next, so an int the iterator made earlier is often referenced by
// the iterator alone (refcount 1): it is then rewritten in place and returned again, sparing
// an allocation and a free per item -- the way CPython's zip() and enumerate() reuse their
// result tuple. Nobody else can observe the change (no other reference exists, and ints have
// no weak references). Only for one-digit ints outside the small-int cache, and only where the
// int layout is known (CPython 3.11: ob_size is sign * digits, ob_digit[0] the 30-bit digit).
PyObject* next_int(IterObject* it, int64_t val) {
#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030C0000 && PYLONG_BITS_IN_DIGIT == 30
  const uint64_t mag = val < 0 ? 0 - static_cast<uint64_t>(val) : static_cast<uint64_t>(val);
  if ((val > 256 || val < -5) && mag < (uint64_t{1} << PyLong_SHIFT)) {
    for (PyObject*& c : it->spare) {
      if (c != nullptr && Py_REFCNT(c) == 1) {
        auto* l = reinterpret_cast<PyLongObject*>(c);
        Py_SET_SIZE(l, val < 0 ? -1 : 1);
        l->ob_digit[0] = static_cast<digit>(mag);
        Py_INCREF(c);
        return c;
      }
    }
    PyObject* o = PyLong_FromLongLong(val);
    if (o == nullptr) return nullptr;
    // Keep it as a spare in place of one still in use elsewhere (alternating).
    PyObject*& slot = it->spare[it->index & 1];
    Py_XSETREF(slot, Py_NewRef(o));
    return o;
  }
#else
  (void)it;
#endif
  return PyLong_FromLongLong(val);
}

PyObject* iter_next(PyObject* self) {
  auto* it = reinterpret_cast<IterObject*>(self);
  ViewObject* v = it->view;
  if (v == nullptr || it->index >= v->count) {
    Py_CLEAR(it->view);
    return nullptr;
  }
  const uint64_t i = it->index++;
  if (v->entry_words == 0) {
    const Ref r = load_ref(v->items + i * 8);
    // The common leaf inline, without decode()'s dispatch: iterating a list of ints is a
    // measured hot path (bench/python/frozen.py).
    if (tag_of(r) == Tag::kInt) return next_int(it, inline_int(r));
    return decode(v->owner, r);
  }
  const std::byte* e;
  try {
    e = entry_at(v, i);
  } catch (...) {
    set_error_from_current_exception();
    return nullptr;
  }
  if (it->what == 0) return decode(v->owner, load_ref(e + 8));
  if (it->what == 1) return decode(v->owner, load_ref(e + 16));
  PyObject* k = decode(v->owner, load_ref(e + 8));
  if (k == nullptr) return nullptr;
  PyObject* val = decode(v->owner, load_ref(e + 16));
  if (val == nullptr) {
    Py_DECREF(k);
    return nullptr;
  }
  PyObject* pair = PyTuple_New(2);
  if (pair == nullptr) {
    Py_DECREF(k);
    Py_DECREF(val);
    return nullptr;
  }
  PyTuple_SET_ITEM(pair, 0, k);
  PyTuple_SET_ITEM(pair, 1, val);
  return pair;
}

PyObject* iter_length_hint(PyObject* self, PyObject*) {
  auto* it = reinterpret_cast<IterObject*>(self);
  const uint64_t left = it->view == nullptr ? 0 : it->view->count - it->index;
  return PyLong_FromUnsignedLongLong(left);
}

PyMethodDef iter_methods[] = {
    {"__length_hint__", iter_length_hint, METH_NOARGS, nullptr},
    {nullptr, nullptr, 0, nullptr},
};

// ---- the owner -----------------------------------------------------------------------------
void owner_dealloc(PyObject* self) {
  auto* o = reinterpret_cast<OwnerObject*>(self);
  delete o->frozen;
  PyTypeObject* tp = Py_TYPE(self);
  tp->tp_free(self);
  Py_DECREF(tp);
}

int owner_getbuffer(PyObject* self, Py_buffer* view, int flags) {
  auto* o = reinterpret_cast<OwnerObject*>(self);
  if ((flags & PyBUF_WRITABLE) == PyBUF_WRITABLE) {
    view->obj = nullptr;
    PyErr_SetString(PyExc_BufferError, "a frozen image is read-only");
    return -1;
  }
  return PyBuffer_FillInfo(view, self, const_cast<std::byte*>(o->image->data()),
                           static_cast<Py_ssize_t>(o->image->size()), 1, flags);
}

PyObject* wrap_owner(Frozen&& f, bool allow_pickle) {
  auto* o = reinterpret_cast<OwnerObject*>(g_owner_type->tp_alloc(g_owner_type, 0));
  if (o == nullptr) throw nb::python_error();
  o->frozen = new Frozen(std::move(f));
  o->image = &o->frozen->image();
  o->allow_pickle = allow_pickle;
  return reinterpret_cast<PyObject*>(o);
}

OwnerObject* as_owner(nb::handle h) {
  if (!PyObject_TypeCheck(h.ptr(), g_owner_type)) throw nb::type_error("expected a FrozenImage");
  return reinterpret_cast<OwnerObject*>(h.ptr());
}

// The root (or any container ref) of an owner, as a view or a leaf value.
nb::object view_of(OwnerObject* o, Ref r) {
  PyObject* res = decode(o, r);
  if (res == nullptr) throw nb::python_error();
  return nb::steal(res);
}

// ---- the encoder ---------------------------------------------------------------------------
class Encoder {
 public:
  explicit Encoder(bool allow_pickle) : allow_pickle_(allow_pickle) {}
  ~Encoder() {
    for (PyObject* o : keep_) Py_DECREF(o);
  }
  Builder& builder() { return b_; }

  Ref value(PyObject* o) {
    if (o == Py_None) return b_.none();
    if (o == Py_True) return b_.boolean(true);
    if (o == Py_False) return b_.boolean(false);
    if (PyLong_CheckExact(o)) return integer(o);
    if (PyFloat_CheckExact(o)) return b_.floating(PyFloat_AS_DOUBLE(o));
    if (PyUnicode_CheckExact(o)) return str(o);
    if (PyBytes_CheckExact(o)) {
      return b_.bytes({reinterpret_cast<const std::byte*>(PyBytes_AS_STRING(o)),
                       static_cast<size_t>(PyBytes_GET_SIZE(o))});
    }
    if (PyList_CheckExact(o) || PyTuple_CheckExact(o) || PyDict_Check(o) || PyAnySet_Check(o)) {
      return container(o);
    }
    if (g.ndarray_type != nullptr && PyObject_IsInstance(o, g.ndarray_type) == 1) {
      if (auto r = ndarray(o)) return *r;
    }
    if (is_view(o)) {
      // A frozen view inside a new tree: copy its contents (a plain copy, then encoded).
      nb::object plain = nb::steal(view_thaw(o, nullptr));
      if (!plain.is_valid()) throw nb::python_error();
      keep(plain.ptr());
      return value(plain.ptr());
    }
    return pickled(o);
  }

  // A key (dict key or set element): the Ref and its table hash.
  Ref key(PyObject* o, uint64_t* h) {
    Ref r;
    if (o == Py_None) {
      r = b_.none();
    } else if (PyBool_Check(o)) {
      r = b_.boolean(o == Py_True);
    } else if (PyLong_Check(o)) {
      r = integer(o);
    } else if (PyFloat_Check(o)) {
      r = b_.floating(PyFloat_AS_DOUBLE(o));
    } else if (PyUnicode_Check(o)) {
      r = str(o);
    } else if (PyBytes_Check(o)) {
      r = b_.bytes({reinterpret_cast<const std::byte*>(PyBytes_AS_STRING(o)),
                    static_cast<size_t>(PyBytes_GET_SIZE(o))});
    } else if (PyTuple_Check(o) || PyFrozenSet_Check(o)) {
      if (Py_EnterRecursiveCall(" while freezing a key") != 0) throw nb::python_error();
      std::vector<Ref> refs;
      std::vector<uint64_t> hashes;
      nb::object it = nb::steal(PyObject_GetIter(o));
      if (!it.is_valid()) {
        Py_LeaveRecursiveCall();
        throw nb::python_error();
      }
      try {
        while (PyObject* item = PyIter_Next(it.ptr())) {
          nb::object hold = nb::steal(item);
          uint64_t eh;
          refs.push_back(key(item, &eh));
          hashes.push_back(eh);
        }
      } catch (...) {
        Py_LeaveRecursiveCall();
        throw;
      }
      Py_LeaveRecursiveCall();
      if (PyErr_Occurred()) throw nb::python_error();
      if (PyTuple_Check(o)) {
        r = b_.tuple(refs);
      } else {
        r = b_.set_hashed(refs, hashes, /*frozen=*/true);
      }
    } else {
      PyErr_Format(PyExc_TypeError,
                   "shoal.freeze: a frozen dict key or set element must be None, bool, int, "
                   "float, str, bytes, or a tuple/frozenset of these, not %.200s",
                   Py_TYPE(o)->tp_name);
      throw nb::python_error();
    }
    *h = b_.hash_of(r);
    return r;
  }

 private:
  static bool is_view(PyObject* o) {
    return PyObject_TypeCheck(o, g_dict_base) || PyObject_TypeCheck(o, g_list_base) ||
           PyObject_TypeCheck(o, g_tuple_base) || PyObject_TypeCheck(o, g_set_base);
  }

  void keep(PyObject* o) {
    Py_INCREF(o);
    keep_.push_back(o);
  }

  Ref integer(PyObject* o) {
    int overflow;
    const long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (v == -1 && PyErr_Occurred()) throw nb::python_error();
    if (overflow == 0) return b_.integer(v);
    const size_t bits = _PyLong_NumBits(o);
    if (bits == static_cast<size_t>(-1) && PyErr_Occurred()) throw nb::python_error();
    std::vector<unsigned char> buf(bits / 8 + 1);
#if PY_VERSION_HEX >= 0x030D0000
    if (_PyLong_AsByteArray(reinterpret_cast<PyLongObject*>(o), buf.data(), buf.size(),
                            /*little_endian=*/1, /*is_signed=*/1, /*with_exceptions=*/1) != 0) {
#else
    if (_PyLong_AsByteArray(reinterpret_cast<PyLongObject*>(o), buf.data(), buf.size(),
                            /*little_endian=*/1, /*is_signed=*/1) != 0) {
#endif
      throw nb::python_error();
    }
    return b_.big_integer(std::as_bytes(std::span(buf)));
  }

  Ref str(PyObject* o) {
    if (PyUnicode_IS_ASCII(o)) {
      return b_.str({static_cast<const char*>(PyUnicode_DATA(o)),
                     static_cast<size_t>(PyUnicode_GET_LENGTH(o))},
                    layout::kStrAscii);
    }
    const char* d;
    Py_ssize_t n;
    PyObject* tmp;
    if (utf8_of(o, &d, &n, &tmp) != 0) throw nb::python_error();
    const uint64_t flags = tmp != nullptr ? layout::kStrSurrogates : 0;
    Ref r = b_.str({d, static_cast<size_t>(n)}, flags);
    Py_XDECREF(tmp);
    return r;
  }

  Ref pickled(PyObject* o) {
    if (!allow_pickle_) {
      PyErr_Format(PyExc_TypeError,
                   "shoal.freeze: %.200s is not a type shoal encodes natively (None, bool, int, "
                   "float, str, bytes, list, tuple, dict, set, frozenset, numpy.ndarray), and "
                   "allow_pickle=False refuses to pickle it",
                   Py_TYPE(o)->tp_name);
      throw nb::python_error();
    }
    nb::object data = nb::steal(PyObject_CallOneArg(g.pickle_dumps, o));
    if (!data.is_valid()) throw nb::python_error();
    if (!PyBytes_Check(data.ptr())) throw nb::type_error("pickle_dumps must return bytes");
    return b_.pickle({reinterpret_cast<const std::byte*>(PyBytes_AS_STRING(data.ptr())),
                      static_cast<size_t>(PyBytes_GET_SIZE(data.ptr()))});
  }

  std::optional<Ref> ndarray(PyObject* o) {
    nb::object parts = nb::steal(PyObject_CallOneArg(g.ndarray_parts, o));
    if (!parts.is_valid()) throw nb::python_error();
    if (parts.is_none()) return std::nullopt;  // object dtype: pickled
    nb::tuple t = nb::borrow<nb::tuple>(parts);
    const std::string descr = nb::cast<std::string>(t[0]);
    const auto itemsize = nb::cast<uint64_t>(t[1]);
    std::vector<uint64_t> shape;
    for (nb::handle d : nb::borrow<nb::tuple>(t[2])) shape.push_back(nb::cast<uint64_t>(d));
    const bool fortran = nb::cast<bool>(t[3]);
    Py_buffer buf;
    if (PyObject_GetBuffer(nb::object(t[4]).ptr(), &buf, PyBUF_SIMPLE) != 0) {
      throw nb::python_error();
    }
    Ref r;
    try {
      r = b_.ndarray(descr, itemsize, shape, fortran, buf.buf, static_cast<uint64_t>(buf.len));
    } catch (...) {
      PyBuffer_Release(&buf);
      throw;
    }
    PyBuffer_Release(&buf);
    return r;
  }

  Ref container(PyObject* o) {
    auto found = memo_.find(o);
    if (found != memo_.end()) {
      if (found->second == kInProgress) {
        PyErr_Format(PyExc_ValueError,
                     "shoal.freeze: the %.200s contains itself (a cycle); a frozen object is a "
                     "tree (shared subtrees are fine, cycles are not)",
                     Py_TYPE(o)->tp_name);
        throw nb::python_error();
      }
      return found->second;
    }
    if (Py_EnterRecursiveCall(" while freezing") != 0) throw nb::python_error();
    keep(o);  // the memo keys on the address: keep the object alive while it is in the memo
    memo_[o] = kInProgress;
    Ref r;
    try {
      r = container_body(o);
    } catch (...) {
      Py_LeaveRecursiveCall();
      throw;
    }
    Py_LeaveRecursiveCall();
    memo_[o] = r;
    return r;
  }

  Ref container_body(PyObject* o) {
    if (PyList_CheckExact(o) || PyTuple_CheckExact(o)) {
      const bool is_list = PyList_CheckExact(o);
      if (auto r = inline_sequence(o, is_list)) return *r;
      std::vector<Ref> items;
      items.reserve(static_cast<size_t>(Py_SIZE(o)));
      // Index-based with a bounds check each time: encoding a pickled leaf runs Python code
      // that could resize the list.
      for (Py_ssize_t i = 0; i < Py_SIZE(o); ++i) {
        nb::object item = nb::borrow(is_list ? PyList_GET_ITEM(o, i) : PyTuple_GET_ITEM(o, i));
        items.push_back(value(item.ptr()));
      }
      return is_list ? b_.list(items) : b_.tuple(items);
    }
    if (PyDict_Check(o)) {
      // Snapshot the entries first (strong references): encoding may run Python code.
      std::vector<std::pair<nb::object, nb::object>> entries;
      entries.reserve(static_cast<size_t>(PyDict_Size(o)));
      if (PyDict_CheckExact(o)) {
        Py_ssize_t pos = 0;
        PyObject *k, *v;
        while (PyDict_Next(o, &pos, &k, &v)) entries.emplace_back(nb::borrow(k), nb::borrow(v));
      } else {
        nb::object items = nb::steal(PyObject_CallMethod(o, "items", nullptr));
        if (!items.is_valid()) throw nb::python_error();
        for (nb::handle kv : items) {
          nb::tuple t = nb::borrow<nb::tuple>(kv);
          entries.emplace_back(nb::borrow(t[0]), nb::borrow(t[1]));
        }
      }
      std::vector<Ref> keys, values;
      std::vector<uint64_t> hashes;
      keys.reserve(entries.size());
      values.reserve(entries.size());
      hashes.reserve(entries.size());
      for (auto& [k, v] : entries) {
        uint64_t h;
        keys.push_back(key(k.ptr(), &h));
        hashes.push_back(h);
        values.push_back(value(v.ptr()));
      }
      return b_.dict_hashed(keys, values, hashes);
    }
    // set / frozenset (and subclasses)
    std::vector<nb::object> elems;
    {
      nb::object it = nb::steal(PyObject_GetIter(o));
      if (!it.is_valid()) throw nb::python_error();
      while (PyObject* item = PyIter_Next(it.ptr())) elems.push_back(nb::steal(item));
      if (PyErr_Occurred()) throw nb::python_error();
    }
    std::vector<Ref> keys;
    std::vector<uint64_t> hashes;
    for (auto& e : elems) {
      uint64_t h;
      keys.push_back(key(e.ptr(), &h));
      hashes.push_back(h);
    }
    return b_.set_hashed(keys, hashes, /*frozen=*/PyFrozenSet_Check(o));
  }

  // The inline Ref of None, a bool or an exact int within 60 bits; nullopt otherwise.
  static std::optional<Ref> inline_ref(PyObject* x) {
    if (x == Py_None) return Ref{static_cast<uint64_t>(Tag::kNone)};
    if (x == Py_True) return Ref{static_cast<uint64_t>(Tag::kTrue)};
    if (x == Py_False) return Ref{static_cast<uint64_t>(Tag::kFalse)};
    if (!PyLong_CheckExact(x)) return std::nullopt;
    int overflow;
    const long long v = PyLong_AsLongLongAndOverflow(x, &overflow);
    if (overflow != 0 || v < layout::kInlineIntMin || v > layout::kInlineIntMax) {
      return std::nullopt;
    }
    return (static_cast<uint64_t>(v) << 4) | static_cast<uint64_t>(Tag::kInt);
  }

  // A list/tuple of inline scalars only (the common "big list of ints"): written straight into
  // the image, with no intermediate array of refs (that array, 8 bytes an item, doubled the
  // bytes written and the pages faulted). Nothing here runs Python code, so the list cannot
  // change between the check and the copy.
  std::optional<Ref> inline_sequence(PyObject* o, bool is_list) {
    const Py_ssize_t n = Py_SIZE(o);
    PyObject** items = is_list ? reinterpret_cast<PyListObject*>(o)->ob_item
                               : reinterpret_cast<PyTupleObject*>(o)->ob_item;
    // One pass (each item object is a cache miss): write as we go, give up at the first item
    // that is not inline (the builder drops the partial node).
    return b_.try_inline_sequence(!is_list, static_cast<uint64_t>(n), [&](Ref* out) {
      for (Py_ssize_t i = 0; i < n; ++i) {
        const std::optional<Ref> r = inline_ref(items[i]);
        if (!r) return false;
        out[i] = *r;
      }
      return true;
    });
  }

  static constexpr Ref kInProgress = ~Ref{0};
  Builder b_;
  bool allow_pickle_;
  std::unordered_map<PyObject*, Ref> memo_;
  std::vector<PyObject*> keep_;
};

// ---- type specs ----------------------------------------------------------------------------
PyType_Slot owner_slots[] = {
    {Py_tp_dealloc, reinterpret_cast<void*>(owner_dealloc)},
    {Py_bf_getbuffer, reinterpret_cast<void*>(owner_getbuffer)},
    {Py_tp_doc, const_cast<char*>("The mapping behind frozen views (a segment or a file).")},
    {0, nullptr},
};
PyType_Spec owner_spec = {"shoal._shoal.FrozenImage", sizeof(OwnerObject), 0,
                          Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION, owner_slots};

PyType_Slot dict_slots[] = {
    {Py_tp_dealloc, reinterpret_cast<void*>(view_dealloc)},
    {Py_mp_length, reinterpret_cast<void*>(view_len)},
    {Py_mp_subscript, reinterpret_cast<void*>(dict_subscript)},
    {Py_sq_contains, reinterpret_cast<void*>(table_contains)},
    {Py_sq_length, reinterpret_cast<void*>(view_len)},
    {Py_tp_iter, reinterpret_cast<void*>(view_iter)},
    {Py_tp_methods, dict_methods},
    {Py_tp_getset, view_getset},
    {0, nullptr},
};
PyType_Slot set_slots[] = {
    {Py_tp_dealloc, reinterpret_cast<void*>(view_dealloc)},
    {Py_sq_length, reinterpret_cast<void*>(view_len)},
    {Py_sq_contains, reinterpret_cast<void*>(table_contains)},
    {Py_tp_iter, reinterpret_cast<void*>(view_iter)},
    {Py_tp_methods, view_methods},
    {Py_tp_getset, view_getset},
    {0, nullptr},
};
PyType_Slot seq_slots[] = {
    {Py_tp_dealloc, reinterpret_cast<void*>(view_dealloc)},
    {Py_sq_length, reinterpret_cast<void*>(view_len)},
    {Py_mp_length, reinterpret_cast<void*>(view_len)},
    {Py_sq_item, reinterpret_cast<void*>(seq_item)},
    {Py_mp_subscript, reinterpret_cast<void*>(seq_subscript)},
    {Py_sq_contains, reinterpret_cast<void*>(seq_contains)},
    {Py_tp_iter, reinterpret_cast<void*>(view_iter)},
    {Py_tp_methods, view_methods},
    {Py_tp_getset, view_getset},
    {0, nullptr},
};
// Views are made only by this file (from an image); FrozenDict() from Python is refused.
constexpr unsigned kViewFlags =
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION;
PyType_Spec dict_spec = {"shoal._shoal._FrozenDictBase", sizeof(ViewObject), 0, kViewFlags,
                         dict_slots};
PyType_Spec set_spec = {"shoal._shoal._FrozenSetBase", sizeof(ViewObject), 0, kViewFlags,
                        set_slots};
PyType_Spec list_spec = {"shoal._shoal._FrozenListBase", sizeof(ViewObject), 0, kViewFlags,
                         seq_slots};
PyType_Spec tuple_spec = {"shoal._shoal._FrozenTupleBase", sizeof(ViewObject), 0, kViewFlags,
                          seq_slots};

PyType_Slot iter_slots[] = {
    {Py_tp_dealloc, reinterpret_cast<void*>(iter_dealloc)},
    {Py_tp_iter, reinterpret_cast<void*>(PyObject_SelfIter)},
    {Py_tp_iternext, reinterpret_cast<void*>(iter_next)},
    {Py_tp_methods, iter_methods},
    {0, nullptr},
};
PyType_Spec iter_spec = {"shoal._shoal._FrozenIterator", sizeof(IterObject), 0,
                         Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION, iter_slots};

PyTypeObject* make_type(nb::module_& m, PyType_Spec* spec, const char* attr) {
  PyObject* t = PyType_FromSpec(spec);
  if (t == nullptr) throw nb::python_error();
  m.attr(attr) = nb::borrow(t);
  return reinterpret_cast<PyTypeObject*>(t);  // kept for the process's lifetime
}

}  // namespace

void register_frozen(nb::module_& m) {
  g_owner_type = make_type(m, &owner_spec, "FrozenImage");
  g_dict_base = make_type(m, &dict_spec, "_FrozenDictBase");
  g_set_base = make_type(m, &set_spec, "_FrozenSetBase");
  g_list_base = make_type(m, &list_spec, "_FrozenListBase");
  g_tuple_base = make_type(m, &tuple_spec, "_FrozenTupleBase");
  g_iter_type = make_type(m, &iter_spec, "_FrozenIterator");

  m.def(
      "_frozen_init",
      [](nb::type_object dict_cls, nb::type_object list_cls, nb::type_object tuple_cls,
         nb::type_object set_cls, nb::object ndarray_type, nb::object ndarray_parts,
         nb::object ndarray_leaf, nb::object pickle_dumps, nb::object pickle_loads) {
        auto check = [](nb::type_object c, PyTypeObject* base) {
          if (!PyType_IsSubtype(reinterpret_cast<PyTypeObject*>(c.ptr()), base) ||
              reinterpret_cast<PyTypeObject*>(c.ptr())->tp_basicsize != base->tp_basicsize) {
            throw nb::type_error("view classes must subclass the bases with __slots__ = ()");
          }
          return reinterpret_cast<PyTypeObject*>(c.inc_ref().ptr());
        };
        g.dict_cls = check(dict_cls, g_dict_base);
        g.list_cls = check(list_cls, g_list_base);
        g.tuple_cls = check(tuple_cls, g_tuple_base);
        g.set_cls = check(set_cls, g_set_base);
        g.ndarray_type = ndarray_type.inc_ref().ptr();
        g.ndarray_parts = ndarray_parts.inc_ref().ptr();
        g.ndarray_leaf = ndarray_leaf.inc_ref().ptr();
        g.pickle_dumps = pickle_dumps.inc_ref().ptr();
        g.pickle_loads = pickle_loads.inc_ref().ptr();
      },
      "Wires the Python view classes and helpers in (shoal._frozen calls it once).");

  m.def(
      "frozen_freeze",
      [](nb::handle obj, bool allow_pickle) {
        Encoder enc(allow_pickle);
        const Ref root = enc.value(obj.ptr());
        Frozen f;
        {
          nb::gil_scoped_release nogil;
          f = enc.builder().finish(root);
        }
        nb::object owner = nb::steal(wrap_owner(std::move(f), true));
        return view_of(as_owner(owner), root);
      },
      "obj"_a, "allow_pickle"_a = true,
      "Encode obj into a new sealed frozen segment; return its view (or leaf value).");

  m.def(
      "frozen_save",
      [](nb::handle obj, const std::string& path, bool allow_pickle) {
        Encoder enc(allow_pickle);
        const Ref root = enc.value(obj.ptr());
        nb::gil_scoped_release nogil;
        enc.builder().save(root, path);
      },
      "obj"_a, "path"_a, "allow_pickle"_a = true, "Encode obj into a file (see shoal.save).");

  m.def(
      "frozen_remove_dead_temps",
      [](const std::string& dir) {
        nb::gil_scoped_release nogil;
        return shoal::frozen::remove_dead_save_temps(dir);
      },
      "dir"_a,
      "Remove the temporary files that shoal.save calls killed mid-write left in dir (never one "
      "being written); returns their paths.");

  m.def(
      "frozen_owner_attach",
      [](const std::string& handle) {
        Frozen f;
        {
          nb::gil_scoped_release nogil;
          f = Frozen::attach(handle);
        }
        return nb::steal(wrap_owner(std::move(f), true));
      },
      "handle"_a, "The FrozenImage a segment handle names.");
  m.def(
      "frozen_owner_from_segment",
      [](nb::handle seg) {
        if (!nb::isinstance<PySegment>(seg)) throw nb::type_error("expected a shoal Segment");
        const PySegment& s = nb::cast<const PySegment&>(seg);
        if (!s.seg.valid()) throw nb::value_error("segment is closed");
        return nb::steal(wrap_owner(Frozen::from_segment(s.seg), true));
      },
      "segment"_a, "The FrozenImage of an attached kFrozen segment.");
  m.def(
      "frozen_owner_load",
      [](const std::string& path, bool allow_pickle) {
        Frozen f;
        {
          nb::gil_scoped_release nogil;
          f = Frozen::load(path);
        }
        if (f.image().has_pickles() && !allow_pickle) {
          throw nb::value_error(("shoal.load: " + path +
                                 " holds pickled objects, and unpickling data from a file can run "
                                 "arbitrary code: pass allow_pickle=True if you trust it")
                                    .c_str());
        }
        return nb::steal(wrap_owner(std::move(f), allow_pickle));
      },
      "path"_a, "allow_pickle"_a = false, "The FrozenImage of a file written by shoal.save.");
  m.def(
      "frozen_view",
      [](nb::handle owner, uint64_t ref) {
        OwnerObject* o = as_owner(owner);
        if (!is_container(tag_of(ref))) throw nb::value_error("not a container reference");
        return view_of(o, ref);
      },
      "owner"_a, "ref"_a, "The view of container `ref` in an image (pickled views).");
  m.def(
      "frozen_root",
      [](nb::handle owner) {
        OwnerObject* o = as_owner(owner);
        return view_of(o, o->image->root().ref());
      },
      "owner"_a, "The root of an image: a view, or the leaf value.");
  m.def(
      "frozen_owner_info",
      [](nb::handle owner, bool pin) {
        OwnerObject* o = as_owner(owner);
        nb::dict d;
        d["nbytes"] = o->image->size();
        d["allow_pickle"] = o->allow_pickle;
        d["path"] = o->frozen->path();
        if (o->frozen->path().empty()) {
          std::string h;
          {
            nb::gil_scoped_release nogil;
            h = o->frozen->handle(pin);
          }
          d["handle"] = h;
        }
        return d;
      },
      "owner"_a, "pin"_a = false,
      "nbytes, allow_pickle, path (files) and handle (segments; pin=True pins it for transit).");
  m.def(
      "frozen_validate",
      [](nb::handle owner, uint32_t max_depth) {
        OwnerObject* o = as_owner(owner);
        nb::gil_scoped_release nogil;
        o->image->validate(max_depth);
      },
      "owner"_a, "max_depth"_a = 1000, "Check every node of the image (DecodeError if corrupt).");
  m.def(
      "frozen_hash",
      [](nb::handle key, uint64_t seed) {
        uint64_t h;
        const int rc = key_hash(key.ptr(), seed, &h, 0);
        if (rc < 0) throw nb::python_error();
        if (rc == 1) throw nb::type_error("not a frozen key type");
        return h;
      },
      "key"_a, "seed"_a = frozen::kDefaultHashSeed,
      "The table hash of a key (the same in every process).");
}

}  // namespace shoal::py
