// python/bindings/codec.cpp — the Python side of shoal's value codec: leaves and key hashes
// (codec.hpp says what lives where).
#include "codec.hpp"

#include <Python.h>

namespace shoal::py::codec {

Hooks g_hooks;

const std::byte* blob(const Image& im, Ref r, uint64_t* nbytes, uint64_t* flags) {
  const std::byte* p = im.node(r, kNodeHead);
  uint64_t n;
  std::memcpy(&n, p, kWord);
  if (flags != nullptr) std::memcpy(flags, p + kWord, kWord);
  im.node(r, kNodeHead, n);  // throws unless the bytes fit
  *nbytes = n;
  return p + kNodeHead;
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

namespace {

PyObject* g_decode_error() { return shoal_error_type(Errc::kDecode); }

PyObject* make_bigint(const std::byte* b, uint64_t n) {
  if (n == 0 || n > (uint64_t{1} << 32)) {
    PyErr_SetString(g_decode_error(), "frozen integer has an invalid length");
    return nullptr;
  }
  return compat::long_from_le_bytes(reinterpret_cast<const unsigned char*>(b),
                                    static_cast<size_t>(n));
}

PyObject* decode_ndarray(const Image& im, Ref r, PyObject* owner) {
  frozen::NdView nd = frozen::Value(&im, r).as_ndarray();
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
  const unsigned order = nd.scalar    ? layout::kNdOrderScalar
                         : nd.fortran ? layout::kNdOrderF
                                      : layout::kNdOrderC;
  PyObject* res = PyObject_CallFunction(
      g_hooks.ndarray_leaf, "OKKKNNI", owner, static_cast<unsigned long long>(r),
      static_cast<unsigned long long>(nd.data_offset), static_cast<unsigned long long>(nd.nbytes),
      descr, shape, order);
  return res;
}

PyObject* decode_pickle(const Image& im, Ref r, bool allow_pickle) {
  if (!allow_pickle) {
    PyErr_SetString(PyExc_ValueError,
                    "this frozen object holds a pickled leaf, and unpickling is disabled: pass "
                    "allow_pickle=True to shoal.load() if you trust the file");
    return nullptr;
  }
  uint64_t n;
  const std::byte* p = blob(im, r, &n);
  PyObject* mv = PyMemoryView_FromMemory(const_cast<char*>(reinterpret_cast<const char*>(p)),
                                         static_cast<Py_ssize_t>(n), PyBUF_READ);
  if (mv == nullptr) return nullptr;
  PyObject* res = PyObject_CallOneArg(g_hooks.pickle_loads, mv);
  Py_DECREF(mv);
  if (res == nullptr && !PyErr_ExceptionMatches(PyExc_KeyboardInterrupt) &&
      !PyErr_ExceptionMatches(PyExc_MemoryError)) {
    // Whatever pickle raised (UnpicklingError, EOFError, a missing class's ImportError, ...)
    // means this leaf cannot be decoded: one error class for every undecodable image, with the
    // original as its __cause__ so the reason stays visible.
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != nullptr) PyException_SetTraceback(value, tb);
    PyErr_Format(g_decode_error(),
                 "frozen pickled leaf in the node at offset %llu could not be unpickled (%s: %S); "
                 "the image is corrupt, or the class it names is not importable here",
                 static_cast<unsigned long long>(r & ~layout::kTagMask),
                 reinterpret_cast<PyTypeObject*>(type)->tp_name, value);
    PyObject *t2, *v2, *tb2;
    PyErr_Fetch(&t2, &v2, &tb2);
    PyErr_NormalizeException(&t2, &v2, &tb2);
    PyException_SetCause(v2, value);  // steals `value`
    Py_INCREF(value);                 // ... and the context keeps one too
    PyException_SetContext(v2, value);
    Py_DECREF(type);
    Py_XDECREF(tb);
    PyErr_Restore(t2, v2, tb2);
  }
  return res;
}


}  // namespace

PyObject* decode_leaf(const Image& im, Ref r, PyObject* owner, bool allow_pickle) {
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
        const std::byte* p = im.node(r, 16);
        double d;
        std::memcpy(&d, p, 8);
        return PyFloat_FromDouble(d);
      }
      case Tag::kBigInt: {
        uint64_t n;
        const std::byte* p = blob(im, r, &n);
        return make_bigint(p, n);
      }
      case Tag::kStr: {
        uint64_t n, flags;
        const std::byte* p = blob(im, r, &n, &flags);
        return make_str(p, n, flags);
      }
      case Tag::kBytes: {
        uint64_t n;
        const std::byte* p = blob(im, r, &n);
        return PyBytes_FromStringAndSize(reinterpret_cast<const char*>(p),
                                         static_cast<Py_ssize_t>(n));
      }
      case Tag::kNdarray:
        return decode_ndarray(im, r, owner);
      case Tag::kPickle:
        return decode_pickle(im, r, allow_pickle);
      case Tag::kList:
      case Tag::kTuple:
      case Tag::kDict:
      case Tag::kSet:
      case Tag::kFrozenSet:
        PyErr_SetString(PyExc_SystemError, "codec::decode_leaf called with a container");
        return nullptr;
      case Tag::kReserved:
        break;
    }
    PyErr_SetString(g_decode_error(), "frozen image holds a reserved tag (corrupt data)");
    return nullptr;
  } catch (...) {
    set_error_from_current_exception();
    return nullptr;
  }
}

