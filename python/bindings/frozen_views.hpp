// python/bindings/frozen_views.hpp — what the frozen module functions (frozen_bind.cpp) need of
// the view types (frozen_views.cpp): the owner object, and making views of it.
#pragma once

#include <nanobind/nanobind.h>

#include "codec.hpp"
#include "shoal/frozen.hpp"

namespace shoal::py {

/// FrozenImage: owns the mapping every view of one image reads.
struct OwnerObject {
  PyObject_HEAD
  frozen::Frozen* frozen;      // heap-allocated; the Image inside has a stable address
  const frozen::Image* image;  // == &frozen->image()
  bool allow_pickle;
};

/// Creates the FrozenImage, view base and iterator types as attributes of `m`.
void register_view_types(nanobind::module_& m);

/// _frozen_init: the Python subclasses of the view bases (each must add no instance fields),
/// and the helpers the codec calls back (ndarray and pickle hooks).
void set_view_classes(nanobind::type_object dict_cls, nanobind::type_object list_cls,
                      nanobind::type_object tuple_cls, nanobind::type_object set_cls,
                      nanobind::object ndarray_type, nanobind::object ndarray_parts,
                      nanobind::object ndarray_leaf, nanobind::object pickle_dumps,
                      nanobind::object pickle_loads);

/// A new FrozenImage owning `f`; a new reference.
PyObject* wrap_owner(frozen::Frozen&& f, bool allow_pickle);
/// `h` as a FrozenImage; TypeError otherwise.
OwnerObject* as_owner(nanobind::handle h);
/// The view (or leaf value) of `r` in the owner's image.
nanobind::object view_of(OwnerObject* o, codec::Ref r);

}  // namespace shoal::py
