// python/bindings/queue_bind.cpp — shoal._shoal.QueueCore, the C++ shoal::Queue
// (include/shoal/queue.hpp) as the base class of shoal.Queue, JoinableQueue and SimpleQueue
// (python/shoal/_queues.py), and QueueBlock, an out-of-band message handed to its consumer.
//
// Messages cross this layer as (encoding, payload): the encoding is the record's tag bits
// (layout::kEncoding*: 0 raw bytes, what C++ producers put and what a Python bytes is sent as;
// 1 a pickle; 2 a pickle with its out-of-band buffers; 3 a plain value in the shared codec's
// format), which _queues.py chooses and reads. Encoding 3 is written and read here, in C++:
// _put_value encodes (codec::encode_message) or answers NotImplemented for a value the codec
// does not take (the caller pickles it), and a received encoding-3 message comes back already
// thawed into objects (codec::decode_message), so a small message costs no Python-level call.
//
// Hot paths in C: _put and _get are raw CPython methods (METH_FASTCALL, positional arguments, no
// nanobind dispatch). Each first tries without waiting with the GIL held; when it must wait it
// releases the GIL and waits interruptibly: on a signal it re-takes the GIL and runs
// PyErr_CheckSignals(), so Ctrl-C raises KeyboardInterrupt with nothing put or taken, else it
// waits again with the same absolute deadline (as the sync objects do, sync_bind.cpp).
//
// Zero-copy receive: _get(timeout, hand_out=True) takes an out-of-band message without copying
// it: the payload is a QueueBlock, which exports the heap block's bytes through the buffer
// protocol (writable: the block is the receiver's) and releases the block (Queue::release: freed,
// its hand-out slot cleared) when the QueueBlock and every view of it are gone. A receiver that
// dies first leaves a hand-out slot naming a dead process: the next reclaim frees the block
// (docs/design/queue.md, "Zero-copy receive").
//
// Fork: a child inherits the QueueBlocks (and the arrays over them), so it must co-own their
// blocks, or its parent's release or death would free memory the child still reads, and a later
// put would change its arrays' bytes. _queues.py registers the three at-fork steps below: before
// the fork each live QueueBlock this process holds gets a kept slot for the child
// (Queue::share_handout), which the child adopts right after it (Queue::adopt_handout); from
// then on each releases its own claim, and the block is freed by the last.
#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_set>
#include <utility>
#include <vector>

#include "bindings.hpp"
#include "codec.hpp"
#include "layout/queue_layout.hpp"
#include "shoal/heap.hpp"
#include "shoal/queue.hpp"

namespace nb = nanobind;
using namespace nb::literals;