// ---- hashing a Python key the way the builder hashed the stored one --------------------------
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
    *h = ::shoal::codec::hash::kNoneHash;
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
    *h = static_cast<uint64_t>(::shoal::codec::hash::of_float(PyFloat_AS_DOUBLE(key)));
    return 0;
  }
  if (PyUnicode_Check(key)) {
    const char* d;
    Py_ssize_t n;
    PyObject* tmp;
    if (utf8_of(key, &d, &n, &tmp) != 0) return -1;
    *h = ::shoal::codec::hash::of_bytes(seed, d, static_cast<size_t>(n));
    Py_XDECREF(tmp);
    return 0;
  }
  if (PyBytes_Check(key)) {
    *h = ::shoal::codec::hash::of_bytes(seed, PyBytes_AS_STRING(key),
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
    *h = static_cast<uint64_t>(PyTuple_Check(key) ? ::shoal::codec::hash::of_tuple(hs)
                                                  : ::shoal::codec::hash::of_frozenset(hs));
    return 0;
  }
  if (PyObject_TypeCheck(key, g_hooks.tuple_view)) {
    // A FrozenTuple (a key read back from a frozen dict) hashes as the tuple it equals.
    nb::object plain = nb::steal(PySequence_Tuple(key));
    if (!plain.is_valid()) return -1;
    return key_hash(plain.ptr(), seed, h, depth + 1);
  }
  if (PyObject_TypeCheck(key, g_hooks.set_view)) {
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


// ---- channel messages ------------------------------------------------------------------------
namespace {

// This thread's builder, reused: a message is encoded into it, put (copied into the channel),
// and the builder given back (EncodedMessage's destructor). One that grew for a big message is
// dropped, so an idle thread does not keep its memory.
thread_local std::unique_ptr<frozen::Builder> t_builder;
constexpr uint64_t kKeepBuilderBytes = uint64_t{1} << 20;

// Thaw's output policy: Python objects. nb::object owns each reference, so an error part-way
// frees whatever was built.
struct PyOut {
  using Obj = nb::object;
  static Obj checked(PyObject* o) {
    if (o == nullptr) throw nb::python_error();
    return nb::steal(o);
  }
  Obj leaf(const Image& im, Ref r) { return checked(decode_leaf(im, r, nullptr, false)); }
  Obj again(const Obj& o) { return o; }
  Obj sequence(bool tuple, uint64_t n) {
    const auto k = static_cast<Py_ssize_t>(n);
    return checked(tuple ? PyTuple_New(k) : PyList_New(k));  // NULL items: safe to free
  }
  void set_item(Obj& seq, uint64_t i, Obj item) {
    const auto k = static_cast<Py_ssize_t>(i);
    if (PyTuple_CheckExact(seq.ptr())) {
      PyTuple_SET_ITEM(seq.ptr(), k, item.release().ptr());
    } else {
      PyList_SET_ITEM(seq.ptr(), k, item.release().ptr());
    }
  }
  Obj table(layout::Tag t) {
    if (t == layout::Tag::kDict) return checked(PyDict_New());
    return checked(t == layout::Tag::kSet ? PySet_New(nullptr) : PyFrozenSet_New(nullptr));
  }
  static void unhashable() {
    // Only a forged message puts a list, dict or set where a key goes.
    if (PyErr_ExceptionMatches(PyExc_TypeError)) {
      PyErr_Clear();
      PyErr_SetString(shoal_error_type(Errc::kDecode),
                      "a value message holds an unhashable dict key or set element (the "
                      "message is corrupt)");
    }
    throw nb::python_error();
  }
  void add_key(Obj& set, Obj key) {
    if (PySet_Add(set.ptr(), key.ptr()) != 0) unhashable();
  }
  void add_entry(Obj& dict, Obj key, Obj value) {
    if (PyDict_SetItem(dict.ptr(), key.ptr(), value.ptr()) != 0) unhashable();
  }
};

}  // namespace

EncodedMessage::~EncodedMessage() {
  if (builder && !t_builder && builder->size() <= kKeepBuilderBytes) {
    builder->clear();
    t_builder = std::move(builder);
  }
}

std::optional<EncodedMessage> encode_message(PyObject* o) {
  EncodedMessage m;
  m.builder = t_builder ? std::move(t_builder) : std::make_unique<frozen::Builder>();
  frozen::Builder& b = *m.builder;
  b.clear();
  try {
    Encoder<frozen::Builder> enc(b, Encoder<frozen::Builder>::Plain{});
    const Ref root = enc.value(o);
    m.bytes = b.finish_view(root);
    return m;
  } catch (const NotPlain&) {
    return std::nullopt;
  } catch (const nb::python_error& e) {
    // Too deep for the C stack (RecursionError) and the like: pickle decides. Only what the
    // user must see (Ctrl-C, no memory) goes up.
    if (e.matches(PyExc_KeyboardInterrupt) || e.matches(PyExc_MemoryError)) throw;
    return std::nullopt;
  } catch (const Error&) {
    return std::nullopt;  // the builder refused (a key it cannot hash): pickle decides
  }
}

PyObject* decode_message(const std::byte* data, uint64_t n) noexcept {
  try {
    Result<Image> im = Image::open(data, n);
    if (!im) throw_error(im.status().code(), "a value message: " + im.status().message());
    PyOut out;
    frozen::Thaw<PyOut> thaw(im.value(), out);
    return thaw.root().release().ptr();
  } catch (nb::python_error& e) {
    e.restore();
    return nullptr;
  } catch (...) {
    set_error_from_current_exception();
    return nullptr;
  }
}

}  // namespace shoal::py::codec
