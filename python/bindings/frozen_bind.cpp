// placeholder
#include "shoal/frozen.hpp"
#include "bindings.hpp"
namespace shoal::py { void register_frozen(nanobind::module_&) {} }
