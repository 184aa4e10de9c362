// python/bindings/frozen_views.cpp — the view types FrozenDict / FrozenList / FrozenTuple /
// FrozenSet, their iterators and FrozenImage (the owner of a mapping), as raw CPython types.
//
// The views are raw CPython types (PyType_FromSpec), not nanobind classes: `d[k]`, `k in d`,
// `len`, iteration and `l[i]` are the hot paths measured against dict and list, and they go
// straight from the type slot to the table probe with no argument conversion layer.
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
#include "codec.hpp"
#include "frozen_views.hpp"
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
using codec::inline_int;
using codec::is_container;
using codec::kDictEntryBytes;
using codec::kEntryKey;
using codec::kEntryValue;
using codec::kNodeHead;
using codec::kWord;
using codec::key_hash;
using codec::load_ref;
using codec::Ref;
using codec::tag_of;
using codec::utf8_of;
using Encoder = codec::Encoder<Builder>;

// ---- the Python view classes, set once by _frozen_init (the codec's hooks are set there too) --
struct Registry {
  PyTypeObject* dict_cls = nullptr;
  PyTypeObject* list_cls = nullptr;
  PyTypeObject* tuple_cls = nullptr;
  PyTypeObject* set_cls = nullptr;
};
Registry g;

PyTypeObject* g_owner_type = nullptr;
PyTypeObject* g_dict_base = nullptr;
PyTypeObject* g_list_base = nullptr;
PyTypeObject* g_tuple_base = nullptr;
PyTypeObject* g_set_base = nullptr;
PyTypeObject* g_iter_type = nullptr;

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

PyObject* decode(OwnerObject* owner, Ref r);

// ---- a loaded file's name in its errors ----------------------------------------------------
// A DecodeError raised while reading an image loaded from a file says which file: the image's
// own messages know only node offsets. Named where errors arise -- decode() for every value
// read, and each catch of a C++ exception -- so the hot paths pay nothing on success.
[[gnu::cold, gnu::noinline]] void name_the_file(const OwnerObject* owner) noexcept {
  const std::string& path = owner->frozen->path();
  if (path.empty() || !PyErr_ExceptionMatches(shoal_error_type(Errc::kDecode))) return;
  PyObject *type, *value, *tb;
  PyErr_Fetch(&type, &value, &tb);
  PyErr_NormalizeException(&type, &value, &tb);
  // The same exception object, its message prefixed: its class, cause and traceback stay.
  if (value != nullptr) {
    PyObject* text = PyObject_Str(value);
    PyObject* prefix = PyUnicode_FromFormat("'%s': ", path.c_str());
    // Named once: an error that already passed through a read of this file keeps its text.
    const bool named_already =
        text != nullptr && prefix != nullptr && PyUnicode_Tailmatch(text, prefix, 0, 0, -1) == 1;
    PyObject* named = text != nullptr && prefix != nullptr && !named_already
                          ? PyUnicode_Concat(prefix, text)
                          : nullptr;
    Py_XDECREF(prefix);
    PyObject* args = named != nullptr ? PyTuple_Pack(1, named) : nullptr;
    if (args == nullptr || PyObject_SetAttrString(value, "args", args) < 0) PyErr_Clear();
    Py_XDECREF(args);
    Py_XDECREF(named);
    Py_XDECREF(text);
  }
  PyErr_Restore(type, value, tb);
}

// set_error_from_current_exception(), inside a catch, for a read of `owner`'s image.
[[gnu::cold, gnu::noinline]] void set_read_error(const OwnerObject* owner) noexcept {
  set_error_from_current_exception();
  name_the_file(owner);
}

