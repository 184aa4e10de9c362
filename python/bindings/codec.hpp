// python/bindings/codec.hpp — shoal's one value codec, Python side.
//
// Every object shoal stores -- frozen images now, the mutable containers and channels next --
// turns Python objects into values and back, and hashes keys, through this file and
// codec.cpp, so that a value reads the same and a key hashes the same in every kind of object
// (a FrozenTuple key is found in any shoal table). The value format itself (tags, inline ints,
// nodes) and the hashes are the C++ core's (docs/design/codec.md).
//
//   Encoder<Sink>   Python object -> value, written into Sink (frozen::Builder today)
//   decode_leaf     value -> new Python object, for every tag but the containers (whose
//                   Python form depends on the object: views for an image)
//   key_hash        the table hash of a Python key, equal to the stored key's hash_of
#pragma once

#include <nanobind/nanobind.h>
// nb::cast<std::string> below: without the std::string caster in every unit that includes this
// file, the generic (bound class) instantiation of nb::cast<std::string> can win at link time
// and break every other unit's cast to std::string (std::bad_cast).
#include <nanobind/stl/string.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "bindings.hpp"
#include "layout/frozen_layout.hpp"
#include "pycompat.hpp"
#include "frozen/thaw.hpp"
#include "shoal/frozen.hpp"

