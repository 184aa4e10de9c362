"""``shoal.Queue``, ``shoal.JoinableQueue`` and ``shoal.SimpleQueue``: multiprocessing's queues
over a byte ring in shared memory (the C++ ``shoal::Queue``, include/shoal/queue.hpp).

There is no feeder thread: ``put`` returns when the message is in the queue. The hot calls are
C methods of ``_shoal.QueueCore`` (python/bindings/queue_bind.cpp): they wait without the GIL,
honour the timeout, and let Ctrl-C raise KeyboardInterrupt with nothing put or taken.

Message encoding (the record's tag bits, src/layout/queue_layout.hpp): a ``bytes`` travels as
its raw bytes (encoding 0, what a C++ producer puts, so C++ and Python share a queue); a plain
value (exact None, bool, int, float, str, bytes, and lists, tuples, dicts, sets and frozensets of
them, no cycles) in the shared value codec's format, encoded and thawed in C++ by the binding
(encoding 3, ``_put_value``; docs/design/queue.md, "Message encodings"); anything else is
pickled with multiprocessing's reducers (``ForkingPickler``, protocol 5, one pickler
reused per queue object), so what a multiprocessing.Queue carries (Connections, sockets) travels
here too (encoding 1). Buffers of at least ``_OOB_THRESHOLD`` bytes that the pickle hands out of
band (ndarrays, PickleBuffer) are appended after the pickle (encoding 2); a message larger than
a quarter of the ring goes into a heap block of the queue, which the consumer takes without a
copy: the arrays it unpickles view the block, freed when the last of them goes. Design note:
docs/design/queue.md, "The Python layer".
"""

from __future__ import annotations

import copyreg
import io
import math
import os
import pickle
import queue as _stdqueue
import struct
import threading
from collections.abc import Iterable
from multiprocessing.reduction import ForkingPickler

# typing is not imported at run time (a spawn worker imports this module; typing costs it 3 ms):
# the annotations are strings, and TYPE_CHECKING is True only for type checkers.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

from . import _glue, _shoal

_BYTES, _PICKLE, _PICKLE_BUFFERS, _VALUE = 0, 1, 2, 3
_CLOSED = 5  # what _get / _get_many return at end of stream (QueueStatus::kClosed)
_PRODUCER = 0  # the end table's producer side


# The stub names ShoalError through the package (a cycle mypy cannot resolve): it is a class.
class EndOfStreamError(_shoal.ShoalError, _stdqueue.Empty, EOFError):  # type: ignore[misc]
    """A get on an empty shoal.Queue whose every producer (a process that put into it) has
    closed it or died: nothing more can come. A ``queue.Empty`` (code written for
    multiprocessing.Queue handles it as a timeout) and an ``EOFError`` (as Connection.recv)."""

    __module__ = "shoal"  # as every exported error: shoal.EndOfStreamError in reprs and pickles


# A pickled buffer at least this long travels after the pickle, not inside it: one copy into
# shared memory on the way in, none on the way out when the message goes out of band.
_OOB_THRESHOLD = 64 * 1024
# Buffers start at multiples of this in a message (numpy's widest alignment need, and a cache
# line): a block's payload is 16-aligned, so an array over it is aligned.
_ALIGN = 64
_DEFAULT_RING = 1 << 20

# This process's pid, kept current across fork: put compares it with the pid that opened the
# producer end on every call, and os.getpid() is a system call.
_PID = [os.getpid()]
os.register_at_fork(after_in_child=lambda: _PID.__setitem__(0, os.getpid()))
# A forked child co-owns the received blocks (QueueBlocks, arrays over them) it inherits: its
# parent's release or death does not free them under it (queue_bind.cpp, "Fork").
os.register_at_fork(
    before=_shoal.queue_before_fork,
    after_in_parent=_shoal.queue_after_fork_parent,
    after_in_child=_shoal.queue_after_fork_child,
)


# The dict ForkingPickler.register adds to (multiprocessing's reducers: Connections, sockets,
# bound methods...): the same object for the life of the process.
_EXTRA_REDUCERS: dict[Any, Any] = getattr(ForkingPickler, "_extra_reducers", {})