namespace shoal::py {
namespace {

struct PyQueue {
  Queue q;
};

// A message's heap block, handed to its receiver; released with the last view of it.
struct PyQueueBlock;
// The live QueueBlocks of this process that may hold a claim (the at-fork steps share them):
// GIL-guarded; never destroyed (a QueueBlock may be freed during interpreter teardown).
std::unordered_set<PyQueueBlock*>& live_blocks() {
  static auto* s = new std::unordered_set<PyQueueBlock*>();
  return *s;
}

struct PyQueueBlock {
  nb::object owner;  // the QueueCore: keeps the heap mapped while the block is viewed
  HeapRef ref = 0;
  uint64_t length = 0;
  std::byte* data = nullptr;
  Py_ssize_t exports = 0;
  // The process whose claim (hand-out slot) this object holds: the receiver, or a forked child
  // once it adopted the slot its parent shared. 0: nobody's (the block is kept for the queue's
  // life: the table had no slot for a child). Any other process (a child that could not adopt)
  // views the block without releasing it.
  pid_t taker = ::getpid();
  PyQueueBlock() = default;
  // Moved, never copied: one owner frees the block.
  PyQueueBlock(PyQueueBlock&& o) noexcept
      : owner(std::move(o.owner)), ref(o.ref), length(o.length), data(o.data), taker(o.taker) {
    o.ref = 0;
  }
  PyQueueBlock(const PyQueueBlock&) = delete;
  PyQueueBlock& operator=(const PyQueueBlock&) = delete;
  PyQueueBlock& operator=(PyQueueBlock&&) = delete;
  ~PyQueueBlock() {
    live_blocks().erase(this);
    if (ref == 0 || !owner.is_valid() || taker != ::getpid()) return;
    try {
      nb::inst_ptr<PyQueue>(owner)->q.release(ref);
    } catch (...) {
      // The heap refused (corrupt): the block stays until the queue is freed.
    }
  }
};

PyTypeObject* g_block_type = nullptr;

[[gnu::always_inline]] inline PyQueue* queue_of(PyObject* self) noexcept {
  return ready_inst<PyQueue>(self);
}

// timeout: None (block for ever) or seconds (0: do not wait). -1 with an error set for a bad one.
int parse_timeout(PyObject* o, double* out) noexcept {
  if (o == Py_None) {
    *out = -1.0;
    return 0;
  }
  const double d = PyFloat_AsDouble(o);
  if (d == -1.0 && PyErr_Occurred()) return -1;
  if (std::isnan(d)) {
    PyErr_SetString(PyExc_ValueError, "timeout is NaN");
    return -1;
  }
  *out = d < 0 ? 0.0 : d;  // as multiprocessing.Queue's semaphores: a negative one is 0
  return 0;
}

// Runs op(deadline, interruptible): first with the GIL held and no wait, then (timeout != 0)
// without the GIL until done, retrying interruptions whose handlers did not raise.
template <class F>
QueueStatus run_op(F&& op, QueueStatus would_wait, double timeout) {
  QueueStatus s = op(Deadline{0}, false);
  if (s != would_wait || timeout == 0) return s;
  const Deadline d = timeout < 0 ? Deadline::never() : Deadline::after(timeout);
  for (;;) {
    {
      nb::gil_scoped_release nogil;
      s = op(d, true);
    }
    if (s != QueueStatus::kInterrupted) return s;
    if (PyErr_CheckSignals() != 0) throw nb::python_error();
  }
}

// A bytes-like payload's bytes, held for the call.
struct Payload {
  Py_buffer view{};
  bool held = false;
  int get(PyObject* o) noexcept {
    if (PyObject_GetBuffer(o, &view, PyBUF_SIMPLE) != 0) return -1;
    held = true;
    return 0;
  }
  std::string_view sv() const noexcept {
    return {static_cast<const char*>(view.buf), static_cast<size_t>(view.len)};
  }
  Payload() = default;
  Payload(const Payload&) = delete;
  Payload& operator=(const Payload&) = delete;
  Payload(Payload&& o) noexcept : view(o.view), held(o.held) { o.held = false; }
  ~Payload() {
    if (held) PyBuffer_Release(&view);
  }
};

int parse_encoding(PyObject* o, uint8_t* out) noexcept {
  const long e = PyLong_AsLong(o);
  if (e == -1 && PyErr_Occurred()) return -1;
  if (e < 0 || e >= layout::kEncodingCount) {
    PyErr_Format(PyExc_ValueError, "unknown message encoding %ld", e);
    return -1;
  }
  *out = static_cast<uint8_t>(e);
  return 0;
}

// Puts the messages (all or none, in order). A batch that holds a big message is copied into its
// heap block inside put: without the GIL, from the first try; a small one tries with the GIL
// held first (run_op). _put, _put_value and _put_many all put through here.
QueueStatus put_messages(PyQueue* pq, std::span<const std::string_view> msgs,
                         std::span<const uint8_t> encs, double timeout) {
  const bool big = std::any_of(msgs.begin(), msgs.end(),
                               [](std::string_view m) { return m.size() > (uint64_t{1} << 16); });
  if (!big) {
    return run_op([&](Deadline d, bool intr) { return pq->q.put_encoded(msgs, encs, d, intr); },
                  QueueStatus::kFull, timeout);
  }
  const Deadline d = timeout < 0 ? Deadline::never() : Deadline::after(timeout);
  for (;;) {
    QueueStatus s;
    {
      nb::gil_scoped_release nogil;
      s = pq->q.put_encoded(msgs, encs, d, true);
    }
    if (s != QueueStatus::kInterrupted) return s;
    if (PyErr_CheckSignals() != 0) throw nb::python_error();
  }
}

// _put(payload, encoding, timeout) -> bool: True put, False full (timeout passed; 0: at once).
PyObject* queue_put(PyObject* self, PyObject* const* args, Py_ssize_t nargs) noexcept {
  if (nargs != 3) {
    PyErr_Format(PyExc_TypeError, "_put expected 3 arguments, got %zd", nargs);
    return nullptr;
  }
  PyQueue* pq = queue_of(self);
  if (pq == nullptr) return nullptr;
  uint8_t enc;
  double timeout;
  if (parse_encoding(args[1], &enc) != 0 || parse_timeout(args[2], &timeout) != 0) return nullptr;
  Payload p;
  if (p.get(args[0]) != 0) return nullptr;
  try {
    const std::string_view msg = p.sv();
    const QueueStatus s = put_messages(pq, {&msg, 1}, {&enc, 1}, timeout);
    return PyBool_FromLong(s == QueueStatus::kOk);
  } catch (...) {
    set_error_from_current_exception();
    return nullptr;
  }
}

// _put_value(obj, timeout) -> True put, False full, NotImplemented when the value codec does not
// take obj (the caller pickles it).
PyObject* queue_put_value(PyObject* self, PyObject* const* args, Py_ssize_t nargs) noexcept {
  if (nargs != 2) {
    PyErr_Format(PyExc_TypeError, "_put_value expected 2 arguments, got %zd", nargs);
    return nullptr;
  }
  PyQueue* pq = queue_of(self);
  if (pq == nullptr) return nullptr;
  double timeout;
  if (parse_timeout(args[1], &timeout) != 0) return nullptr;
  try {
    const std::optional<codec::EncodedMessage> img = codec::encode_message(args[0]);
    if (!img) Py_RETURN_NOTIMPLEMENTED;
    const std::string_view msg(reinterpret_cast<const char*>(img->bytes.data()),
                                img->bytes.size());
    const uint8_t enc = layout::kEncodingValue;
    // img owns the image's builder until this call returns: a signal handler run between
    // two tries (it may put a message itself) cannot overwrite it.
    const QueueStatus s = put_messages(pq, {&msg, 1}, {&enc, 1}, timeout);
    return PyBool_FromLong(s == QueueStatus::kOk);
  } catch (...) {
    set_error_from_current_exception();
    return nullptr;
  }
}

// A received message as (encoding, payload): payload bytes, or a QueueBlock (handed out); for
// a value message (encoding 3), the value itself, thawed here. A corrupt value message raises
// DecodeError; it has been taken, so the next get goes on with the next message.
PyObject* message_tuple(PyObject* self, QueueMessage& m) {
  PyObject* payload;
  if (m.encoding == layout::kEncodingValue) {
    if (m.block != 0) {
      PyQueue* pq = nb::inst_ptr<PyQueue>(self);
      const HeapRef ref = m.block;
      m.block = 0;  // released below, whatever the decode does
      const std::byte* data = nullptr;
      try {
        data = pq->q.heap().at(ref, m.length);
      } catch (...) {
        try {
          pq->q.release(ref);
        } catch (...) {
        }
        throw;
      }
      payload = codec::decode_message(data, m.length);
      try {
        pq->q.release(ref);
      } catch (...) {
        // The heap refused (corrupt): the block stays until the queue is freed.
      }
    } else {
      payload = codec::decode_message(reinterpret_cast<const std::byte*>(m.data.data()),
                                      m.data.size());
    }
    if (payload == nullptr) throw nb::python_error();
  } else if (m.block != 0) {
    PyQueue* pq = nb::inst_ptr<PyQueue>(self);
    PyQueueBlock b;
    b.owner = nb::borrow(self);
    b.length = m.length;
    b.data = pq->q.heap().at(m.block, m.length);
    b.ref = m.block;
    m.block = 0;  // the QueueBlock frees it from here on (also if the cast below throws)
    nb::object o = nb::cast(std::move(b));
    live_blocks().insert(nb::inst_ptr<PyQueueBlock>(o));
    payload = o.release().ptr();
  } else {
    // A message with out-of-band buffers comes as a bytearray, so that the arrays unpickled
    // over it are writable, as multiprocessing.Queue's are (one copy either way).
    const auto n = static_cast<Py_ssize_t>(m.data.size());
    payload = m.encoding == layout::kEncodingPickleBuffers
                  ? PyByteArray_FromStringAndSize(m.data.data(), n)
                  : PyBytes_FromStringAndSize(m.data.data(), n);
    if (payload == nullptr) throw nb::python_error();
  }
  PyObject* t = PyTuple_New(2);
  if (t == nullptr) {
    Py_DECREF(payload);
    throw nb::python_error();
  }
  PyTuple_SET_ITEM(t, 0, PyLong_FromLong(m.encoding));
  PyTuple_SET_ITEM(t, 1, payload);
  return t;
}

// Releases the blocks of messages not turned into QueueBlocks (an error part-way).
void free_unclaimed(PyQueue* pq, std::vector<QueueMessage>& msgs) noexcept {
  for (QueueMessage& m : msgs) {
    if (m.block == 0) continue;
    try {
      pq->q.release(m.block);
    } catch (...) {
    }
    m.block = 0;
  }
}

// get_messages that also reports end of stream (kClosed): the queue is empty and its producer
// end was opened and no live process holds it (docs/design/queue.md, "End of stream for
// shoal.Queue"). As Queue::recv: waits in slices (2 ms doubling to 100 ms, so a producer's
// death, which wakes nobody, is noticed within 100 ms; a close wakes the waiters at once),
// checking the end table after each empty one; a message put just before the last producer
// closed is taken first. First try without waiting, with the GIL held (the common case).
// Without end_of_stream, exactly multiprocessing's get: wait for a message or the timeout.
QueueStatus get_or_end(PyQueue* pq, std::vector<QueueMessage>& msgs, size_t max_messages,
                       uint64_t max_bytes, bool hand_out, double timeout, bool end_of_stream) {
  Queue& q = pq->q;
  if (!end_of_stream) {
    return run_op(
        [&](Deadline d, bool intr) {
          return q.get_messages(msgs, max_messages, d, intr, max_bytes, hand_out);
        },
        QueueStatus::kEmpty, timeout);
  }
  QueueStatus s = q.get_messages(msgs, max_messages, Deadline{0}, false, max_bytes, hand_out);
  if (s != QueueStatus::kEmpty) return s;
  const Deadline d = timeout < 0 ? Deadline::never() : Deadline::after(timeout);
  double slice = 0.002;
  for (;;) {
    bool closed;
    {
      nb::gil_scoped_release nogil;
      closed = q.end_closed(QueueEnd::kProducer);
      if (closed) {
        s = q.get_messages(msgs, max_messages, Deadline{0}, false, max_bytes, hand_out);
      } else if (timeout != 0) {
        const Deadline step = Deadline::after(slice);
        s = q.get_messages(msgs, max_messages, step.ns < d.ns ? step : d, true, max_bytes,
                           hand_out);
      }
    }
    if (closed) return s == QueueStatus::kOk ? s : QueueStatus::kClosed;
    if (timeout == 0) return QueueStatus::kEmpty;
    if (s == QueueStatus::kInterrupted) {
      if (PyErr_CheckSignals() != 0) throw nb::python_error();
      continue;
    }
    if (s != QueueStatus::kEmpty) return s;
    if (!d.is_never() && Deadline::after(0.0).ns >= d.ns) return QueueStatus::kEmpty;
    slice = std::min(slice * 2, 0.1);
  }
}

thread_local std::vector<QueueMessage> t_msgs;  // reused: its strings keep their buffers

// _get(timeout, hand_out[, end_of_stream]) -> (encoding, payload) | None (empty when the
// timeout passed) | 5 (QueueStatus::kClosed, only with end_of_stream: empty, and every
// producer closed it or died).
PyObject* queue_get(PyObject* self, PyObject* const* args, Py_ssize_t nargs) noexcept {
  if (nargs != 2 && nargs != 3) {
    PyErr_Format(PyExc_TypeError, "_get expected 2 or 3 arguments, got %zd", nargs);
    return nullptr;
  }
  PyQueue* pq = queue_of(self);
  if (pq == nullptr) return nullptr;
  double timeout;
  if (parse_timeout(args[0], &timeout) != 0) return nullptr;
  const int hand_out = PyObject_IsTrue(args[1]);
  if (hand_out < 0) return nullptr;
  const int eos = nargs == 3 ? PyObject_IsTrue(args[2]) : 0;
  if (eos < 0) return nullptr;
  std::vector<QueueMessage>& msgs = t_msgs;
  try {
    const QueueStatus s = get_or_end(pq, msgs, 1, 0, hand_out != 0, timeout, eos != 0);
    if (s == QueueStatus::kClosed) return PyLong_FromLong(static_cast<long>(s));
    if (s != QueueStatus::kOk) Py_RETURN_NONE;
    return message_tuple(self, msgs.front());
  } catch (...) {
    free_unclaimed(pq, msgs);
    set_error_from_current_exception();
    return nullptr;
  }
}

int queue_traverse(PyObject* self, visitproc visit, void* arg) {
  Py_VISIT(Py_TYPE(self));
  return 0;
}

PyMethodDef queue_methods[] = {
    {"_put", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(queue_put)),
     METH_FASTCALL,
     "_put($self, payload, encoding, timeout, /)\n--\n\nPut one message (a bytes-like payload "
     "and its encoding); timeout None waits for room for ever, 0 not at all. True when put, "
     "False when the queue stayed full."},
    {"_get", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(queue_get)),
     METH_FASTCALL,
     "_get($self, timeout, hand_out, end_of_stream=False, /)\n--\n\nTake one message: "
     "(encoding, payload), None when the queue stayed empty, 5 (end_of_stream) when it is empty "
     "and every producer closed it or died. payload is bytes, or (hand_out) a QueueBlock for an "
     "out-of-band message."},
    {"_put_value", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(queue_put_value)),
     METH_FASTCALL,
     "_put_value($self, obj, timeout, /)\n--\n\nPut obj in the shared value codec's format "
     "(encoding 3): True when put, False when the queue stayed full, NotImplemented when obj is "
     "not a plain value (pickle it instead)."},
    {nullptr, nullptr, 0, nullptr}};

