// python/bindings/bindings.hpp — declarations shared by the binding translation units.
#pragma once

#include <nanobind/nanobind.h>

namespace shoal::py {
void register_errors(nanobind::module_& m);
void register_segment(nanobind::module_& m);
}  // namespace shoal::py
