// python/bindings/pipe_bind.cpp — shoal._shoal.PipeQueue: one direction of a shoal.Pipe
// (python/shoal/_pipes.py), a shoal::Queue (include/shoal/queue.hpp) with its end table.
//
// Statuses are ints: 0 ok, 1 full, 2 empty, 5 closed (QueueStatus's values). send returns
// 0 | kWatched when the consumer end is watched (a selector waits on the queue's wake-up FIFO:
// the caller then writes a byte to it). Blocking calls run without the GIL and interruptibly:
// on a signal the GIL is re-taken and PyErr_CheckSignals() runs; if a handler raised (Ctrl-C:
// KeyboardInterrupt) it propagates with nothing moved, else the call waits again with the same
// absolute deadline.
//
// Messages: send puts raw bytes (encoding 0: send_bytes, and Connection.send's pickles);
// send_value puts a plain value in the shared codec's format (encoding 3, as shoal.Queue's,
// docs/design/queue.md "Message encodings") or answers NotImplemented (the caller pickles);
// recv returns bytes for encoding 0 and (3, value) for a value message, thawed here.
#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "bindings.hpp"
#include "codec.hpp"
#include "layout/queue_layout.hpp"
#include "shoal/queue.hpp"

namespace nb = nanobind;
using namespace nb::literals;

namespace shoal::py {
namespace {

constexpr int kWatched = 8;
constexpr size_t kReleaseGilBytes = size_t{1} << 16;

Deadline deadline_of(double timeout) {
  return timeout < 0 ? Deadline::never() : Deadline::after(timeout);
}

QueueEnd end_of(int side) {
  if (side != 0 && side != 1) throw nb::value_error("side must be 0 (producer) or 1 (consumer)");
  return static_cast<QueueEnd>(side);
}

template <class F>
QueueStatus run_released(F&& f) {
  for (;;) {
    QueueStatus s;
    {
      nb::gil_scoped_release nogil;
      s = f();
    }
    if (s != QueueStatus::kInterrupted) return s;
    if (PyErr_CheckSignals() != 0) throw nb::python_error();
  }
}

// A contiguous read-only view of any bytes-like object, released on scope exit.
class BufferView {
 public:
  explicit BufferView(nb::handle obj) {
    if (PyObject_GetBuffer(obj.ptr(), &view_, PyBUF_C_CONTIGUOUS) != 0) {
      throw nb::python_error();
    }
  }
  ~BufferView() { PyBuffer_Release(&view_); }
  BufferView(const BufferView&) = delete;
  BufferView& operator=(const BufferView&) = delete;
  std::string_view bytes() const noexcept {
    return {static_cast<const char*>(view_.buf), static_cast<size_t>(view_.len)};
  }