PyType_Slot queue_slots[] = {{Py_tp_traverse, reinterpret_cast<void*>(queue_traverse)},
                             {Py_tp_methods, queue_methods},
                             {0, nullptr}};

// ---- QueueBlock: the buffer protocol over a handed-out block ----------------------------

int block_getbuffer(PyObject* self, Py_buffer* view, int flags) noexcept {
  if (!nb::inst_ready(self)) {
    PyErr_SetString(PyExc_BufferError, "QueueBlock is not initialised");
    return -1;
  }
  PyQueueBlock* b = nb::inst_ptr<PyQueueBlock>(self);
  if (PyBuffer_FillInfo(view, self, b->data, static_cast<Py_ssize_t>(b->length), 0, flags) != 0) {
    return -1;
  }
  ++b->exports;
  return 0;
}

void block_releasebuffer(PyObject* self, Py_buffer*) noexcept {
  --nb::inst_ptr<PyQueueBlock>(self)->exports;
}

int block_traverse(PyObject* self, visitproc visit, void* arg) {
  Py_VISIT(Py_TYPE(self));
  if (nb::inst_ready(self)) {
    PyQueueBlock* b = nb::inst_ptr<PyQueueBlock>(self);
    if (b->owner.is_valid()) Py_VISIT(b->owner.ptr());
  }
  return 0;
}