namespace shoal::py::codec {

namespace nb = nanobind;
using frozen::Image;
using layout::Tag;
using Ref = uint64_t;

using layout::inline_int;
using layout::tag_of;
inline bool is_container(Tag t) {
  return t == Tag::kList || t == Tag::kTuple || t == Tag::kDict || t == Tag::kSet ||
         t == Tag::kFrozenSet;
}

// The frozen node layout as the views read it (docs/design/frozen.md): a fixed part of
// kNodeHead bytes, then 8-byte words; a table entry is the words {hash, key[, value]}.
inline constexpr uint64_t kWord = sizeof(Ref);
inline constexpr uint64_t kNodeHead = layout::kNodeFixedSize;
inline constexpr uint64_t kEntryKey = 1 * kWord;    // offset of an entry's key
inline constexpr uint64_t kEntryValue = 2 * kWord;  // offset of a dict entry's value
inline constexpr uint64_t kDictEntryBytes = layout::kDictEntryWords * kWord;

inline Ref load_ref(const std::byte* p) {
  Ref r;
  std::memcpy(&r, p, kWord);
  return r;
}

/// The Python pieces the codec calls, set once at import (shoal._frozen calls _frozen_init).
struct Hooks {
  // (numpy.ndarray, numpy.generic): arrays and scalars; set by numpy_leaf_types() once numpy
  // is imported (shoal._frozen does not import it: see there)
  PyObject* ndarray_type = nullptr;
  // a -> (descr, itemsize, shape, order, buffer) | None; order is 0 (C), 1 (F) or 2 (a numpy
  // scalar, shape ()), as layout::kNdOrder*
  PyObject* ndarray_parts = nullptr;
  // (owner, ref, offset, nbytes, descr, shape, order) -> shoal.Array view, or the numpy scalar
  PyObject* ndarray_leaf = nullptr;
  PyObject* pickle_dumps = nullptr;   // obj -> bytes (protocol 5)
  PyObject* pickle_loads = nullptr;   // bytes-like -> obj
  PyTypeObject* tuple_view = nullptr;  // keys of these types hash as the tuple / frozenset
  PyTypeObject* set_view = nullptr;    // they equal (FrozenTuple, FrozenSet)
  // A shoal view's plain copy (new reference); nullptr without an error for anything else.
  PyObject* (*plain_copy)(PyObject*) = nullptr;
};
extern Hooks g_hooks;

/// (numpy.ndarray, numpy.generic) once numpy is in sys.modules, else nullptr. shoal._frozen does
/// not import numpy, so that a process that freezes and reads no array never loads it (a Pool
/// worker reading a frozen dict of str, say); an object can only be an ndarray or a numpy scalar
/// once numpy is imported, so nullptr means "not a numpy leaf". Found once, then kept.
inline PyObject* numpy_leaf_types() {
  if (g_hooks.ndarray_type != nullptr) return g_hooks.ndarray_type;
  static PyObject* const name = PyUnicode_InternFromString("numpy");
  if (name == nullptr) throw nb::python_error();
  nb::object np = nb::steal(PyImport_GetModule(name));
  if (!np.is_valid()) {
    if (PyErr_Occurred()) throw nb::python_error();
    return nullptr;
  }
  // numpy part-imported (this runs inside its import): not yet; try again next time.
  PyObject* nd = PyObject_GetAttrString(np.ptr(), "ndarray");
  PyObject* gen = nd != nullptr ? PyObject_GetAttrString(np.ptr(), "generic") : nullptr;
  if (nd == nullptr || gen == nullptr) {
    Py_XDECREF(nd);
    PyErr_Clear();
    return nullptr;
  }
  PyObject* types = PyTuple_Pack(2, nd, gen);
  Py_DECREF(nd);
  Py_DECREF(gen);
  if (types == nullptr) throw nb::python_error();
  g_hooks.ndarray_type = types;  // a strong reference for the life of the process
  return types;
}

// ---- leaves: value -> Python ----------------------------------------------------------------
/// The bytes of a kStr / kBytes / kBigInt / kPickle node, bounds-checked (DecodeError).
const std::byte* blob(const Image& im, Ref r, uint64_t* nbytes, uint64_t* flags = nullptr);
/// A str from stored text (a forged kStrAscii flag is checked, not trusted).
PyObject* make_str(const std::byte* s, uint64_t n, uint64_t flags);
/// A leaf (any tag but the containers) as a new Python object. `owner` exports the buffer
/// behind ndarray leaves; pickled leaves need `allow_pickle`. nullptr with a Python error set
/// (DecodeError for corrupt data, chained to the pickle error for an undecodable pickle).
PyObject* decode_leaf(const Image& im, Ref r, PyObject* owner, bool allow_pickle);

// ---- keys -----------------------------------------------------------------------------------
/// UTF-8 of a str (lone surrogates as surrogatepass, as stored); *tmp owns the bytes if set.
int utf8_of(PyObject* s, const char** data, Py_ssize_t* n, PyObject** tmp);
/// The table hash of a Python key under `seed`: 0 and *h set; 1 when the object is of a type
/// no stored key can equal (never found); -1 with a Python error set (unhashable: TypeError).
int key_hash(PyObject* key, uint64_t seed, uint64_t* h, int depth);

// ---- channel messages (the queues' value encoding, layout::kEncodingValue) ---------------
/// An encoded message: the image's bytes, in a builder this object owns while it lives (taken
/// from the thread's reusable one, given back on destruction). Owning it matters: a put that
/// waits runs signal handlers between its tries, and a handler that puts a message of its own
/// on this thread must not overwrite these bytes (it finds no reusable builder, makes one).
struct EncodedMessage {
  std::unique_ptr<frozen::Builder> builder;
  std::span<const std::byte> bytes;
  EncodedMessage() = default;
  EncodedMessage(EncodedMessage&&) noexcept = default;
  EncodedMessage& operator=(EncodedMessage&&) noexcept = default;
  ~EncodedMessage();
};
/// The value encoding of `o` (a frozen image); nullopt when `o` is not plain (the caller
/// pickles it). Throws nb::python_error for other errors (KeyboardInterrupt, MemoryError).
std::optional<EncodedMessage> encode_message(PyObject* o);
/// A value-encoded message thawed into plain objects: a new reference, or nullptr with
/// DecodeError set for corrupt bytes (never a crash).
PyObject* decode_message(const std::byte* data, uint64_t n) noexcept;

// ---- the encoder ---------------------------------------------------------------------------
// Python objects to values written into `Sink`: frozen::Builder today (its member functions
// none(), boolean(), integer(), big_integer(), floating(), str(), bytes(), pickle(), ndarray(),
// list(), tuple(), dict_hashed(), set_hashed(), try_inline_sequence() and hash_of() are the
// sink interface), the mutable containers' writer next, so that every object shoal stores
// encodes and hashes its values the same way. Containers go depth first (children before
// parents); enter_nested bounds the depth by the C stack.
/// Thrown by an Encoder in plain mode at a value it does not take: the caller pickles the
/// whole message instead (channels, docs/design/queue.md "Message encodings").
struct NotPlain {};

template <class Sink>
class Encoder {
 public:
  Encoder(Sink& sink, bool allow_pickle) : b_(sink), allow_pickle_(allow_pickle) {}
  /// Plain mode (channel messages): only exact None, bool, int, float, str, bytes, list, tuple,
  /// dict, set and frozenset, trees at most frozen::kThawMaxDepth deep, no cycles; anything
  /// else (a subclass, an ndarray, a shoal view, a cycle) throws NotPlain, so a message
  /// thaws back to objects of exactly the types that were put.
  struct Plain {};
  Encoder(Sink& sink, Plain) : b_(sink), allow_pickle_(false), plain_(true) {}
  ~Encoder() {
    for (PyObject* o : keep_) Py_DECREF(o);
  }
  Encoder(const Encoder&) = delete;
  Encoder& operator=(const Encoder&) = delete;

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
    if (plain_) {
      if (PyList_CheckExact(o) || PyTuple_CheckExact(o) || PyDict_CheckExact(o) ||
          PySet_CheckExact(o) || PyFrozenSet_CheckExact(o)) {
        return container(o);
      }
      throw NotPlain{};
    }
    if (PyList_CheckExact(o) || PyTuple_CheckExact(o) || PyDict_Check(o) || PyAnySet_Check(o)) {
      return container(o);
    }
    if (PyObject* nd = numpy_leaf_types(); nd != nullptr && PyObject_IsInstance(o, nd) == 1) {
      if (auto r = ndarray(o)) return *r;
    }
    if (g_hooks.plain_copy != nullptr) {
      // A shoal view inside a new tree: its contents are copied (a plain copy, then encoded).
      nb::object plain = nb::steal(g_hooks.plain_copy(o));
      if (plain.is_valid()) {
        keep(plain.ptr());
        return value(plain.ptr());
      }
      if (PyErr_Occurred()) throw nb::python_error();
    }
    return pickled(o);
  }

