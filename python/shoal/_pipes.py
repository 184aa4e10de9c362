"""shoal.Pipe (issue 16): multiprocessing.Pipe's API and outcomes over shared memory.

``Pipe(duplex=True)`` returns two :class:`Connection` objects; each direction is one shoal
queue (the C++ ``shoal::Queue``, ``_shoal.PipeQueue``), so a message is one copy in and one copy
out, with no system call while both sides are awake. A Connection pickles to a handle: it works
as a Process or Pool argument and through queues under fork, spawn and forkserver.

End of stream: each queue records which processes hold each of its ends (the end table of
``docs/design/queue.md``), so ``recv`` raises ``EOFError`` once the queue is empty and every
holder of the other end closed it or died -- as the stdlib does when a pipe's last writer
closes -- and ``send`` raises ``BrokenPipeError`` when every reader is gone.

Selectors: ``fileno()`` returns the read end of a FIFO beside the queue (in shoal's runtime
directory). Every writer of the queue keeps the FIFO's write end open, so the kernel reports
the FIFO as hung up (readable) when the last writer closes or dies; and once a reader has
called ``fileno()`` (a flag in the queue's shared header), each ``send`` also writes one byte to
it, so ``multiprocessing.connection.wait`` sees a message arrive. Without ``fileno()`` a send
makes no system call.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import stat
import threading
import weakref
from multiprocessing import BufferTooShort
from multiprocessing.reduction import ForkingPickler
from typing import Any, Self

from . import _shoal

__all__ = ["Connection", "Pipe"]

# QueueStatus (include/shoal/queue.hpp) as _shoal.PipeQueue returns it.
_OK, _FULL, _EMPTY, _CLOSED = 0, 1, 2, 5
_WATCHED = 8
_PRODUCER, _CONSUMER = 0, 1
# Messages above a quarter of the ring go out of band (a heap block each): the ring only needs
# room for many small ones.
_RING_BYTES = 1 << 18

_live: weakref.WeakSet[Connection] = weakref.WeakSet()
_live_lock = threading.Lock()


def _fifo_path(q: Any) -> str:
    # "<session>.pipe-<segment id>.fifo": one name per queue for every process; `shoal gc`
    # removes it with the session's other runtime files once the session is dead.
    return os.path.join(_shoal.runtime_dir(True), f"{q.ident()}.fifo")


def _make_fifo(path: str) -> None:
    try:
        os.mkfifo(path, 0o600)
    except FileExistsError:
        if not stat.S_ISFIFO(os.stat(path).st_mode):
            raise OSError(errno.EEXIST, "not a FIFO", path) from None


def _open_fifo(path: str, flags: int) -> int:
    # O_NONBLOCK: a read end opens at once; a write end fails with ENXIO when no reader holds
    # the FIFO (then no one waits in a selector on it: the writer does without).
    try:
        return os.open(path, flags | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        if e.errno in (errno.ENXIO, errno.ENOENT):
            return -1
        raise


def _hung_up(fd: int) -> bool:
    p = select.poll()
    p.register(fd, select.POLLIN)
    return any(ev & select.POLLHUP for _, ev in p.poll(0))


def _ensure_fifo(q: Any) -> str:
    path = _fifo_path(q)
    _make_fifo(path)
    return path


class Connection:
    """One end of a :func:`Pipe`: multiprocessing.connection.Connection's API and outcomes."""

    __slots__ = (
        "__weakref__",
        "_closed",
        "_fork_lent",
        "_pending",
        "_readable",
        "_rfd",
        "_rq",
        "_wfd",
        "_wpath",
        "_wq",
        "_writable",
    )

    def __init__(self, rq: Any, wq: Any, *, lent: tuple[int, int] = (0, 0)) -> None:
        # rq: the queue this end reads (consumer end), wq: the one it writes (producer end).
        self._rq = rq
        self._wq = wq
        self._readable = rq is not None
        self._writable = wq is not None
        self._closed = False
        self._pending: bytes | tuple[int, Any] | None = None
        self._rfd = -1
        self._wfd = -1
        self._wpath: str | None = None
        self._fork_lent: list[tuple[Any, int, int]] = []
        opened: list[tuple[Any, int]] = []
        try:
            if rq is not None:
                rq.claim_lent(_CONSUMER, lent[0])
                opened.append((rq, _CONSUMER))
                # The read end of the FIFO first: a writer's open (O_NONBLOCK) needs a reader.
                self._rfd = _open_fifo(_ensure_fifo(rq), os.O_RDONLY)
            if wq is not None:
                wq.claim_lent(_PRODUCER, lent[1])
                opened.append((wq, _PRODUCER))
                self._wpath = _fifo_path(wq)
                self._open_wfd()
        except BaseException:
            # Half made: give back what was opened, or the peer would never see end of stream.
            self._closed = True
            for q, side in opened:
                with contextlib.suppress(Exception):
                    q.close_end(side)
            for fd in (self._rfd, self._wfd):
                if fd >= 0:
                    os.close(fd)
            raise
        with _live_lock:
            _live.add(self)

    # ---- the stdlib's checks, with its messages --------------------------------------------
    def _check_closed(self) -> None:
        if self._closed:
            raise OSError("handle is closed")

    def _check_readable(self) -> None:
        if not self._readable:
            raise OSError("connection is write-only")

    def _check_writable(self) -> None:
        if not self._writable:
            raise OSError("connection is read-only")

    @property
    def closed(self) -> bool:
        """True if the connection is closed."""
        return self._closed

    @property
    def readable(self) -> bool:
        """True if the connection is readable."""
        return self._readable

    @property
    def writable(self) -> bool:
        """True if the connection is writable."""
        return self._writable

    def fileno(self) -> int:
        """A descriptor that selectors report readable when a message (or end of stream) is
        there: for multiprocessing.connection.wait. Calling it makes every later send signal it.
        """
        self._check_closed()
        if self._rq is None:
            if self._wfd < 0:
                raise OSError("write-only connection: no descriptor to wait on")
            return self._wfd
        if self._rfd < 0:
            self._rfd = _open_fifo(_ensure_fifo(self._rq), os.O_RDONLY)
        elif self._rq.lent_holds(_PRODUCER) > 0 and _hung_up(self._rfd):
            # Every writer's descriptor is gone but a hold of the write end is in transit
            # (pickled, not yet rebuilt). A read end opened now reports no hang-up until a
            # writer has come and gone again (Linux's pipe_poll compares the writers' counter
            # with the one at open), so it waits correctly for the holder in transit. (Without
            # a hold in transit, a hang-up is a writer's death or close: it stays readable.)
            fd = _open_fifo(_fifo_path(self._rq), os.O_RDONLY)
            if fd >= 0:
                os.close(self._rfd)
                self._rfd = fd
        self._rq.set_watched(_CONSUMER, True)
        # Messages sent before the flag was set signalled nothing: signal them now.
        if self._pending is not None or self._rq.size() > 0:
            self._signal_self()
        return self._rfd

    def _signal_self(self) -> None:
        assert self._rq is not None
        fd = _open_fifo(_fifo_path(self._rq), os.O_WRONLY)
        if fd >= 0:
            try:
                os.write(fd, b"\0")
            except BlockingIOError:
                pass  # full: readable already
            finally:
                os.close(fd)

    def _drain(self) -> None:
        # Level-triggered: after the queue empties, empty the FIFO; if a message came in
        # meanwhile, signal again (a spurious wake-up is possible, a lost one is not).
        try:
            # A short read took all there was (a FIFO read returns what it holds, up to n).
            while len(os.read(self._rfd, 4096)) == 4096:
                pass
        except BlockingIOError:
            pass
        if self._rq is not None and self._rq.size() > 0:
            self._signal_self()

    def close(self) -> None:
        """Close the connection; the other end's recv then raises EOFError once it has read
        what is left."""
        if self._closed:
            return
        self._closed = True
        self._pending = None
        with _live_lock:
            _live.discard(self)
        try:
            if self._rq is not None:
                self._rq.close_end(_CONSUMER)
            if self._wq is not None:
                self._wq.close_end(_PRODUCER)
        finally:
            for fd in (self._rfd, self._wfd):
                if fd >= 0:
                    os.close(fd)
            self._rfd = self._wfd = -1
            for q in (self._rq, self._wq):
                if q is not None:
                    _unlink_fifo_if_unused(q)
            self._rq = self._wq = None

    def __del__(self) -> None:
        # Interpreter shutdown or a broken segment: nothing left to tell.
        with contextlib.suppress(Exception):
            self.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- sending -----------------------------------------------------------------------
    def send_bytes(self, buf: Any, offset: int = 0, size: int | None = None) -> None:
        """Send the bytes data from a bytes-like object."""
        self._check_closed()
        self._check_writable()
        m = memoryview(buf)
        if m.itemsize > 1:
            m = m.cast("B")
        n = m.nbytes
        if offset < 0:
            raise ValueError("offset is negative")
        if n < offset:
            raise ValueError("buffer length < offset")
        if size is None:
            size = n - offset
        elif size < 0:
            raise ValueError("size is negative")
        elif offset + size > n:
            raise ValueError("buffer length < offset + size")
        self._send(m[offset : offset + size])

    def send(self, obj: Any) -> None:
        """Send a (picklable) object."""
        self._check_closed()
        self._check_writable()
        # A plain value (None, bool, int, float, str, bytes, and lists, tuples, dicts, sets,
        # frozensets of them) in the shared value codec's format, encoded in C++ (as
        # shoal.Queue's, docs/design/queue.md "Message encodings"); anything else pickled.
        assert self._wq is not None
        r = self._wq.send_value(obj, -1.0)
        if r is NotImplemented:
            self._send(ForkingPickler.dumps(obj))
        elif r & _WATCHED:
            self._signal_peer()
        elif r == _CLOSED:
            raise BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE))

    def _send(self, data: Any) -> None:
        assert self._wq is not None
        r = self._wq.send(data, -1.0)
        if r & _WATCHED:
            self._signal_peer()
        elif r == _CLOSED:
            raise BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE))

    def _open_wfd(self) -> None:
        # Held while this end is open: the kernel reports the reader's FIFO hung up (readable)
        # once every writer's descriptor is gone, closed or with its process.
        if self._wfd < 0 and self._wpath is not None:
            self._wfd = _open_fifo(self._wpath, os.O_WRONLY)

    def _signal_peer(self) -> None:
        self._open_wfd()
        if self._wfd >= 0:
            try:
                os.write(self._wfd, b"\0")
            except BlockingIOError:
                pass  # full: readable already
            except BrokenPipeError:
                pass  # no reader holds the FIFO: nobody waits on it

    # ---- receiving ---------------------------------------------------------------------
    def _take(self, timeout: float) -> bytes | tuple[int, Any] | None:
        """A message (bytes, or (3, value) for a value message, thawed by the binding), or None
        at the timeout; EOFError at end of stream."""
        if self._pending is not None:
            data, self._pending = self._pending, None
            return data
        assert self._rq is not None
        r = self._rq.recv(timeout)
        if not isinstance(r, int):
            # Only once a reader asked for the FIFO (fileno(), in any process): before that no
            # byte is written, and a recv makes no system call.
            if self._rfd >= 0 and self._rq.size() == 0 and self._rq.watched(_CONSUMER):
                self._drain()
            return r  # type: ignore[no-any-return]
        if r == _CLOSED:
            raise EOFError
        return None

    def recv_bytes(self, maxlength: int | None = None) -> bytes:
        """Receive bytes data as a bytes object."""
        self._check_closed()
        self._check_readable()
        if maxlength is not None and maxlength < 0:
            raise ValueError("negative maxlength")
        data = self._take_bytes()
        if maxlength is not None and len(data) > maxlength:
            # As the stdlib's _bad_message_length (its stream is out of step then).
            if self._writable:
                self._readable = False
            else:
                self.close()
            raise OSError("bad message length")
        return data

    def recv_bytes_into(self, buf: Any, offset: int = 0) -> int:
        """Receive bytes data into a writeable bytes-like object; return the bytes read."""
        self._check_closed()
        self._check_readable()
        with memoryview(buf) as m:
            itemsize = m.itemsize
            bytesize = itemsize * len(m)
            if offset < 0:
                raise ValueError("negative offset")
            elif offset > bytesize:
                raise ValueError("offset too large")
            data = self._take_bytes()
            size = len(data)
            if bytesize < offset + size:
                raise BufferTooShort(data)
            m.cast("B")[offset : offset + size] = data
            return size

    def _take_bytes(self) -> bytes:
        """A message as bytes: a value message as its pickle, so that send(obj) then
        recv_bytes() gives what the stdlib's would (a pickle of obj)."""
        data = self._take(-1.0)
        assert data is not None
        if isinstance(data, tuple):
            return bytes(ForkingPickler.dumps(data[1]))
        return data

    def recv(self) -> Any:
        """Receive a (picklable) object."""
        self._check_closed()
        self._check_readable()
        data = self._take(-1.0)
        assert data is not None
        if isinstance(data, tuple):
            return data[1]  # a value message, thawed by the binding
        return ForkingPickler.loads(data)

    def poll(self, timeout: float | None = 0.0) -> bool:
        """Whether there is any input available to be read (or end of stream)."""
        self._check_closed()
        self._check_readable()
        if self._pending is not None:
            return True
        t = -1.0 if timeout is None else max(float(timeout), 0.0)
        try:
            data = self._take(t)
        except EOFError:
            return True  # the stdlib's poll says True; recv then raises EOFError
        if data is None:
            return False
        self._pending = data
        return True

    # ---- pickling: a handle; the end stays open while it travels ------------------------
    def __reduce__(self) -> tuple[Any, ...]:
        self._check_closed()
        r = w = None
        if self._rq is not None:
            r = (self._rq.handle(), self._rq.lend_end(_CONSUMER))
        if self._wq is not None:
            w = (self._wq.handle(), self._wq.lend_end(_PRODUCER))
        return (_rebuild_connection, (r, w))

    def __repr__(self) -> str:
        state = (
            "closed"
            if self._closed
            else ("r" if self._readable else "") + ("w" if self._writable else "")
        )
        return f"<shoal.Connection {state}>"


