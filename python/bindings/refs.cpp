// python/bindings/refs.cpp — tuple/frozenset and big-int items, and references to other shoal
// objects, for the mutable containers' bindings (see refs.hpp).
#include "refs.hpp"

#include <unordered_map>
#include <vector>

#include "bindings.hpp"
#include "codec.hpp"
#include "pycompat.hpp"
#include "shoal/frozen.hpp"

namespace nb = nanobind;
using namespace nb::literals;

namespace shoal::py {
namespace {

PyObject* g_to_ref = nullptr;    // (value, allow_pickle) -> Segment | None; lives forever
PyObject* g_from_ref = nullptr;  // Segment -> the Python object over it

// Set by shoal._containers when it is imported. `import shoal` loads its submodules on first
// use, so a process can reach a container's items before anything imported that module: import
// it here then. Returns false with a Python error set when it cannot be imported.
bool ensure_hooks() noexcept {
  if (g_to_ref != nullptr && g_from_ref != nullptr) return true;
  PyObject* mod = PyImport_ImportModule("shoal._containers");
  if (mod == nullptr) return false;
  Py_DECREF(mod);
  if (g_to_ref == nullptr || g_from_ref == nullptr) {
    PyErr_SetString(PyExc_ImportError, "shoal._containers did not set the container hooks");
    return false;
  }
  return true;
}

// One Python object per shared object per process, while it lives: weak references by object
// id (dead ones are pruned as the map grows).
std::unordered_map<Id128, PyObject*, Id128Hash> g_cache;
size_t g_prune_at = 64;

void prune() {
  for (auto it = g_cache.begin(); it != g_cache.end();) {
    if (PyWeakref_GetObject(it->second) == Py_None) {
      Py_DECREF(it->second);
      it = g_cache.erase(it);
    } else {
      ++it;
    }
  }
  g_prune_at = std::max<size_t>(64, 2 * g_cache.size());
}

void remember(const Id128& id, PyObject* obj) {
  PyObject* w = PyWeakref_NewRef(obj, nullptr);
  if (w == nullptr) {  // a type without weak references: not cached
    PyErr_Clear();
    return;
  }
  auto [it, added] = g_cache.try_emplace(id, w);
  if (!added) {
    Py_DECREF(it->second);
    it->second = w;
  }
  if (g_cache.size() >= g_prune_at) prune();
}

// A frozen key value (a tuple/frozenset image's node) as a new Python object.
PyObject* key_value_to_py(const frozen::Value& v) {
  switch (v.type()) {
    case frozen::Type::kNone: Py_RETURN_NONE;
    case frozen::Type::kBool: return PyBool_FromLong(v.as_bool());
    case frozen::Type::kInt: return PyLong_FromLongLong(v.as_int());
    case frozen::Type::kBigInt: {
      const auto b = v.bigint_bytes();
      return compat::long_from_le_bytes(reinterpret_cast<const unsigned char*>(b.data()), b.size());
    }
    case frozen::Type::kFloat: return PyFloat_FromDouble(v.as_float());
    case frozen::Type::kStr: {
      const std::string_view s = v.as_str();
      return PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), "surrogatepass");
    }
    case frozen::Type::kBytes: {
      const auto b = v.as_bytes();
      return PyBytes_FromStringAndSize(reinterpret_cast<const char*>(b.data()),
                                       static_cast<Py_ssize_t>(b.size()));
    }
    case frozen::Type::kTuple:
    case frozen::Type::kFrozenSet: {
      if (enter_nested(" while reading a tuple key") != 0) return nullptr;
      const bool tuple = v.type() == frozen::Type::kTuple;
      const uint64_t n = v.size();
      nb::object out = nb::steal(tuple ? PyTuple_New(static_cast<Py_ssize_t>(n))
                                       : PyFrozenSet_New(nullptr));
      for (uint64_t i = 0; out.is_valid() && i < n; ++i) {
        PyObject* item = key_value_to_py(tuple ? v[i] : v.key_at(i));
        if (item == nullptr) {
          out.reset();
        } else if (tuple) {
          PyTuple_SET_ITEM(out.ptr(), static_cast<Py_ssize_t>(i), item);
        } else {
          const int rc = PySet_Add(out.ptr(), item);
          Py_DECREF(item);
          if (rc != 0) out.reset();
        }
      }
      leave_nested();
      return out.release().ptr();
    }
    default:
      PyErr_SetString(shoal_error_type(Errc::kDecode),
                      "shoal.Dict: a stored tuple/frozenset key holds a value no key can hold");
      return nullptr;
  }
}

