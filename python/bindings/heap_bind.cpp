// python/bindings/heap_bind.cpp — shoal._shoal.Heap: the C++ shoal::Heap for Python tests and
// tools (the containers of a later release build their Python views on it). Refs are ints.
// Calls that may wait on the heap's lock or on the broker release the GIL.
#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>

#include <cstring>
#include <string>

#include "bindings.hpp"
#include "shoal/heap.hpp"

namespace nb = nanobind;
using namespace nb::literals;

namespace shoal::py {
namespace {

nb::dict stats_dict(const HeapStats& s) {
  nb::dict d;
  d["extents"] = s.extents;
  d["live_blocks"] = s.live_blocks;
  d["live_bytes"] = s.live_bytes;
  d["reserved_bytes"] = s.reserved_bytes;
  d["allocations"] = s.allocations;
  d["frees"] = s.frees;
  d["recoveries"] = s.recoveries;
  d["reclaimed"] = s.reclaimed;
  return d;
}

nb::dict report_dict(const HeapReport& r) {
  nb::dict d;
  d["extents"] = r.extents;
  d["blocks"] = r.blocks;
  d["used_blocks"] = r.used_blocks;
  d["used_bytes"] = r.used_bytes;
  d["free_blocks"] = r.free_blocks;
  d["free_bytes"] = r.free_bytes;
  d["pending_blocks"] = r.pending_blocks;
  d["tiled_bytes"] = r.tiled_bytes;
  d["reserved_bytes"] = r.reserved_bytes;
  return d;
}

// `n` bytes at `offset` into the block at `ref`, bounds-checked inside the ref's extent (an
// offset never carries into the extent bits of the Ref).
std::byte* span(const Heap& h, HeapRef ref, uint64_t offset, uint64_t n) {
  if (offset > (uint64_t{1} << 48) || n > (uint64_t{1} << 48)) {
    throw nb::value_error("offset and length must each be below 2**48");
  }
  return h.at(ref, offset + n) + offset;
}

}  // namespace

void register_heap(nb::module_& m) {
  nb::class_<Heap>(m, "Heap",
                   "A growable shared object with an allocator of variable-sized blocks "
                   "(C++ shoal::Heap). Blocks are named by int Refs, the same in every process.")
      .def_static(
          "create",
          [](uint64_t initial_bytes) {
            nb::gil_scoped_release unlocked;
            return Heap::create(Heap::Options{initial_bytes});
          },
          "initial_bytes"_a = 256 * 1024, "A new, empty heap in this process's session.")
      .def_static(
          "attach",
          [](const std::string& handle) {
            nb::gil_scoped_release unlocked;
            return Heap::attach(handle);
          },
          "handle"_a, "The heap a handle names.")
      .def_static(
          "from_segment", [](const PySegment& seg) { return Heap::attach(seg.seg); }, "segment"_a,
          "The heap whose root is this segment (what shoal.attach does for kind \"heap\").")
      .def("__reduce__",
           [](const Heap& h) {
             // One pinned handle per pickle, as for every object (docs/design/segment.md).
             nb::object attach = nb::module_::import_("shoal._glue").attr("attach_heap");
             return nb::make_tuple(attach, nb::make_tuple(h.handle(true)));
           })
      .def("handle", &Heap::handle, "pin"_a = true, "A handle for sending (the root's).")
      .def_prop_ro(
          "id", [](const Heap& h) { return h.root_segment().id().hex(); },
          "The root object's id (32 hex digits).")
      .def_prop_ro("extent_count", &Heap::extent_count, "Extents published so far.")
      .def("allocate", &Heap::allocate, "n"_a, nb::call_guard<nb::gil_scoped_release>(),
           "A block of at least n usable bytes; its Ref.")
      .def("allocate_pending", &Heap::allocate_pending, "n"_a,
           nb::call_guard<nb::gil_scoped_release>(),
           "allocate(), but freed by the next check if this process dies before commit().")
      .def("commit", &Heap::commit, "ref"_a, "Ends a pending block's probation.")
      .def("free", &Heap::free, "ref"_a, nb::call_guard<nb::gil_scoped_release>(),
           "Frees a block (a double free raises InvalidArgumentError).")
      .def("usable_size", &Heap::usable_size, "ref"_a, "The usable bytes of a block.")
      .def(
          "write",
          [](const Heap& h, HeapRef ref, nb::bytes data, uint64_t offset) {
            std::memcpy(span(h, ref, offset, data.size()), data.c_str(), data.size());
          },
          "ref"_a, "data"_a, "offset"_a = 0, "Copies bytes into a block at offset.")
      .def(
          "read",
          [](const Heap& h, HeapRef ref, uint64_t n, uint64_t offset) {
            return nb::bytes(reinterpret_cast<const char*>(span(h, ref, offset, n)), n);
          },
          "ref"_a, "n"_a, "offset"_a = 0, "n bytes of a block from offset.")
      .def_prop_rw(
          "root", [](const Heap& h) { return h.root().load(); },
          [](const Heap& h, HeapRef r) { h.root().store(r); },
          "A word for the user's root Ref (0 at first).")
      .def("stats", [](const Heap& h) { return stats_dict(h.stats()); },
           "Counters: extents, live blocks and bytes, reserved bytes, recoveries, reclaimed.")
      .def(
          "check",
          [](Heap& h) {
            HeapReport r;
            {
              nb::gil_scoped_release unlocked;
              r = h.check();
            }
            return report_dict(r);
          },
          "Walks every block and checks the heap's invariants; frees pending blocks of dead "
          "processes first. CorruptSegmentError names the first failure.");
}

}  // namespace shoal::py