 private:
  Py_buffer view_{};
};

}  // namespace

void register_pipe(nb::module_& m) {
  nb::class_<Queue>(m, "PipeQueue", "One direction of a shoal.Pipe (private)")
      .def_static(
          "create",
          [](uint64_t ring_bytes) {
            nb::gil_scoped_release nogil;
            return Queue::create(Queue::Options{.ring_bytes = ring_bytes});
          },
          "ring_bytes"_a)
      .def_static(
          "attach",
          [](const std::string& handle) {
            nb::gil_scoped_release nogil;
            return Queue::attach(handle);
          },
          "handle"_a)
      .def("handle", [](const Queue& q) { return q.handle(true); })
      // "<session>.pipe-<segment id>": the name of the queue's FIFO in the runtime directory,
      // which gc_runtime_dir removes with its session's files once that session is dead.
      .def("ident",
           [](const Queue& q) {
             const Segment& s = q.heap().root_segment();
             return s.session().hex() + ".pipe-" + s.id().hex();
           })
      .def("open_end", [](Queue& q, int side) { q.open_end(end_of(side)); }, "side"_a)
      .def("close_end", [](Queue& q, int side) { q.close_end(end_of(side)); }, "side"_a)
      .def("lend_end", [](Queue& q, int side) { return q.lend_end(end_of(side)); }, "side"_a)
      .def(
          "claim_lent",
          [](Queue& q, int side, uint64_t lender) { q.claim_lent(end_of(side), lender); },
          "side"_a, "lender"_a)
      .def(
          "end_closed",
          [](Queue& q, int side) {
            const QueueEnd e = end_of(side);
            nb::gil_scoped_release nogil;
            return q.end_closed(e);
          },
          "side"_a)
      .def("lent_holds", [](const Queue& q, int side) { return q.lent_holds(end_of(side)); },
           "side"_a)
      .def("holders", [](Queue& q, int side) { return q.holders(end_of(side)); }, "side"_a)
      .def(
          "set_watched", [](Queue& q, int side, bool on) { q.set_watched(end_of(side), on); },
          "side"_a, "on"_a)
      .def("watched", [](const Queue& q, int side) { return q.watched(end_of(side)); }, "side"_a)
      .def("size", [](const Queue& q) { return q.size(); })
      .def(
          "send",
          [](Queue& q, nb::handle data, double timeout) {
            BufferView v(data);
            const Deadline d = deadline_of(timeout);
            const std::string_view msg = v.bytes();
            // The common case: room at once, no system call and no GIL release (but for a big
            // message, whose copy into its heap block other threads need not wait for).
            QueueStatus s;
            if (msg.size() >= kReleaseGilBytes) {
              nb::gil_scoped_release nogil;
              s = q.send(msg, Deadline{0}, false);
            } else {
              s = q.send(msg, Deadline{0}, false);
            }
            if (s == QueueStatus::kFull && timeout != 0) {
              s = run_released([&] { return q.send(msg, d, true); });
            }
            int r = static_cast<int>(s);
            if (s == QueueStatus::kOk && q.watched(QueueEnd::kConsumer)) r |= kWatched;
            return r;
          },
          "data"_a, "timeout"_a)
      .def(
          "send_value",
          [](Queue& q, nb::handle obj, double timeout) -> nb::object {
            const std::optional<codec::EncodedMessage> img = codec::encode_message(obj.ptr());
            if (!img) return nb::borrow(Py_NotImplemented);
            // img owns the image's builder until this call returns (signal handlers between
            // two tries may send messages of their own).
            const std::string_view msg(reinterpret_cast<const char*>(img->bytes.data()),
                                img->bytes.size());
            const Deadline d = deadline_of(timeout);
            constexpr uint8_t kValue = layout::kEncodingValue;
            QueueStatus s;
            if (msg.size() >= kReleaseGilBytes) {
              nb::gil_scoped_release nogil;
              s = q.send(msg, Deadline{0}, false, kValue);
            } else {
              s = q.send(msg, Deadline{0}, false, kValue);
            }
            if (s == QueueStatus::kFull && timeout != 0) {
              s = run_released([&] { return q.send(msg, d, true, kValue); });
            }
            int r = static_cast<int>(s);
            if (s == QueueStatus::kOk && q.watched(QueueEnd::kConsumer)) r |= kWatched;
            return nb::int_(r);
          },
          "obj"_a.none(), "timeout"_a)
      .def(
          "recv",
          [](Queue& q, double timeout) -> nb::object {
            std::string out;
            uint8_t enc = 0;
            const Deadline d = deadline_of(timeout);
            QueueStatus s = q.try_get(out, &enc);
            if (s == QueueStatus::kEmpty) {
              s = run_released(
                  [&] { return q.recv(out, timeout == 0 ? Deadline{0} : d, true, &enc); });
            }
            if (s != QueueStatus::kOk) return nb::int_(static_cast<int>(s));
            if (enc == layout::kEncodingValue) {
              PyObject* v = codec::decode_message(reinterpret_cast<const std::byte*>(out.data()),
                                                  out.size());
              if (v == nullptr) throw nb::python_error();
              return nb::make_tuple(static_cast<int>(enc), nb::steal(v));
            }
            PyObject* b =
                PyBytes_FromStringAndSize(out.data(), static_cast<Py_ssize_t>(out.size()));
            if (b == nullptr) throw nb::python_error();
            return nb::steal(b);
          },
          "timeout"_a);
}

}  // namespace shoal::py
