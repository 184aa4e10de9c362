// python/bindings/bindings.hpp — declarations shared by the binding translation units.
#pragma once

#include <nanobind/nanobind.h>

#include "shoal/segment.hpp"

namespace shoal::py {

/// The Python object behind shoal._shoal.Segment.
struct PySegment {
  Segment seg;
  Py_ssize_t exports = 0;  // live Py_buffer views; guarded by the GIL
};

void register_errors(nanobind::module_& m);
void register_segment(nanobind::module_& m);
void register_array(nanobind::module_& m);
void register_frozen(nanobind::module_& m);
}  // namespace shoal::py
