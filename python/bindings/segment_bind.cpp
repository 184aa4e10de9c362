// python/bindings/segment_bind.cpp — shoal._shoal.Segment and the session functions.
//
// Segment exposes the buffer protocol (memoryview(seg), numpy.frombuffer(seg)). Every exported
// buffer holds a reference to the Segment object, so the mapping cannot go away under a view;
// close() while views exist raises BufferError, as mmap.mmap does. Read-only segments export
// read-only buffers (and are mapped PROT_READ underneath).
#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/tuple.h>

#include <string>
#include <tuple>
#include <vector>

#include "bindings.hpp"
#include "session/client.hpp"
#include "shoal/segment.hpp"
#include "shoal/session.hpp"
#include "shoal/system.hpp"

namespace nb = nanobind;
using namespace nb::literals;

namespace shoal::py {
namespace {

const Segment& open_segment(const PySegment& s) {
  if (!s.seg.valid()) throw nb::value_error("segment is closed");
  return s.seg;
}

int segment_getbuffer(PyObject* self, Py_buffer* view, int flags) {
  PySegment* s = nb::inst_ptr<PySegment>(self);
  if (!s->seg.valid()) {
    view->obj = nullptr;
    PyErr_SetString(PyExc_ValueError, "segment is closed");
    return -1;
  }
  const bool ro = s->seg.read_only();
  if ((flags & PyBUF_WRITABLE) == PyBUF_WRITABLE && ro) {
    view->obj = nullptr;
    PyErr_SetString(PyExc_BufferError,
                    "segment is read-only (sealed): it cannot export a writable buffer");
    return -1;
  }
  if (PyBuffer_FillInfo(view, self, s->seg.data(), static_cast<Py_ssize_t>(s->seg.size()),
                        ro ? 1 : 0, flags) != 0) {
    return -1;
  }
  ++s->exports;
  return 0;
}

void segment_releasebuffer(PyObject* self, Py_buffer*) {
  PySegment* s = nb::inst_ptr<PySegment>(self);
  --s->exports;
}

PyType_Slot segment_slots[] = {
    {Py_bf_getbuffer, reinterpret_cast<void*>(segment_getbuffer)},
    {Py_bf_releasebuffer, reinterpret_cast<void*>(segment_releasebuffer)},
    {0, nullptr}};

nb::dict memory_info_dict() {
  MemoryInfo mi = memory_info();
  nb::dict d;
  d["mem_available"] = mi.mem_available;
  d["cgroup_limit"] = mi.cgroup_limit ? nb::cast(*mi.cgroup_limit) : nb::none();
  d["cgroup_current"] = mi.cgroup_current ? nb::cast(*mi.cgroup_current) : nb::none();
  d["max_bytes"] = mi.max_bytes ? nb::cast(*mi.max_bytes) : nb::none();
  d["dev_shm_total"] = mi.dev_shm_total;
  d["dev_shm_free"] = mi.dev_shm_free;
  d["headroom"] = mi.headroom();
  return d;
}

}  // namespace

std::string send_handle(const Segment& seg) {
  // Held: a cached string, no round trip, so the GIL is kept. Pinned: a round trip without it.
  if (seg.held()) return seg.handle(HandleMode::kSend);
  nb::gil_scoped_release nogil;
  return seg.handle(HandleMode::kSend);
}

PySegment attach_segment(nb::handle handle) {
  // Take any object: a str that cannot be UTF-8 encoded (a lone surrogate) is a malformed
  // handle, not a wrong argument type.
  if (!PyUnicode_Check(handle.ptr())) {
    throw nb::type_error(("a shoal handle is a str, not " +
                          std::string(Py_TYPE(handle.ptr())->tp_name)).c_str());
  }
  Py_ssize_t n = 0;
  const char* p = PyUnicode_AsUTF8AndSize(handle.ptr(), &n);
  if (p == nullptr) {
    PyErr_Clear();
    throw DecodeError("malformed shoal handle: it is not valid text (unencodable characters)");
  }
  // The text stays alive (the caller holds `handle`) and is decoded in place. The GIL is kept
  // when the attach needs no round trip (a mapping this process has, or a connected worker's
  // fast attach: a few system calls): releasing and taking it back costs more than that.
  const Handle h = Handle::decode(std::string_view(p, static_cast<size_t>(n))).take();
  if (std::optional<Segment> now = Segment::try_attach_now(h)) return PySegment{std::move(*now)};
  nb::gil_scoped_release nogil;
  return PySegment{Segment::attach(h)};
}

void register_segment(nb::module_& m) {
  nb::class_<PySegment>(m, "Segment", nb::type_slots(segment_slots),
                        "An anonymous shared-memory segment (see shoal/segment.hpp).")
      .def_static(
          "create",
          [](uint64_t size, bool populate, uint32_t kind) {
            if (!kind_known(kind)) {
              throw nb::value_error(("unknown segment kind " + std::to_string(kind) +
                                     " (this build knows " + known_kind_names() + ")")
                                        .c_str());
            }
            nb::gil_scoped_release nogil;
            return PySegment{Segment::create(size, {static_cast<ObjectKind>(kind), populate})};
          },
          "size"_a, "populate"_a = false, "kind"_a = 0,
          "Create a zero-filled segment of `size` bytes in this process's session.")
      .def_static("attach", &attach_segment, "handle"_a.none(),
                  "Map the segment a handle names (from handle() in any process).")
      .def_static(
          "create_named",
          [](const std::string& name, uint64_t size) {
            nb::gil_scoped_release nogil;
            return PySegment{Segment::create_named(name, size)};
          },
          "name"_a, "size"_a,
          "Create a persistent named segment (a file in named_dir()); lives until removed.")
      .def_static(
          "open_named",
          [](const std::string& name, bool writable) {
            nb::gil_scoped_release nogil;
            return PySegment{Segment::open_named(name, writable)};
          },
          "name"_a, "writable"_a = false, "Map an existing named segment.")
      .def(
          "handle",
          [](const PySegment& s, bool pin) {
            const Segment& seg = open_segment(s);
            nb::gil_scoped_release nogil;
            return seg.handle(pin);
          },
          "pin"_a = true,
          "A handle: 133 characters, or 163 when pinned (the hint for a fast attach). pin=True "
          "keeps the object alive until one process attaches with it or SHOAL_PIN_TTL seconds "
          "pass.")
      .def(
          "hold",
          [](const PySegment& s) { return PyHold{open_segment(s).hold()}; },
          "A Hold: while it is active, pickling this segment (or any object over it) writes a "
          "held handle: no pin, no round trip, valid while this process holds the object.")
      .def_prop_ro("held", [](const PySegment& s) { return s.seg.valid() && s.seg.held(); },
                   "True while a Hold of this object is active in this process.")
      .def(
          "send_handle", [](const PySegment& s) { return send_handle(open_segment(s)); },
          "The handle pickling writes: held while a Hold is active, else pinned.")
      .def("seal", [](PySegment& s) {
        if (s.exports > 0) {
          throw nb::buffer_error(
              "cannot seal a segment while buffers are exported; release the memoryviews and "
              "arrays over it first");
        }
        Segment seg = open_segment(s);
        seg.seal();
      }, "Make the segment read-only for this and every future process.")
      .def(
          "add_reference",
          [](const PySegment& s, const PySegment& target) {
            const Segment& seg = open_segment(s);
            const Segment& t = open_segment(target);
            nb::gil_scoped_release nogil;
            seg.add_reference(t);
          },
          "target"_a,
          "Keep `target` (a segment of the same session) alive while this object lives: the "
          "broker frees the whole group when the last outside reference goes, SIGKILL "
          "included. Counted: n calls need n drop_reference calls. Cycles are allowed.")
      .def(
          "drop_reference",
          [](const PySegment& s, const PySegment& target) {
            const Segment& seg = open_segment(s);
            const Id128 id = open_segment(target).id();
            nb::gil_scoped_release nogil;
            seg.drop_reference(id);
          },
          "target"_a,
          "Undo one add_reference(target) (no round trip; a reference never added: nothing "
          "happens).")
      .def(
          "drop_reference",
          [](const PySegment& s, const std::string& target_id) {
            const Segment& seg = open_segment(s);
            auto id = Id128::from_hex(target_id);
            if (!id) throw nb::value_error("a segment id is 32 hex digits (Segment.id)");
            nb::gil_scoped_release nogil;
            seg.drop_reference(id.value());
          },
          "target_id"_a,
          "Undo one add_reference of the segment whose id (Segment.id) is given, for a target "
          "this process no longer maps.")
      .def("close", [](PySegment& s) {
        if (s.exports > 0) {
          throw nb::buffer_error(("cannot close a segment with " + std::to_string(s.exports) +
                                  " exported buffer(s); release the memoryviews/arrays first")
                                     .c_str());
        }
        nb::gil_scoped_release nogil;  // may send a release to the broker
        s.seg.close();
      }, "Drop this process's reference now (idempotent).")
      .def_prop_ro("size", [](const PySegment& s) { return s.seg.size(); })
      .def_prop_ro("closed", [](const PySegment& s) { return !s.seg.valid(); })
      .def_prop_ro("read_only", [](const PySegment& s) { return open_segment(s).read_only(); })
      .def_prop_ro("id", [](const PySegment& s) { return open_segment(s).id().hex(); })
      .def_prop_ro("session", [](const PySegment& s) { return open_segment(s).session().hex(); })
      .def_prop_ro("kind", [](const PySegment& s) {
        return static_cast<uint32_t>(open_segment(s).kind());
      })
      .def_prop_ro("exports", [](const PySegment& s) { return s.exports; })
      .def_prop_ro("address", [](const PySegment& s) {
        return reinterpret_cast<uintptr_t>(open_segment(s).data());
      }, "Address of the data area in this process (for building views; not for sending).")
      .def_prop_ro("name", [](const PySegment& s) -> std::optional<std::string> {
        const std::string& n = open_segment(s).name();
        if (n.empty()) return std::nullopt;
        return n;
      })
      .def("__len__", [](const PySegment& s) { return open_segment(s).size(); })
      .def("__enter__", [](nb::handle self) { return nb::borrow(self); })
      .def("__exit__", [](PySegment& s, nb::args) {
        if (s.exports == 0) {
          nb::gil_scoped_release nogil;
          s.seg.close();
        }
      })
      .def("__reduce__", [](const PySegment& s) {
        const Segment& seg = open_segment(s);
        nb::module_ glue = nb::module_::import_("shoal._glue");
        if (!seg.name().empty()) {
          return nb::make_tuple(glue.attr("open_named"),
                                nb::make_tuple(seg.name(), !seg.read_only()));
        }
        const std::string h = send_handle(seg);
        // A Python function: nanobind's function objects cannot be pickled by reference.
        return nb::make_tuple(glue.attr("attach_segment"), nb::make_tuple(h));
      })
      .def("__repr__", [](const PySegment& s) {
        if (!s.seg.valid()) return std::string("<shoal Segment closed>");
        return "<shoal Segment " + s.seg.id().hex().substr(0, 12) + " size=" +
               std::to_string(s.seg.size()) + (s.seg.read_only() ? " read-only" : "") + ">";
      });

  nb::class_<PyHold>(m, "Hold",
                     "A hold on a shared object (shoal.hold): while it is active, pickling the "
                     "object writes a held handle (no pin, no broker round trip), valid while "
                     "this process holds the object. A context manager; release() ends it.")
      .def("release", [](PyHold& h) {
        nb::gil_scoped_release nogil;  // may be the last reference: a release to the broker
        h.hold.release();
      }, "End the hold now (idempotent). Pickling the object pins again.")
      .def_prop_ro("active", [](const PyHold& h) { return h.hold.active(); },
                   "True until release() or the end of the with block.")
      .def("__enter__", [](nb::handle self) { return nb::borrow(self); })
      .def("__exit__", [](PyHold& h, nb::args) {
        nb::gil_scoped_release nogil;
        h.hold.release();
      })
      .def("__repr__", [](const PyHold& h) {
        return std::string(h.hold.active() ? "<shoal Hold active>" : "<shoal Hold released>");
      });

  m.def("_reset_for_testing", []() { detail::Client::instance().reset_for_testing(); },
        "Tests only: forget every broker connection and the current session.");
  m.def("set_broker_path", &set_broker_path, "path"_a);
  m.def("broker_path", &broker_path);
  m.def("current_session", []() -> std::optional<std::string> {
    Id128 s = current_session();
    if (s.is_zero()) return std::nullopt;
    return s.hex();
  });
  m.def("after_fork_child", []() {
    nb::gil_scoped_release nogil;
    after_fork_child();
  }, "Re-register this forked child's inherited mappings with their brokers.");
  m.def("list_sessions", []() {
    std::vector<SessionEntry> v;
    {
      nb::gil_scoped_release nogil;
      v = list_sessions();
    }
    nb::list out;
    for (const auto& s : v) {
      nb::dict d;
      d["id"] = s.id.hex();
      d["alive"] = s.alive;
      d["broker_pid"] = s.broker_pid;
      d["describe_json"] = s.describe_json;
      out.append(d);
    }
    return out;
  });
  m.def("gc", []() {
    nb::gil_scoped_release nogil;
    return gc_runtime_dir();
  }, "Remove the runtime files of dead sessions; returns how many were removed.");
  m.def(
      "drop_orphan_pins",
      [](const std::string& session) {
        auto id = Id128::from_hex(session);
        if (!id) throw nb::value_error("session must be 32 hex digits");
        nb::gil_scoped_release nogil;
        return drop_orphan_pins(id.value());
      },
      "session"_a,
      "Drop the pins of a session whose sender died (shoal gc --pins); returns how many.");
  m.def(
      "collect_cycles",
      [](const std::string& session) {
        auto id = Id128::from_hex(session);
        if (!id) throw nb::value_error("session must be 32 hex digits");
        nb::gil_scoped_release nogil;
        return collect_cycles(id.value());
      },
      "session"_a,
      "Free a session's objects that only unreachable reference cycles keep alive (shoal gc "
      "--cycles); returns how many.");
  m.def("runtime_dir", [](bool create) { return runtime_dir(create).take(); }, "create"_a = false);
  m.def("named_dir", [](bool create) { return named_dir(create).take(); }, "create"_a = false);
  m.def("memory_info", &memory_info_dict);
  m.def("remove_named", [](const std::string& name) { Segment::remove_named(name); }, "name"_a,
        "Delete a named segment (processes that map it keep their mapping).");
  m.def("list_named", []() {
    nb::list out;
    for (const auto& e : list_named()) {
      nb::dict d;
      d["name"] = e.name;
      d["size"] = e.size;
      d["path"] = e.path;
      d["valid"] = e.valid;
      out.append(d);
    }
    return out;
  }, "Every named segment of this user.");
  m.def("check_capacity", [](uint64_t bytes) { check_capacity(bytes).throw_if_error(); },
        "bytes"_a);
  m.def("memfd_supported", &memfd_supported);
  m.def("pin_ttl", []() { return static_cast<double>(pin_ttl_ms()) / 1000.0; });
  m.def("object_kinds", []() {
    // The registry of include/shoal/kind.hpp, in id order; python/shoal/_kinds.py builds
    // shoal.attach's dispatch, the pickling reconstructors and the CLI's names from it.
    std::vector<std::tuple<uint32_t, std::string, std::string>> out;
    for (const KindInfo& k : kObjectKinds) {
      out.emplace_back(static_cast<uint32_t>(k.kind), std::string(k.name),
                       std::string(k.description));
    }
    return out;
  }, "Every object kind this build knows: (id, short name, description), in id order.");
  m.def("decode_handle", [](const std::string& text) {
    Handle h = Handle::decode(text).take();
    nb::dict d;
    d["session"] = h.session.hex();
    d["object"] = h.object.hex();
    d["pin"] = h.pin;
    d["size"] = h.size;
    d["kind"] = h.kind;
    d["read_only"] = (h.flags & kHandleReadOnly) != 0;
    d["held"] = h.held();
    return d;
  }, "text"_a, "Parse a handle (DecodeError if malformed).");
  m.def("validate_segment_header", [](nb::bytes data) {
    validate_segment_header(data.c_str(), data.size(), Id128{}).throw_if_error();
  }, "data"_a, "Check the bytes of a segment header (raises on anything invalid).");
}

}  // namespace shoal::py