// Fills a view's cached pointers after checking its node (F2, F3). Throws DecodeError.
void fill_view(ViewObject* v, Tag t) {
  const Image& im = *v->image;
  const std::byte* p = im.node(v->ref, kNodeHead);
  uint64_t count;
  std::memcpy(&count, p, kWord);
  if (t == Tag::kList || t == Tag::kTuple) {
    if (count > im.size() / kWord) {
      throw_error(Errc::kDecode, "frozen sequence length is corrupt");
    }
    p = im.node(v->ref, kNodeHead, count * kWord);
    v->count = count;
    v->items = p + kNodeHead;
    return;
  }
  const auto [_, log2_slots, entry_words] = layout::read_table_header(p);
  const uint32_t want_words = t == Tag::kDict ? layout::kDictEntryWords : layout::kSetEntryWords;
  if (entry_words != want_words || !layout::table_header_ok(count, log2_slots, entry_words) ||
      count > im.size() / 16) {
    throw_error(Errc::kDecode, "frozen table header is corrupt");
  }
  const uint64_t nslots = uint64_t{1} << log2_slots;
  if (nslots > im.size() / 16) throw_error(Errc::kDecode, "frozen table is larger than its image");
  const uint64_t slots_bytes = nslots * entry_words * kWord;
  p = im.node(v->ref, kNodeHead, slots_bytes + count * 4);
  v->count = count;
  v->slots = p + kNodeHead;
  v->order = p + kNodeHead + slots_bytes;
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
  const std::byte* e = v->slots + uint64_t{s} * v->entry_words * kWord;
  if (load_ref(e + kEntryKey) == layout::kEmptyKey) {
    throw_error(Errc::kDecode, "frozen table order names an empty slot");
  }
  return e;
}

// Refuses a ref read out of container `v` that does not lie before it (F4). True when `r` may be
// followed; false with DecodeError set. Every path of this file that takes a ref out of a
// container -- items, entries, iteration, slices, membership, thaw, key comparison -- checks it
// before following the ref, so each step of any walk goes to a smaller offset: a forged image
// that makes a list its own element (or points forward) ends in DecodeError, never in a loop or
// an unbounded recursion.
bool child_ok(const ViewObject* v, Ref r) {
  if (layout::child_before(r, v->ref)) [[likely]] return true;
  try {
    frozen::detail::throw_corrupt("child after its parent", v->ref);
  } catch (...) {
    set_read_error(v->owner);
  }
  return false;
}

// A child of `v`: F4 checked, then decoded (leaves as new objects, containers as views).
PyObject* decode_child(ViewObject* v, Ref r) {
  if (!child_ok(v, r)) return nullptr;
  return decode(v->owner, r);
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
    set_read_error(owner);
    return nullptr;
  }
  return reinterpret_cast<PyObject*>(v);
}

// Any value: leaves become new Python objects (the codec), containers become views.
PyObject* decode(OwnerObject* owner, Ref r) {
  if (is_container(tag_of(r))) return new_view(owner, r);
  PyObject* res = codec::decode_leaf(*owner->image, r, reinterpret_cast<PyObject*>(owner),
                                     owner->allow_pickle);
  if (res == nullptr) [[unlikely]] name_the_file(owner);
  return res;
}

// ---- plain copies (thaw, and keys compared by Python equality) ------------------------------
// Recursive, one C frame a level: enter_nested bounds the depth by Python's limit and by the C
// stack, and F4 (child_ok, on every child) makes a forged cycle fail on its first step back.
PyObject* thaw(OwnerObject* owner, Ref r);

// A child of `v`, thawed.
PyObject* thaw_child(ViewObject* v, Ref r) {
  if (!child_ok(v, r)) return nullptr;
  return thaw(v->owner, r);
}