class _Pickler(ForkingPickler):
    """ForkingPickler (multiprocessing's reducers: Connections, sockets...) at protocol 5 with
    a buffer callback, which ForkingPickler's own constructor cannot pass; with its BytesIO and
    the buffers its callback set aside."""

    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.bufs: list[pickle.PickleBuffer] = []
        pickle.Pickler.__init__(self, self.buf, 5, buffer_callback=self._callback)
        self.refresh()

    def _callback(self, b: pickle.PickleBuffer) -> bool:
        # True: in band (small); False: out of band, appended after the pickle.
        if b.raw().nbytes < _OOB_THRESHOLD:
            return True
        self.bufs.append(b)
        return False

    def refresh(self) -> None:
        self.reducers = len(_EXTRA_REDUCERS)
        self.dispatch_table = copyreg.dispatch_table.copy()
        self.dispatch_table.update(_EXTRA_REDUCERS)


class _Codec:
    """One reused ForkingPickler per queue object and thread: pickling a small message does not
    build a pickler (and copy its dispatch table) each time. The thread that made the codec
    uses an attribute; other threads a thread-local one."""

    def __init__(self) -> None:
        self._tid = threading.get_ident()
        self._main: _Pickler | None = None
        self._local = threading.local()

    def _pickler(self) -> _Pickler:
        if threading.get_ident() == self._tid:
            if self._main is None:
                self._main = _Pickler()
            return self._main
        local: _Pickler | None = getattr(self._local, "p", None)
        if local is None:
            local = self._local.p = _Pickler()
        return local

    def encode(self, obj: Any) -> tuple[Any, int]:
        """(payload, encoding) for one message: bytes, or for _PICKLE_BUFFERS the list of its
        parts (put copies them once, straight into shared memory)."""
        if type(obj) is bytes:
            return obj, _BYTES
        p = self._main if self._main is not None and threading.get_ident() == self._tid else None
        if p is None:
            p = self._pickler()
        if p.reducers != len(_EXTRA_REDUCERS):
            p.refresh()  # a reducer registered since (multiprocessing.connection's)
        buf = p.buf
        try:
            p.dump(obj)
        except BaseException:
            p.bufs.clear()
            raise
        finally:
            p.clear_memo()
            data = buf.getvalue()
            buf.seek(0)
            buf.truncate()
        if not p.bufs:
            return data, _PICKLE
        raws = [b.raw() for b in p.bufs]
        p.bufs.clear()
        # [u32 nbufs | u32 0 | u64 pickle length | u64 length per buffer], pickle, then each
        # buffer at a multiple of _ALIGN.
        head = struct.pack(f"<IIQ{len(raws)}Q", len(raws), 0, len(data), *(r.nbytes for r in raws))
        parts: list[Any] = [head, data]
        pos = len(head) + len(data)
        for r in raws:
            pad = -pos % _ALIGN
            if pad:
                parts.append(bytes(pad))
            parts.append(r)
            pos += pad + r.nbytes
        return parts, _PICKLE_BUFFERS  # a list: put copies the parts once, into shared memory


def _decode(encoding: int, payload: Any) -> Any:
    if encoding == _VALUE:
        return payload  # thawed by the binding
    if encoding == _BYTES:
        return payload if type(payload) is bytes else bytes(payload)
    if encoding == _PICKLE:
        return pickle.loads(payload)
    mv = memoryview(payload)
    try:
        n, _, plen = struct.unpack_from("<IIQ", mv)
        lens = struct.unpack_from(f"<{n}Q", mv, 16)
        pos = 16 + 8 * n
        data = mv[pos : pos + plen]
        pos += plen
        buffers = []
        for ln in lens:
            pos += -pos % _ALIGN
            if pos + ln > len(mv):
                raise ValueError("buffer past the end")
            buffers.append(mv[pos : pos + ln])
            pos += ln
    except (struct.error, ValueError) as e:
        raise _shoal.DecodeError(f"shoal.Queue: a corrupt message with buffers ({e})") from None
    return pickle.loads(data, buffers=buffers)


