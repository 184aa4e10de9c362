// python/bindings/module.cpp — shoal._shoal: the thin nanobind layer over the C++ engine.
//
// Importing this module has no side effects beyond defining types: no thread, no connection,
// no broker (so it is safe in multiprocessing's forkserver preload). The session starts on the
// first create.
#include "bindings.hpp"

NB_MODULE(_shoal, m) {
  m.doc() = "shoal's C++ engine (private: use the `shoal` package)";
  shoal::py::register_errors(m);
  shoal::py::register_segment(m);
  shoal::py::register_array(m);
  shoal::py::register_frozen(m);
  shoal::py::register_heap(m);
  shoal::py::register_sync(m);
  shoal::py::register_dict(m);
  shoal::py::register_list(m);
  shoal::py::register_pipe(m);
  shoal::py::register_queue(m);
  shoal::py::register_refs(m);
  shoal::py::register_pool(m);
}
