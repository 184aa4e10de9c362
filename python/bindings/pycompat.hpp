// python/bindings/pycompat.hpp — the one place the bindings use CPython internals.
//
// Every private CPython function or struct layout the bindings rely on is wrapped here, with
// the public API used wherever the running version offers one, so that a new CPython breaks
// one file, not many. Supported: CPython 3.11 to 3.13 (make test builds on each).
//
//   big ints      _PyLong_FromByteArray / _PyLong_AsByteArray / _PyLong_NumBits before 3.13;
//                 the public PyLong_FromNativeBytes / PyLong_AsNativeBytes from 3.13.
//   int reuse     rewriting a one-digit int in place (frozen iterators, reuse_int below) needs
//                 PyLongObject's 3.11 layout (ob_size = sign * digits, ob_digit[0]); 3.12
//                 changed it, so there the iterators simply make new ints.
#pragma once

#include <Python.h>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace shoal::py::compat {

/// A Python int from `n` bytes of little-endian two's complement. New reference or nullptr.
inline PyObject* long_from_le_bytes(const unsigned char* b, size_t n) {
#if PY_VERSION_HEX >= 0x030D0000
  return PyLong_FromNativeBytes(b, n, Py_ASNATIVEBYTES_LITTLE_ENDIAN);
#else
  return _PyLong_FromByteArray(b, n, /*little_endian=*/1, /*is_signed=*/1);
#endif
}

/// `o` (an int) as little-endian two's complement, long enough for its sign (perhaps one byte
/// longer than minimal). False with a Python error set.
inline bool long_to_le_bytes(PyObject* o, std::vector<unsigned char>* out) {
#if PY_VERSION_HEX >= 0x030D0000
  const int flags = Py_ASNATIVEBYTES_LITTLE_ENDIAN;
  const Py_ssize_t need = PyLong_AsNativeBytes(o, nullptr, 0, flags);
  if (need < 0) return false;
  out->assign(static_cast<size_t>(need), 0);
  return PyLong_AsNativeBytes(o, out->data(), need, flags) >= 0;
#else
  const size_t bits = _PyLong_NumBits(o);
  if (bits == static_cast<size_t>(-1) && PyErr_Occurred()) return false;
  out->assign(bits / 8 + 1, 0);
  return _PyLong_AsByteArray(reinterpret_cast<PyLongObject*>(o), out->data(), out->size(),
                             /*little_endian=*/1, /*is_signed=*/1) == 0;
#endif
}

#if PY_VERSION_HEX < 0x030C0000 && PYLONG_BITS_IN_DIGIT == 30  // 3.11 (the lowest supported)
inline constexpr bool kCanReuseInts = true;
/// Rewrites `o`, a one-digit int nobody else references (refcount 1, ints have no weak
/// references), to hold `val`, |val| < 2**30. Only where kCanReuseInts.
inline void reuse_int(PyObject* o, int64_t val) {
  const uint64_t mag = val < 0 ? 0 - static_cast<uint64_t>(val) : static_cast<uint64_t>(val);
  auto* l = reinterpret_cast<PyLongObject*>(o);
  Py_SET_SIZE(l, val < 0 ? -1 : 1);
  l->ob_digit[0] = static_cast<digit>(mag);
}
#else
inline constexpr bool kCanReuseInts = false;
inline void reuse_int(PyObject*, int64_t) {}
#endif

}  // namespace shoal::py::compat