Py_ssize_t block_len(PyObject* self) noexcept {
  if (!nb::inst_ready(self)) return 0;
  return static_cast<Py_ssize_t>(nb::inst_ptr<PyQueueBlock>(self)->length);
}

PyType_Slot block_slots[] = {{Py_bf_getbuffer, reinterpret_cast<void*>(block_getbuffer)},
                             {Py_bf_releasebuffer, reinterpret_cast<void*>(block_releasebuffer)},
                             {Py_tp_traverse, reinterpret_cast<void*>(block_traverse)},
                             {Py_sq_length, reinterpret_cast<void*>(block_len)},
                             {0, nullptr}};

// ---- fork: a child co-owns the blocks it inherits ------------------------------------------
// Shares made by before_fork for the child: (QueueBlock, kept slot). Filled and read under the
// GIL, which the forking thread holds from the before step to the after steps.
std::vector<std::pair<PyQueueBlock*, uint32_t>>& fork_shares() {
  static auto* v = new std::vector<std::pair<PyQueueBlock*, uint32_t>>();
  return *v;
}

void before_fork() noexcept {
  auto& shares = fork_shares();
  shares.clear();
  const pid_t me = ::getpid();
  for (PyQueueBlock* b : live_blocks()) {
    if (b->ref == 0 || !b->owner.is_valid() || b->taker != me) continue;
    try {
      shares.reserve(shares.size() + 1);
      const uint32_t slot = nb::inst_ptr<PyQueue>(b->owner)->q.share_handout(b->ref);
      if (slot == layout::kQueueHandoutSlots) {
        b->taker = 0;  // kept for the queue's life: nobody releases it (share_handout)
      } else {
        shares.emplace_back(b, slot);
      }
    } catch (...) {
      // A corrupt queue: the child views the block without a claim (as before the table).
    }
  }
}