bool is_key_view(PyObject* o) noexcept {
  return (codec::g_hooks.tuple_view != nullptr && PyObject_TypeCheck(o, codec::g_hooks.tuple_view)) ||
         (codec::g_hooks.set_view != nullptr && PyObject_TypeCheck(o, codec::g_hooks.set_view));
}

}  // namespace

bool is_frozen_key_type(PyObject* o) noexcept {
  return PyTuple_Check(o) || PyFrozenSet_Check(o) || is_key_view(o);
}

int frozen_key_item(PyObject* o, Item* out, bool store) noexcept {
  try {
    nb::object plain;
    PyObject* k = o;
    if (is_key_view(o) && codec::g_hooks.plain_copy != nullptr) {
      // A FrozenTuple / FrozenSet key: the tuple / frozenset it equals, nested ones included.
      plain = nb::steal(codec::g_hooks.plain_copy(o));
      if (plain.is_valid()) {
        k = plain.ptr();
      } else if (PyErr_Occurred()) {
        return -1;
      }
    }
    if (PyObject_Hash(k) == -1) return -1;  // a tuple holding a list: dict's TypeError
    frozen::Builder b;  // the default hash seed, as every Dict's
    uint64_t h = 0;
    codec::Ref r;
    {
      codec::Encoder<frozen::Builder> enc(b, false);
      r = enc.key(k, &h);
    }
    const std::vector<std::byte> bytes = b.finish_bytes(r);
    *out = FrozenKey{std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size())};
    return 1;
  } catch (nb::python_error& e) {
    if (e.matches(PyExc_TypeError)) {
      if (!store) return 0;  // an element of a type no key holds: no stored key equals it
      PyErr_Format(PyExc_TypeError,
                   "shoal.Dict keys are None, bool, int, float, str, bytes, or tuples/frozensets "
                   "of these; this %.200s holds something else",
                   Py_TYPE(o)->tp_name);
      return -1;
    }
    e.restore();
    return -1;
  } catch (...) {
    set_error_from_current_exception();
    return -1;
  }
}

int bigint_item(PyObject* o, Item* out) noexcept {
  std::vector<unsigned char> buf;
  if (!compat::long_to_le_bytes(o, &buf)) return -1;
  try {
    *out = BigInt{std::string(reinterpret_cast<const char*>(buf.data()), buf.size())};
  } catch (...) {
    PyErr_NoMemory();
    return -1;
  }
  return 0;
}

int ref_item(PyObject* o, bool allow_pickle, Item* out) noexcept {
  if (!ensure_hooks()) return -1;
  PyObject* args[] = {o, allow_pickle ? Py_True : Py_False};
  PyObject* seg = PyObject_Vectorcall(g_to_ref, args, 2, nullptr);
  if (seg == nullptr) return -1;
  nb::object hold = nb::steal(seg);
  if (seg == Py_None) return 0;
  try {
    const PySegment& ps = nb::cast<const PySegment&>(nb::handle(seg));
    if (!ps.seg.valid()) throw InvalidArgumentError("a closed segment cannot be stored");
    // The hook's object (a new Dict for a plain dict) may die now: this Segment keeps it
    // mapped until the container holds its reference.
    *out = ObjectRef::to(ps.seg);
    return 1;
  } catch (...) {
    set_error_from_current_exception();
    return -1;
  }
}

PyObject* bigint_to_py(const BigInt& b) noexcept {
  return compat::long_from_le_bytes(reinterpret_cast<const unsigned char*>(b.le.data()),
                                    b.le.size());
}

PyObject* frozen_key_to_py(const FrozenKey& k) noexcept {
  try {
    Result<frozen::Image> im = frozen::Image::open(
        reinterpret_cast<const std::byte*>(k.image.data()), k.image.size());
    if (!im) im.status().throw_if_error();
    return key_value_to_py(im.value().root());
  } catch (...) {
    set_error_from_current_exception();
    return nullptr;
  }
}

