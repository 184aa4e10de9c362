// python/bindings/frozen_bind.cpp — the module functions of frozen objects: freeze, save,
// load, attach, the owner's info and validation, key hashes. The view types they return are in
// frozen_views.cpp.
#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <string>

#include "bindings.hpp"
#include "codec.hpp"
#include "frozen_views.hpp"
#include "shoal/frozen.hpp"

namespace nb = nanobind;
using namespace nb::literals;

namespace shoal::py {

using frozen::Builder;
using frozen::Frozen;
using codec::is_container;
using codec::key_hash;
using codec::Ref;
using codec::tag_of;
using Encoder = codec::Encoder<Builder>;

void register_frozen(nb::module_& m) {
  register_view_types(m);

  m.def(
      "_frozen_init",
      [](nb::type_object dict_cls, nb::type_object list_cls, nb::type_object tuple_cls,
         nb::type_object set_cls, nb::object ndarray_type, nb::object ndarray_parts,
         nb::object ndarray_leaf, nb::object pickle_dumps, nb::object pickle_loads) {
        set_view_classes(dict_cls, list_cls, tuple_cls, set_cls, ndarray_type, ndarray_parts,
                         ndarray_leaf, pickle_dumps, pickle_loads);
      },
      "dict_cls"_a, "list_cls"_a, "tuple_cls"_a, "set_cls"_a, "ndarray_type"_a.none(),
      "ndarray_parts"_a, "ndarray_leaf"_a, "pickle_dumps"_a, "pickle_loads"_a,
      "Wires the Python view classes and helpers in (shoal._frozen calls it once; ndarray_type\n"
      "None: numpy's types are found once numpy is imported).");

  m.def(
      "frozen_freeze",
      [](nb::handle obj, bool allow_pickle) {
        Builder b;
        Encoder enc(b, allow_pickle);
        const Ref root = enc.value(obj.ptr());
        Frozen f;
        {
          nb::gil_scoped_release nogil;
          f = b.finish(root);
        }
        nb::object owner = nb::steal(wrap_owner(std::move(f), true));
        return view_of(as_owner(owner), root);
      },
      "obj"_a.none(), "allow_pickle"_a = true,
      "Encode obj into a new sealed frozen segment; return its view (or leaf value).");

  m.def(
      "frozen_save",
      [](nb::handle obj, const std::string& path, bool allow_pickle) {
        Builder b;
        Encoder enc(b, allow_pickle);
        const Ref root = enc.value(obj.ptr());
        nb::gil_scoped_release nogil;
        b.save(root, path);
      },
      "obj"_a.none(), "path"_a, "allow_pickle"_a = true,
      "Encode obj into a file (see shoal.save).");

  m.def(
      "frozen_remove_dead_temps",
      [](const std::string& dir) {
        nb::gil_scoped_release nogil;
        return shoal::frozen::remove_dead_save_temps(dir);
      },
      "dir"_a,
      "Remove the temporary files that shoal.save calls killed mid-write left in dir (never one "
      "being written); returns their paths.");

  m.def(
      "frozen_owner_attach",
      [](const std::string& handle) {
        Frozen f;
        {
          nb::gil_scoped_release nogil;
          f = Frozen::attach(handle);
        }
        return nb::steal(wrap_owner(std::move(f), true));
      },
      "handle"_a, "The FrozenImage a segment handle names.");
  m.def(
      "frozen_owner_from_segment",
      [](nb::handle seg) {
        if (!nb::isinstance<PySegment>(seg)) throw nb::type_error("expected a shoal Segment");
        const PySegment& s = nb::cast<const PySegment&>(seg);
        if (!s.seg.valid()) throw nb::value_error("segment is closed");
        return nb::steal(wrap_owner(Frozen::from_segment(s.seg), true));
      },
      "segment"_a, "The FrozenImage of an attached kFrozen segment.");
  m.def(
      "frozen_owner_load",
      [](const std::string& path, bool allow_pickle) {
        Frozen f;
        {
          nb::gil_scoped_release nogil;
          f = Frozen::load(path);
        }
        if (f.image().has_pickles() && !allow_pickle) {
          throw nb::value_error(("shoal.load: " + path +
                                 " holds pickled objects, and unpickling data from a file can run "
                                 "arbitrary code: pass allow_pickle=True if you trust it")
                                    .c_str());
        }
        return nb::steal(wrap_owner(std::move(f), allow_pickle));
      },
      "path"_a, "allow_pickle"_a = false, "The FrozenImage of a file written by shoal.save.");
  m.def(
      "frozen_view",
      [](nb::handle owner, uint64_t ref) {
        OwnerObject* o = as_owner(owner);
        // A pickle names a container (its view) or an ndarray leaf (its shoal.Array): nothing
        // else is ever pickled by reference, so a forged ref of another tag is refused here.
        if (!is_container(tag_of(ref)) && tag_of(ref) != layout::Tag::kNdarray) {
          throw nb::value_error("not a container or ndarray reference");
        }
        return view_of(o, ref);
      },
      "owner"_a, "ref"_a,
      "The view of container `ref`, or the shoal.Array of ndarray leaf `ref`, in an image "
      "(unpickling).");
  m.def(
      "check_stack",
      []() {
        if (check_stack(" in a frozen view's repr, ==, < or hash") != 0) throw nb::python_error();
      },
      "RecursionError when the C stack is nearly used up, whatever sys.setrecursionlimit() says "
      "(the views' Python methods that recurse call it on entry).");
  m.def(
      "frozen_root",
      [](nb::handle owner) {
        OwnerObject* o = as_owner(owner);
        return view_of(o, o->image->root().ref());
      },
      "owner"_a, "The root of an image: a view, or the leaf value.");
  m.def(
      "frozen_owner_info",
      [](nb::handle owner, bool pin, bool send) {
        OwnerObject* o = as_owner(owner);
        nb::dict d;
        d["nbytes"] = o->image->size();
        d["allow_pickle"] = o->allow_pickle;
        d["path"] = o->frozen->path();
        if (!o->frozen->path().empty()) {
          const frozen::Frozen::FileId id = o->frozen->file_id();
          d["dev"] = id.dev;
          d["ino"] = id.ino;
          d["size"] = id.size;
        }
        if (o->frozen->path().empty()) {
          std::string h;
          if (send) {
            h = send_handle(o->frozen->segment());  // held while a Hold lives, else pinned
          } else {
            nb::gil_scoped_release nogil;
            h = o->frozen->handle(pin);
          }
          d["handle"] = h;
        }
        return d;
      },
      "owner"_a, "pin"_a = false, "send"_a = false,
      "nbytes, allow_pickle, path, dev, ino and size (files: which file was loaded) and handle "
      "(segments; pin=True pins it for transit; send=True: what pickling writes, held while "
      "shoal.hold holds the image, else pinned).");

  m.def(
      "frozen_owner_hold",
      [](nb::handle owner) {
        OwnerObject* o = as_owner(owner);
        if (!o->frozen->path().empty()) {
          throw nb::value_error(("a frozen object loaded from a file pickles as its path, "
                                 "not a handle: there is nothing to hold ('" +
                                 o->frozen->path() + "')").c_str());
        }
        return PyHold{o->frozen->segment().hold()};
      },
      "owner"_a, "A Hold of the segment holding an image (shoal.hold).");
  m.def(
      "frozen_owner_segment",
      [](nb::handle owner) -> nb::object {
        OwnerObject* o = as_owner(owner);
        if (!o->frozen->path().empty()) return nb::none();
        return nb::cast(PySegment{o->frozen->segment()});
      },
      "owner"_a,
      "The segment holding an image; None for an image loaded from a file (a container "
      "stores a frozen root by reference to its segment).");
  m.def(
      "frozen_validate",
      [](nb::handle owner, uint32_t max_depth) {
        OwnerObject* o = as_owner(owner);
        nb::gil_scoped_release nogil;
        o->image->validate(max_depth);
      },
      "owner"_a, "max_depth"_a = 1000, "Check every node of the image (DecodeError if corrupt).");
  m.def(
      "frozen_hash",
      [](nb::handle key, uint64_t seed) {
        uint64_t h;
        const int rc = key_hash(key.ptr(), seed, &h, 0);
        if (rc < 0) throw nb::python_error();
        if (rc == 1) throw nb::type_error("not a frozen key type");
        return h;
      },
      "key"_a.none(), "seed"_a = frozen::kDefaultHashSeed,
      "The table hash of a key (the same in every process).");
}

}  // namespace shoal::py
