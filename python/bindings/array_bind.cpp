// python/bindings/array_bind.cpp — the array header, for shoal.Array (python/shoal/_array.py).
// Python builds the ndarray view itself (numpy owns dtype parsing); C++ owns the layout.
#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include "bindings.hpp"
#include "shoal/array.hpp"

namespace nb = nanobind;
using namespace nb::literals;

namespace shoal::py {

void register_array(nb::module_& m) {
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
  m.def(
      "array_info",
      [](const PySegment& s) {
        if (!s.seg.valid()) throw nb::value_error("segment is closed");
        if (s.seg.kind() != ObjectKind::kArray) {
          throw InvalidArgumentError("segment does not hold an array");
        }
        ArrayInfo info = parse_array_header(s.seg.data(), s.seg.size()).take();
        return nb::make_tuple(info.descr, info.itemsize, info.shape, info.fortran, info.nbytes,
                              info.data_offset);
      },
      "segment"_a,
      "Validate an array segment's header: (descr, itemsize, shape, fortran, nbytes, offset).");
}

}  // namespace shoal::py