PyObject* cached_ref(const ObjectRef& r) noexcept {
  auto it = g_cache.find(r.object);
  if (it == g_cache.end()) return nullptr;
  PyObject* o = PyWeakref_GetObject(it->second);  // borrowed
  if (o == Py_None) return nullptr;
  return Py_NewRef(o);
}

void HeldRefs::clear() noexcept {
  auto old = std::move(objs);
  objs.clear();
  for (auto& [id, o] : old) Py_DECREF(o);
}

int HeldRefs::traverse(visitproc visit, void* arg) noexcept {
  for (auto& [id, o] : objs) Py_VISIT(o);
  return 0;
}

namespace {

// Drops the held objects the container (`d`, else held.names) no longer refers to (one walk).
void prune_held(const Dict* d, HeldRefs& held) {
  std::unordered_map<Id128, bool, Id128Hash> named;
  if (d != nullptr) {
    Dict::Cursor c = d->cursor();
    Item v;
    while (c.next(nullptr, &v)) {
      if (const auto* r = std::get_if<ObjectRef>(&v)) named[r->object] = true;
    }
  } else {
    std::vector<Id128> ids;
    held.names(&ids);
    for (const Id128& id : ids) named[id] = true;
  }
  std::vector<PyObject*> drop;
  for (auto it = held.objs.begin(); it != held.objs.end();) {
    if (named.count(it->first) == 0) {
      drop.push_back(it->second);
      it = held.objs.erase(it);
    } else {
      ++it;
    }
  }
  for (PyObject* o : drop) Py_DECREF(o);  // may run Python: after the map is consistent
}

void hold_in(const Dict* d, HeldRefs* held, const Id128& id, PyObject* obj) {
  if (held == nullptr || (d == nullptr && (!held->size || !held->names))) return;
  auto [it, added] = held->objs.try_emplace(id, obj);
  if (!added) {
    if (it->second == obj) return;
    PyObject* old = it->second;
    Py_INCREF(obj);
    it->second = obj;
    Py_DECREF(old);
    return;
  }
  Py_INCREF(obj);
  const uint64_t n = d != nullptr ? d->size() : held->size();
  if (held->objs.size() > 16 && held->objs.size() > 2 * n) prune_held(d, *held);
}

}  // namespace

PyObject* ref_to_py(const Dict* d, const ObjectRef& r, HeldRefs* held) noexcept {
  if (held != nullptr) {
    auto it = held->objs.find(r.object);
    if (it != held->objs.end()) return Py_NewRef(it->second);
  }
  if (PyObject* c = cached_ref(r)) {
    try {
      hold_in(d, held, r.object, c);
    } catch (...) {
      Py_DECREF(c);
      set_error_from_current_exception();
      return nullptr;
    }
    return c;
  }
  if (!ensure_hooks()) return nullptr;
  try {
    if (!r.target.valid() && d == nullptr) throw InvalidArgumentError("an unmapped reference");
    Segment seg = r.target.valid() ? r.target : d->attach_ref(r);
    nb::object py_seg = nb::cast(PySegment{std::move(seg)});
    PyObject* obj = PyObject_CallOneArg(g_from_ref, py_seg.ptr());
    if (obj != nullptr) {
      remember(r.object, obj);
      try {
        hold_in(d, held, r.object, obj);
      } catch (...) {
        Py_DECREF(obj);
        throw;
      }
    }
    return obj;
  } catch (...) {
    set_error_from_current_exception();
    return nullptr;
  }
}

void register_refs(nb::module_& m) {
  m.def(
      "remember_object",
      [](const PySegment& seg, nb::handle obj) { remember(seg.seg.id(), obj.ptr()); },
      "segment"_a, "obj"_a,
      "Private: make `obj` what a reference to `segment`'s object reads back as in this process "
      "while it lives (a Dict made here is `d[k]` for a k that refers to it).");
  m.def(
      "set_container_hooks",
      [](nb::object to_ref, nb::object from_ref) {
        Py_XDECREF(g_to_ref);
        Py_XDECREF(g_from_ref);
        g_to_ref = to_ref.release().ptr();
        g_from_ref = from_ref.release().ptr();
      },
      "to_ref"_a, "from_ref"_a,
      "Private: what the containers store by reference, to_ref(value, allow_pickle) -> Segment "
      "or None, and what a reference reads back as, from_ref(segment) -> object.");
}

}  // namespace shoal::py