class Queue(_shoal.QueueCore):
    """A process-shared FIFO queue: multiprocessing.Queue's API over shared memory.

    ``Queue(maxsize=0, *, max_size_bytes=0, ring_bytes=2**20)``: at most ``maxsize`` messages
    and ``max_size_bytes`` bytes of encoded messages (0 or less: no bound but memory; the ring
    holds small messages, big ones go to blocks of the queue's memory). Any number of producer
    and consumer processes; it pickles to a handle, so it can be a Process or Pool argument, or
    travel through another queue, under fork, spawn and forkserver.

    ``end_of_stream=True`` (kept when the queue is pickled to another process): a get on the
    empty queue whose every producer -- a process that put into it -- has closed it or died
    raises ``EndOfStreamError`` (a ``queue.Empty`` and an ``EOFError``) instead of waiting; off
    by default, since a producer that has not put yet does not count (docs/design/queue.md,
    "End of stream for shoal.Queue").

    ``put`` returns when the message is in the queue (there is no feeder thread, hence nothing
    to join); a process killed at any point of ``put`` or ``get`` never wedges it (a consumer
    killed inside ``get`` loses at most the message it was taking). ``qsize()`` is the number of
    messages in the queue now, a snapshot that other processes change at once.
    """

    def __init__(
        self,
        maxsize: int = 0,
        *,
        max_size_bytes: int = 0,
        ring_bytes: int = _DEFAULT_RING,
        end_of_stream: bool = False,
        ctx: Any = None,
    ) -> None:
        maxsize = max(int(maxsize), 0)
        max_size_bytes = max(int(max_size_bytes), 0)
        super().__init__(None, int(ring_bytes), maxsize, max_size_bytes, self._joinable)
        self._init_local()
        self._end_of_stream = bool(end_of_stream)

    _joinable = False

    def _init_local(self) -> None:
        self._closed = False
        self._codec = _Codec()
        # The pid that holds the producer end through this object (None: none yet). A process
        # becomes a producer at its first put and stops at close() or its death; a forked child
        # inherits the object but not the hold, so the pid is checked.
        self._producer: int | None = None
        self._end_of_stream = False  # whether get reports end of stream (pickled along)

    def _become_producer(self) -> None:
        pid = _PID[0]
        if self._producer != pid:
            self._open_end(_PRODUCER)
            self._producer = pid

    @classmethod
    def _from(cls, source: Any) -> Any:
        obj = cls.__new__(cls)
        _shoal.QueueCore.__init__(obj, source)
        obj._init_local()
        return obj

    def __reduce__(self) -> tuple[Any, ...]:
        return (_glue.rebuild_queue, (type(self), self.send_handle(), self._end_of_stream))

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"Queue {self!r} is closed")

    # ---- put ----

    def put(self, obj: Any, block: bool = True, timeout: float | None = None) -> None:
        """Put obj in the queue, waiting for room while it is full (block, for at most timeout
        seconds): queue.Full when there was none. ValueError after close()."""
        if self._closed:
            raise ValueError(f"Queue {self!r} is closed")
        if self._producer != _PID[0]:
            self._become_producer()
        # The binding takes the timeout as is: None (for ever), seconds (negative: 0), NaN:
        # ValueError.
        if type(obj) is bytes:
            ok = self._put(obj, _BYTES, timeout if block else 0.0)
        elif (ok := self._put_value(obj, timeout if block else 0.0)) is NotImplemented:
            payload, enc = self._codec.encode(obj)
            if enc == _PICKLE_BUFFERS:
                ok = self._put_parts(payload, enc, timeout if block else 0.0)
            else:
                ok = self._put(payload, enc, timeout if block else 0.0)
        if not ok:
            raise _stdqueue.Full

    def put_nowait(self, obj: Any) -> None:
        """put(obj, False): queue.Full at once when there is no room."""
        self.put(obj, False)

    def put_many(self, xs: Iterable[Any], block: bool = True, timeout: float | None = None) -> None:
        """Put every item of xs, in order, all or none (faster-fifo's put_many): queue.Full when
        they did not all fit in time."""
        self._check_open()
        self._become_producer()
        payloads: list[Any] = []
        encodings: list[int] = []
        for x in xs:
            # As put encodes: bytes raw, a plain value by the value codec, anything else
            # pickled with its big buffers after the pickle (one message of its parts here).
            if type(x) is bytes:
                p, e = x, _BYTES
            elif (p := self._encode_value(x)) is not NotImplemented:
                e = _VALUE
            else:
                p, e = self._codec.encode(x)
                if e == _PICKLE_BUFFERS:
                    p = b"".join(p)
            payloads.append(p)
            encodings.append(e)
        if not payloads:
            return
        if not self._put_many(payloads, encodings, _timeout(block, timeout)):
            raise _stdqueue.Full

    # ---- get ----

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Remove and return the oldest item, waiting for one (block, for at most timeout
        seconds): queue.Empty when none came; EndOfStreamError (a queue.Empty and an EOFError)
        when the queue is empty and every process that put into it has closed it or died.
        ValueError after close()."""
        if self._closed:
            raise ValueError(f"Queue {self!r} is closed")
        m = self._get(timeout if block else 0.0, True, self._end_of_stream)
        if m is None:
            raise _stdqueue.Empty
        if isinstance(m, int):
            raise EndOfStreamError(
                "the queue is empty and every process that put into it has closed it or died"
            )
        enc, payload = m
        if enc == _VALUE or (enc == _BYTES and type(payload) is bytes):
            return payload
        return _decode(enc, payload)

    def get_nowait(self) -> Any:
        """get(False): queue.Empty at once when the queue is empty."""
        return self.get(False)

    def get_many(
        self,
        block: bool = True,
        timeout: float | None = None,
        max_messages_to_get: int = 1_000_000_000,
        max_bytes_to_get: int = 0,
    ) -> list[Any]:
        """Wait for one item as get() does, then take as many as are there, up to
        max_messages_to_get (and max_bytes_to_get encoded bytes, 0: no bound), in one step
        (faster-fifo's get_many): a non-empty list, or queue.Empty."""
        self._check_open()
        ms = self._get_many(
            max(int(max_messages_to_get), 1),
            max(int(max_bytes_to_get), 0),
            _timeout(block, timeout),
            True,
            self._end_of_stream,
        )
        if isinstance(ms, int):
            raise EndOfStreamError(
                "the queue is empty and every process that put into it has closed it or died"
            )
        if not ms:
            raise _stdqueue.Empty
        return [_decode(e, p) for e, p in ms]

    # ---- state ----

    def empty(self) -> bool:
        """Whether the queue holds no message now (a snapshot)."""
        return bool(self.qsize() == 0)

    def full(self) -> bool:
        """Whether a put of a small message would wait now (a snapshot)."""
        return bool(self._full(0))

    @property
    def maxsize(self) -> int:
        """The bound on messages (0: none)."""
        return int(self.max_messages)

    @property
    def max_size_bytes(self) -> int:
        """The bound on encoded message bytes (faster-fifo's name; 0: none)."""
        return int(self.max_bytes)

    def close(self) -> None:
        """This object can no longer put or get (ValueError); the queue lives on in the other
        processes, and goes when the last one drops it. Nothing is flushed: put already did.
        If this object made its process a producer (it put), the process stops being one:
        once no producer is left, a get on the empty queue raises EndOfStreamError."""
        if not self._closed and self._producer == _PID[0]:
            self._close_end(_PRODUCER)
        self._producer = None
        self._closed = True

    def join_thread(self) -> None:
        """Nothing to wait for (no feeder thread): returns at once. As multiprocessing's, only
        after close() (ValueError before)."""
        if not self._closed:
            raise ValueError(f"Queue {self!r} not closed")

    def cancel_join_thread(self) -> None:
        """Nothing to cancel (no feeder thread): kept for multiprocessing's API."""

    def __repr__(self) -> str:
        bounds = f"maxsize={self.maxsize}" if self.maxsize else "unbounded"
        return f"<shoal.{type(self).__name__} qsize={self.qsize()} {bounds} pid={os.getpid()}>"


class JoinableQueue(Queue):
    """A Queue whose consumers mark each item done (``task_done``) and whose ``join`` waits
    until every item put has been marked done (multiprocessing.JoinableQueue).

    The count is kept per process in the queue (its C++ core): a consumer killed after getting
    items, in ``get`` or later, has them counted done, so ``join`` never waits for ever on it.
    """

    _joinable = True

    def task_done(self) -> None:
        """Mark one item got by this process done (or, when this process holds none, one got
        by another). ValueError when called more times than items were put."""
        self._task_done()

    def join(self) -> None:
        """Wait until every item put has been marked done. An item whose consumer was killed
        after getting it counts as done, so join never waits for ever on a dead process."""
        self._join(None)


class SimpleQueue(Queue):
    """An unbounded queue with only put, get, empty and close (multiprocessing.SimpleQueue)."""

    def __init__(
        self, *, ring_bytes: int = _DEFAULT_RING, end_of_stream: bool = False, ctx: Any = None
    ) -> None:
        super().__init__(0, ring_bytes=ring_bytes, end_of_stream=end_of_stream)

    def put(self, obj: Any) -> None:  # type: ignore[override]
        """Put obj in the queue (waits only while the ring is full of unread messages)."""
        Queue.put(self, obj)

    def get(self) -> Any:  # type: ignore[override]
        """Remove and return the oldest item, waiting for one."""
        return Queue.get(self)


def _timeout(block: bool, timeout: float | None) -> float | None:
    """The bindings' timeout: None (wait for ever) or seconds >= 0 (0: do not wait)."""
    if not block:
        return 0.0
    if timeout is None:
        return None
    t = float(timeout)
    if math.isnan(t):
        raise ValueError("timeout is NaN")
    return max(t, 0.0)


def from_heap_queue(heap: _shoal.Heap) -> Queue:
    """The Queue a heap holds (shoal.attach's opener for a heap whose root names a queue)."""
    return Queue._from(heap)  # type: ignore[no-any-return]