def _rebuild_connection(r: tuple[str, int] | None, w: tuple[str, int] | None) -> Connection:
    rq = _shoal.PipeQueue.attach(r[0]) if r is not None else None
    wq = _shoal.PipeQueue.attach(w[0]) if w is not None else None
    return Connection(rq, wq, lent=(r[1] if r else 0, w[1] if w else 0))


def _unlink_fifo_if_unused(q: Any) -> None:
    # The last holder of either end removes the FIFO (a death leaves it in the runtime dir).
    try:
        if q.holders(_PRODUCER) == 0 and q.holders(_CONSUMER) == 0:
            os.unlink(_fifo_path(q))
    except OSError:
        pass


def Pipe(duplex: bool = True) -> tuple[Connection, Connection]:
    """Returns a pair (conn1, conn2) of Connection objects, as multiprocessing.Pipe does: with
    duplex, each sends to the other; else conn1 only receives and conn2 only sends.
    """
    q1 = _shoal.PipeQueue.create(_RING_BYTES)
    _ensure_fifo(q1)
    if not duplex:
        reader = Connection(q1, None)
        return reader, Connection(None, q1)
    q2 = _shoal.PipeQueue.create(_RING_BYTES)
    _ensure_fifo(q2)
    # conn1 reads q1 and writes q2. A FIFO's write end opens only once its read end is open:
    # conn1's opens before conn2 exists, so it opens again when both are there.
    c1 = Connection(q1, q2)
    c2 = Connection(q2, q1)
    c1._open_wfd()
    return c1, c2


# ---- fork: a forked child holds what its parent held, as with inherited descriptors ------
def _before_fork() -> None:
    with _live_lock:
        conns = list(_live)
    for c in conns:
        lent: list[tuple[Any, int, int]] = []
        # A broken queue: the child does without (its ends are then not counted).
        with contextlib.suppress(Exception):
            if c._rq is not None:
                lent.append((c._rq, _CONSUMER, c._rq.lend_end(_CONSUMER)))
            if c._wq is not None:
                lent.append((c._wq, _PRODUCER, c._wq.lend_end(_PRODUCER)))
        c._fork_lent = lent


def _after_fork_parent() -> None:
    with _live_lock:
        conns = list(_live)
    for c in conns:
        c._fork_lent = []


def _after_fork_child() -> None:
    global _live_lock
    _live_lock = threading.Lock()
    for c in list(_live):
        # A message poll() took out of the queue is the parent's: delivered once, not twice.
        c._pending = None
        lent, c._fork_lent = c._fork_lent, []
        for q, side, token in lent:
            with contextlib.suppress(Exception):
                q.claim_lent(side, token)


os.register_at_fork(
    before=_before_fork, after_in_parent=_after_fork_parent, after_in_child=_after_fork_child
)