  // A key (dict key or set element): the Ref and its table hash.
  Ref key(PyObject* o, uint64_t* h) {
    Ref r;
    if (plain_ && !(o == Py_None || PyBool_Check(o) || PyLong_CheckExact(o) ||
                    PyFloat_CheckExact(o) || PyUnicode_CheckExact(o) || PyBytes_CheckExact(o) ||
                    PyTuple_CheckExact(o) || PyFrozenSet_CheckExact(o))) {
      throw NotPlain{};
    }
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
      if (++depth_ > frozen::kThawMaxDepth && plain_) throw NotPlain{};
      if (enter_nested(" while freezing a key") != 0) throw nb::python_error();
      std::vector<Ref> refs;
      std::vector<uint64_t> hashes;
      nb::object it = nb::steal(PyObject_GetIter(o));
      if (!it.is_valid()) {
        leave_nested();
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
        leave_nested();
        throw;
      }
      leave_nested();
      --depth_;
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
  void keep(PyObject* o) {
    Py_INCREF(o);
    keep_.push_back(o);
  }

  Ref integer(PyObject* o) {
    int overflow;
    const long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (v == -1 && PyErr_Occurred()) throw nb::python_error();
    if (overflow == 0) return b_.integer(v);
    std::vector<unsigned char> buf;
    if (!compat::long_to_le_bytes(o, &buf)) throw nb::python_error();
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
    nb::object data = nb::steal(PyObject_CallOneArg(g_hooks.pickle_dumps, o));
    if (!data.is_valid()) throw nb::python_error();
    if (!PyBytes_Check(data.ptr())) throw nb::type_error("pickle_dumps must return bytes");
    return b_.pickle({reinterpret_cast<const std::byte*>(PyBytes_AS_STRING(data.ptr())),
                      static_cast<size_t>(PyBytes_GET_SIZE(data.ptr()))});
  }

  std::optional<Ref> ndarray(PyObject* o) {
    nb::object parts = nb::steal(PyObject_CallOneArg(g_hooks.ndarray_parts, o));
    if (!parts.is_valid()) throw nb::python_error();
    if (parts.is_none()) return std::nullopt;  // object dtype: pickled
    nb::tuple t = nb::borrow<nb::tuple>(parts);
    const std::string descr = nb::cast<std::string>(t[0]);
    const auto itemsize = nb::cast<uint64_t>(t[1]);
    std::vector<uint64_t> shape;
    for (nb::handle d : nb::borrow<nb::tuple>(t[2])) shape.push_back(nb::cast<uint64_t>(d));
    const auto order = nb::cast<uint32_t>(t[3]);
    if (order > layout::kNdOrderScalar || (order == layout::kNdOrderScalar && !shape.empty())) {
      throw nb::value_error("ndarray_parts: order must be 0, 1 or 2 (2 only for shape ())");
    }
    Py_buffer buf;
    if (PyObject_GetBuffer(nb::object(t[4]).ptr(), &buf, PyBUF_SIMPLE) != 0) {
      throw nb::python_error();
    }
    Ref r;
    try {
      if (order == layout::kNdOrderScalar) {
        if (static_cast<uint64_t>(buf.len) != itemsize) {
          throw nb::value_error("ndarray_parts: a scalar's buffer must hold one item");
        }
        r = b_.numpy_scalar(descr, itemsize, buf.buf);
      } else {
        r = b_.ndarray(descr, itemsize, shape, order == layout::kNdOrderF, buf.buf,
                       static_cast<uint64_t>(buf.len));
      }
    } catch (...) {
      PyBuffer_Release(&buf);
      throw;
    }
    PyBuffer_Release(&buf);
    return r;
  }

  Ref container(PyObject* o) {
    if (plain_ && depth_ == 0 && PyTuple_CheckExact(o)) {
      // A message's root tuple (the common small message) skips the memo (its allocations
      // cost as much as the rest of the encoding): the root is encoded once, and a cycle
      // through it runs through a list, dict or set, which the memo catches.
      if (enter_nested(" while encoding") != 0) throw nb::python_error();
      ++depth_;
      Ref r;
      try {
        r = container_body(o);
      } catch (...) {
        leave_nested();
        --depth_;
        throw;
      }
      leave_nested();
      --depth_;
      return r;
    }
    auto found = memo_.find(o);
    if (found != memo_.end()) {
      if (found->second == kInProgress) {
        if (plain_) throw NotPlain{};  // pickle keeps cycles
        PyErr_Format(PyExc_ValueError,
                     "shoal.freeze: the %.200s contains itself (a cycle); a frozen object is a "
                     "tree (shared subtrees are fine, cycles are not)",
                     Py_TYPE(o)->tp_name);
        throw nb::python_error();
      }
      return found->second;
    }
    if (plain_ && depth_ >= frozen::kThawMaxDepth) throw NotPlain{};
    if (enter_nested(" while freezing") != 0) throw nb::python_error();
    ++depth_;
    keep(o);  // the memo keys on the address: keep the object alive while it is in the memo
    memo_[o] = kInProgress;
    Ref r;
    try {
      r = container_body(o);
    } catch (...) {
      leave_nested();
      --depth_;
      throw;
    }
    leave_nested();
    --depth_;
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
  Sink& b_;
  bool allow_pickle_;
  bool plain_ = false;
  int depth_ = 0;  // containers and key tuples being encoded (plain mode's bound)
  std::unordered_map<PyObject*, Ref> memo_;
  std::vector<PyObject*> keep_;
};


}  // namespace shoal::py::codec