void after_fork_parent() noexcept { fork_shares().clear(); }

void after_fork_child() noexcept {
  const pid_t me = ::getpid();
  for (const auto& [b, slot] : fork_shares()) {
    try {
      if (nb::inst_ptr<PyQueue>(b->owner)->q.adopt_handout(slot, b->ref)) b->taker = me;
    } catch (...) {
      // A corrupt queue: the kept slot stays, and so does the block (never released).
    }
  }
  fork_shares().clear();
}

double timeout_arg(nb::handle t) {
  double d;
  if (parse_timeout(t.ptr(), &d) != 0) throw nb::python_error();
  return d;
}

}  // namespace

void register_queue(nb::module_& m) {
  nb::class_<PyQueueBlock> block(
      m, "QueueBlock", nb::type_slots(block_slots),
      "An out-of-band message's heap block, handed to its receiver (private): its bytes through "
      "the buffer protocol (memoryview(block)); the block is freed when this object and every "
      "view of it are gone.");
  g_block_type = reinterpret_cast<PyTypeObject*>(block.ptr());
  m.def("queue_before_fork", &before_fork,
        "os.register_at_fork(before=...) of _queues.py: each live QueueBlock this process holds "
        "gets a kept hand-out slot for the child.");
  m.def("queue_after_fork_parent", &after_fork_parent,
        "os.register_at_fork(after_in_parent=...) of _queues.py.");
  m.def("queue_after_fork_child", &after_fork_child,
        "os.register_at_fork(after_in_child=...) of _queues.py: the child adopts the slots its "
        "parent shared, so its QueueBlocks release their own claims.");

  nb::class_<PyQueue>(m, "QueueCore", nb::type_slots(queue_slots), nb::is_weak_referenceable(),
                      "The C++ shoal::Queue behind shoal.Queue (private): its hot methods, in "
                      "C.")
      .def(
          "__init__",
          [](PyQueue* self, nb::handle source, uint64_t ring_bytes, uint64_t max_messages,
             uint64_t max_bytes, bool joinable) {
            Queue q;
            if (source.is_none()) {
              nb::gil_scoped_release nogil;
              q = Queue::create({ring_bytes, max_messages, max_bytes, joinable});
            } else if (nb::isinstance<Heap>(source)) {
              q = Queue::attach(nb::cast<Heap>(source));
            } else {
              const std::string handle = nb::cast<std::string>(source);
              nb::gil_scoped_release nogil;
              q = Queue::attach(handle);
            }
            new (self) PyQueue{std::move(q)};
          },
          "source"_a.none(), "ring_bytes"_a = uint64_t{1} << 20, "max_messages"_a = 0,
          "max_bytes"_a = 0, "joinable"_a = false,
          "A new queue (source None) with a ring of ring_bytes, at most max_messages messages and "
          "max_bytes payload bytes (0: no bound but the ring), with task accounting when "
          "joinable; the queue a handle names, or the queue in a shoal._shoal.Heap "
          "(IncompatibleSegmentError when the heap holds no queue).")
      .def_prop_ro(
          "joinable", [](const PyQueue& q) { return q.q.joinable(); },
          "Whether the queue counts tasks (task_done, join).")
      .def(
          "_task_done",
          [](PyQueue& q) {
            bool ok;
            {
              nb::gil_scoped_release nogil;  // the queue's lock may be held a moment
              ok = q.q.task_done();
            }
            if (!ok) throw nb::value_error("task_done() called too many times");
          },
          "Mark one task done; ValueError when none is unfinished but in the queue.")
      .def(
          "_join",
          [](PyQueue& q, nb::handle timeout) {
            const double t = timeout_arg(timeout);
            const Deadline d = t < 0 ? Deadline::never() : Deadline::after(t);
            for (;;) {
              QueueStatus s;
              {
                nb::gil_scoped_release nogil;
                s = q.q.join(d, true);
              }
              if (s != QueueStatus::kInterrupted) return s == QueueStatus::kOk;
              if (PyErr_CheckSignals() != 0) throw nb::python_error();
            }
          },
          "timeout"_a.none(),
          "Wait until no task is unfinished: True, or False when the timeout passed.")
      .def(
          "_unfinished",
          [](PyQueue& q) {
            nb::gil_scoped_release nogil;
            return q.q.unfinished();
          },
          "The unfinished tasks now (dead takers' counted done).")
      .def(
          "_put_parts",
          [](PyQueue& q, nb::sequence parts, nb::handle encoding, nb::handle timeout) {
            const double t = timeout_arg(timeout);
            uint8_t enc;
            if (parse_encoding(encoding.ptr(), &enc) != 0) throw nb::python_error();
            const size_t n = nb::len(parts);
            std::vector<Payload> held(n);
            std::vector<std::string_view> views(n);
            for (size_t i = 0; i < n; ++i) {
              nb::object p = parts[i];
              if (held[i].get(p.ptr()) != 0) throw nb::python_error();
              views[i] = held[i].sv();
            }
            // The copy into the block runs without the GIL (the parts are held buffers).
            const Deadline d = t < 0 ? Deadline::never() : Deadline::after(t);
            for (;;) {
              QueueStatus s;
              {
                nb::gil_scoped_release nogil;
                s = q.q.put_parts(views, enc, d, true);
              }
              if (s != QueueStatus::kInterrupted) return s == QueueStatus::kOk;
              if (PyErr_CheckSignals() != 0) throw nb::python_error();
            }
          },
          "parts"_a, "encoding"_a, "timeout"_a.none(),
          "Put one message made of the bytes-like parts, copied once (into the ring or its "
          "block): True when put, False when the queue stayed full.")
      .def(
          "_encode_value",
          [](nb::handle, nb::handle obj) -> nb::object {
            const std::optional<codec::EncodedMessage> img = codec::encode_message(obj.ptr());
            if (!img) return nb::borrow(Py_NotImplemented);
            PyObject* b = PyBytes_FromStringAndSize(reinterpret_cast<const char*>(img->bytes.data()),
                                                    static_cast<Py_ssize_t>(img->bytes.size()));
            if (b == nullptr) throw nb::python_error();
            return nb::steal(b);
          },
          "obj"_a,
          "obj in the shared value codec's format (the payload of an encoding-3 message, as "
          "_put_value puts it), or NotImplemented when obj is not a plain value (pickle it "
          "instead). put_many encodes with it.")
      .def(
          "_put_many",
          [](nb::handle self, nb::sequence payloads, nb::sequence encodings, nb::handle timeout) {
            PyQueue* pq = nb::inst_ptr<PyQueue>(self);
            const double t = timeout_arg(timeout);
            const size_t n = nb::len(payloads);
            if (nb::len(encodings) != n) throw nb::value_error("one encoding per payload");
            std::vector<Payload> held(n);
            std::vector<std::string_view> msgs(n);
            std::vector<uint8_t> encs(n);
            for (size_t i = 0; i < n; ++i) {
              nb::object p = payloads[i];
              if (held[i].get(p.ptr()) != 0) throw nb::python_error();
              msgs[i] = held[i].sv();
              nb::object e = encodings[i];
              if (parse_encoding(e.ptr(), &encs[i]) != 0) throw nb::python_error();
            }
            return put_messages(pq, msgs, encs, t) == QueueStatus::kOk;
          },
          "payloads"_a, "encodings"_a, "timeout"_a.none(),
          "Put all the messages or none, in order (faster-fifo's put_many): True when put, False "
          "when they did not fit before the timeout.")
      .def(
          "_get_many",
          [](nb::handle self, size_t max_messages, uint64_t max_bytes, nb::handle timeout,
             bool hand_out, bool end_of_stream) {
            PyQueue* pq = nb::inst_ptr<PyQueue>(self);
            const double t = timeout_arg(timeout);
            std::vector<QueueMessage> msgs;
            nb::list out;
            try {
              const QueueStatus s =
                  get_or_end(pq, msgs, max_messages, max_bytes, hand_out, t, end_of_stream);
              if (s == QueueStatus::kClosed) return nb::object(nb::int_(static_cast<int>(s)));
              if (s != QueueStatus::kOk) return nb::object(out);
              for (QueueMessage& msg : msgs) out.append(nb::steal(message_tuple(self.ptr(), msg)));
            } catch (...) {
              free_unclaimed(pq, msgs);
              throw;
            }
            return nb::object(out);
          },
          "max_messages"_a, "max_bytes"_a, "timeout"_a.none(), "hand_out"_a,
          "end_of_stream"_a = false,
          "Wait for one message, then take up to max_messages (and max_bytes payload bytes, 0: "
          "no bound) at once: a list of (encoding, payload), empty when the timeout passed, or 5 "
          "(end_of_stream) when the queue is empty and every producer closed it or died.")
      .def(
          "_open_end",
          [](PyQueue& q, int side) {
            nb::gil_scoped_release nogil;
            q.q.open_end(side == 0 ? QueueEnd::kProducer : QueueEnd::kConsumer);
          },
          "side"_a, "This process holds one more of the end (0 producer, 1 consumer).")
      .def(
          "_close_end",
          [](PyQueue& q, int side) {
            nb::gil_scoped_release nogil;
            q.q.close_end(side == 0 ? QueueEnd::kProducer : QueueEnd::kConsumer);
          },
          "side"_a, "One hold of the end less (the last live one wakes the other side).")
      .def(
          "qsize", [](const PyQueue& q) { return q.q.size(); },
          "Messages in the queue now (a snapshot: other processes change it at once).")
      .def(
          "_full", [](const PyQueue& q, uint64_t length) { return q.q.full(length); },
          "length"_a = 0, "Whether a put of length bytes would wait now (a snapshot).")
      .def_prop_ro(
          "ring_bytes", [](const PyQueue& q) { return q.q.ring_bytes(); }, "The ring's size.")
      .def_prop_ro(
          "max_messages", [](const PyQueue& q) { return q.q.max_messages(); },
          "At most this many messages (0: no bound but the ring).")
      .def_prop_ro(
          "max_bytes", [](const PyQueue& q) { return q.q.max_bytes(); },
          "At most this many payload bytes (0: no bound but the ring).")
      .def(
          "send_handle", [](const PyQueue& q) { return send_handle(q.q.heap().root_segment()); },
          "The handle pickling writes (held inside shoal.hold, else pinned).")
      .def(
          "handle", [](const PyQueue& q, bool pin) { return q.q.handle(pin); }, "pin"_a = true,
          "A handle naming this queue, for shoal.attach in any process of the session.")
      .def(
          "segment", [](const PyQueue& q) { return PySegment{q.q.heap().root_segment()}; },
          "The queue's root segment (what shoal.hold holds).")
      .def(
          "_stats",
          [](const PyQueue& q) {
            const QueueStats s = q.q.stats();
            nb::dict r;
            r["size"] = s.size;
            r["bytes"] = s.bytes;
            r["puts"] = s.puts;
            r["gets"] = s.gets;
            r["recoveries"] = s.recoveries;
            r["handed_out"] = s.handed_out;
            r["handouts_reclaimed"] = s.handouts_reclaimed;
            r["handouts_copied"] = s.handouts_copied;
            r["handouts_kept"] = s.handouts_kept;
            r["heap_bytes"] = q.q.heap().stats().live_bytes;
            return r;
          },
          "Counters of the queue (snapshots): heap_bytes is its heap's used bytes (its header "
          "and ring, and every message block in the queue or handed out).")
      .def(
          "_check",
          [](PyQueue& q) {
            QueueStats s;
            {
              nb::gil_scoped_release nogil;
              s = q.q.check();
            }
            nb::dict r;
            r["size"] = s.size;
            r["bytes"] = s.bytes;
            r["out_of_band"] = s.out_of_band;
            r["stray_blocks"] = s.stray_blocks;
            r["handed_out"] = s.handed_out;
            r["handouts_reclaimed"] = s.handouts_reclaimed;
            r["recoveries"] = s.recoveries;
            return r;
          },
          "Takes the lock (repairing a dead holder's operation), frees the blocks handed to "
          "processes that are gone, and checks every invariant (CorruptSegmentError names the "
          "first failure).");
}

}  // namespace shoal::py