PyObject* thaw_table(ViewObject* v, Tag t) {
  const bool is_dict = t == Tag::kDict;
  PyObject* res = is_dict ? PyDict_New() : (t == Tag::kSet ? PySet_New(nullptr) : PyFrozenSet_New(nullptr));
  if (res == nullptr) return nullptr;
  for (uint64_t i = 0; i < v->count; ++i) {
    const std::byte* e;
    try {
      e = entry_at(v, i);
    } catch (...) {
      set_read_error(v->owner);
      Py_DECREF(res);
      return nullptr;
    }
    PyObject* k = thaw_child(v, load_ref(e + kEntryKey));
    if (k == nullptr) {
      Py_DECREF(res);
      return nullptr;
    }
    int rc;
    if (is_dict) {
      PyObject* val = thaw_child(v, load_ref(e + kEntryValue));
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

PyObject* thaw(OwnerObject* owner, Ref r) {
  const Tag t = tag_of(r);
  if (t == Tag::kNdarray) {
    // decode gives a read-only shoal.Array over the image; a thawed tree owns its data, so an
    // array leaf becomes a private, writable copy (Array.copy: a plain ndarray).
    nb::object shared = nb::steal(decode(owner, r));
    if (!shared.is_valid()) return nullptr;
    return PyObject_CallMethod(shared.ptr(), "copy", nullptr);
  }
  if (!is_container(t)) return decode(owner, r);
  if (enter_nested(" while thawing a frozen object") != 0) return nullptr;
  PyObject* res = nullptr;
  PyObject* view = new_view(owner, r);
  if (view != nullptr) {
    auto* v = reinterpret_cast<ViewObject*>(view);
    if (t == Tag::kList || t == Tag::kTuple) {
      const auto n = static_cast<Py_ssize_t>(v->count);
      res = t == Tag::kList ? PyList_New(n) : PyTuple_New(n);
      for (Py_ssize_t i = 0; res != nullptr && i < n; ++i) {
        PyObject* item = thaw_child(v, load_ref(v->items + i * kWord));
        if (item == nullptr) {
          Py_CLEAR(res);
          break;
        }
        if (t == Tag::kList) PyList_SET_ITEM(res, i, item);
        else PyTuple_SET_ITEM(res, i, item);
      }
    } else {
      res = thaw_table(v, t);
    }
    Py_DECREF(view);
  }
  leave_nested();
  return res;
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
    const std::byte* s = codec::blob(*v->image, kref, &sn);
    const int eq = sn == static_cast<uint64_t>(n) && std::memcmp(s, d, sn) == 0;
    Py_XDECREF(tmp);
    return eq;
  }
  if (PyBytes_CheckExact(key)) {
    if (t != Tag::kBytes) return 0;
    uint64_t sn;
    const std::byte* s = codec::blob(*v->image, kref, &sn);
    return sn == static_cast<uint64_t>(PyBytes_GET_SIZE(key)) &&
           std::memcmp(s, PyBytes_AS_STRING(key), sn) == 0;
  }
  // The stored key as a plain object (tuples and frozensets as real ones) and Python's ==.
  // (An exact int against an inline int never gets here: lookup() compares those itself.)
  PyObject* stored = thaw(v->owner, kref);
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
    h = ::shoal::codec::hash::of_bytes(v->seed, PyUnicode_DATA(key),
                               static_cast<size_t>(PyUnicode_GET_LENGTH(key)));
  } else if (PyLong_CheckExact(key)) {
    int overflow;
    probe_int = PyLong_AsLongLongAndOverflow(key, &overflow);
    if (overflow == 0 && probe_int != -1) {
      probe_int_ok = true;
      h = static_cast<uint64_t>(::shoal::codec::hash::of_int(probe_int));
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
  const uint64_t stride = uint64_t{v->entry_words} * kWord;
  layout::Probe pr(h, v->log2_slots);
  const uint64_t limit = pr.limit();
  try {
    for (uint64_t n = 0; n < limit; ++n, pr.next()) {
      const std::byte* e = v->slots + pr.slot * stride;
      const Ref key = load_ref(e + kEntryKey);
      if (key == layout::kEmptyKey) return -1;
      if (load_ref(e) != h) continue;
      if (!child_ok(v, key)) return -2;
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
    set_read_error(v->owner);
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
  return thaw(v->owner, v->ref);
}

// The codec's hook for a view met inside a tree being encoded: its plain copy.
PyObject* plain_copy(PyObject* o) {
  if (PyObject_TypeCheck(o, g_dict_base) || PyObject_TypeCheck(o, g_list_base) ||
      PyObject_TypeCheck(o, g_tuple_base) || PyObject_TypeCheck(o, g_set_base)) {
    return view_thaw(o, nullptr);
  }
  return nullptr;
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
  if (what < 0 || what > 2 || (what > 0 && v->entry_words != layout::kDictEntryWords)) {
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
  if (v->entry_words == 0) return decode_child(v, load_ref(v->items + i * kWord));
  if (what == 1 && v->entry_words != layout::kDictEntryWords) {
    PyErr_SetString(PyExc_ValueError, "a set has no values");
    return nullptr;
  }
  try {
    const uint64_t at = what == 1 ? kEntryValue : kEntryKey;
    return decode_child(v, load_ref(entry_at(v, static_cast<uint64_t>(i)) + at));
  } catch (...) {
    set_read_error(v->owner);
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
  if (idx >= 0) return decode_child(v, load_ref(v->slots + idx * kDictEntryBytes + kEntryValue));
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
  if (idx >= 0) return decode_child(v, load_ref(v->slots + idx * kDictEntryBytes + kEntryValue));
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
  return decode_child(v, load_ref(v->items + i * kWord));
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
      PyObject* item = decode_child(v, load_ref(v->items + i * kWord));
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
    const Ref r = load_ref(v->items + i * kWord);
    // Cheap exact checks before building an object.
    if (PyLong_CheckExact(x) && tag_of(r) == Tag::kInt) {
      int overflow;
      const long long xv = PyLong_AsLongLongAndOverflow(x, &overflow);
      if (overflow == 0 && xv == inline_int(r)) return 1;
      continue;
    }
    PyObject* item = decode_child(v, r);
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
// no weak references). Only for one-digit ints (|val| < 2**30) outside the small-int cache,
// and only where the int layout is known (compat::kCanReuseInts: CPython 3.11).
// Always inlined into iter_next: iterating a list of ints is a measured hot path, and GCC's
// own choice varies with the size of the code around it.
[[gnu::always_inline]] inline PyObject* next_int(IterObject* it, int64_t val) {
  if constexpr (compat::kCanReuseInts) {
    const uint64_t mag = val < 0 ? 0 - static_cast<uint64_t>(val) : static_cast<uint64_t>(val);
    if ((val > 256 || val < -5) && mag < (uint64_t{1} << 30)) {
      for (PyObject*& c : it->spare) {
        if (c != nullptr && Py_REFCNT(c) == 1) {
          compat::reuse_int(c, val);
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
  }
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
    const Ref r = load_ref(v->items + i * kWord);
    // The common leaf inline, without decode()'s dispatch: iterating a list of ints is a
    // measured hot path (bench/python/frozen.py).
    if (tag_of(r) == Tag::kInt) return next_int(it, inline_int(r));
    return decode_child(v, r);
  }
  const std::byte* e;
  try {
    e = entry_at(v, i);
  } catch (...) {
    set_read_error(v->owner);
    return nullptr;
  }
  if (it->what == 0) return decode_child(v, load_ref(e + kEntryKey));
  if (it->what == 1) return decode_child(v, load_ref(e + kEntryValue));
  PyObject* k = decode_child(v, load_ref(e + kEntryKey));
  if (k == nullptr) return nullptr;
  PyObject* val = decode_child(v, load_ref(e + kEntryValue));
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

/// The root (or any container ref) of an owner, as a view or a leaf value.
nb::object view_of(OwnerObject* o, Ref r) {
  PyObject* res = decode(o, r);
  if (res == nullptr) throw nb::python_error();
  return nb::steal(res);
}

void register_view_types(nb::module_& m) {
  g_owner_type = make_type(m, &owner_spec, "FrozenImage");
  g_dict_base = make_type(m, &dict_spec, "_FrozenDictBase");
  g_set_base = make_type(m, &set_spec, "_FrozenSetBase");
  g_list_base = make_type(m, &list_spec, "_FrozenListBase");
  g_tuple_base = make_type(m, &tuple_spec, "_FrozenTupleBase");
  g_iter_type = make_type(m, &iter_spec, "_FrozenIterator");
}

void set_view_classes(nb::type_object dict_cls, nb::type_object list_cls,
                      nb::type_object tuple_cls, nb::type_object set_cls, nb::object ndarray_type,
                      nb::object ndarray_parts, nb::object ndarray_leaf, nb::object pickle_dumps,
                      nb::object pickle_loads) {
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
  codec::Hooks& h = codec::g_hooks;
  // None: found when numpy is imported (codec::numpy_leaf_types).
  if (!ndarray_type.is_none()) h.ndarray_type = ndarray_type.inc_ref().ptr();
  h.ndarray_parts = ndarray_parts.inc_ref().ptr();
  h.ndarray_leaf = ndarray_leaf.inc_ref().ptr();
  h.pickle_dumps = pickle_dumps.inc_ref().ptr();
  h.pickle_loads = pickle_loads.inc_ref().ptr();
  h.tuple_view = g_tuple_base;
  h.set_view = g_set_base;
  h.plain_copy = plain_copy;
}

}  // namespace shoal::py
