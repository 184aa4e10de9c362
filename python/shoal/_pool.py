"""``shoal.Pool`` and ``shoal.ProcessPoolExecutor``: multiprocessing.Pool's API over shoal
queues, that pickles a call's function once and never hangs when a worker dies.

The engine (design note: docs/design/pool.md):

- one task queue and one result queue (``shoal.Queue``); a task message is one chunk
  ``(job, fn_ref, start, mode, args, refs, floor)``; a result message is one batch of a chunk's
  results ``(job, first, values, errors, seconds)``, sent at the chunk's end and every
  _FLUSH_SECONDS of a long chunk; results stay per task (``errors`` maps an offset to its
  task's error) whatever the chunking;
- with ``chunksize=None`` chunks are cut when needed (a few per worker out at a time): one
  task each until the first results measure the call's task cost, then about _CHUNK_SECONDS
  of work each;
- a call's function (a ``functools.partial`` with its bound arguments included) is pickled once;
  a big pickle goes once into a shoal segment held for the call (``fn_ref`` is then its held
  handle, a few dozen bytes); each worker unpickles it at most once per call; so are the
  initializer and initargs, once for the pool (under spawn and forkserver; fork inherits them);
- so is an argument object that recurs by identity across the call's tasks: the chunks carry
  an ``_Arg(key)`` in its place and ``refs`` (key -> its one pickle); a worker unpickles it once
  per call and drops it when the call is over (``floor``: the oldest call still outstanding);
  the call's shoal arguments are held (``shoal.hold``) for the call, so they pickle with no pin;
- each worker writes what it is running into its row of a shared ``int64`` table (its *slot*):
  ``[state, job, chunk start, chunk end, index]``, the index before each task;
- a supervisor thread in the parent waits on the workers' sentinels; when one exits it reads the
  dead worker's slot, puts a death notice into the result queue (after everything the worker
  put, as the worker is gone) and starts a replacement (or, after _START_DEATHS deaths in a row
  before the initializer returned, breaks the pool: BrokenPoolError). The result thread, the
  only one that changes the jobs' state, then fails the task the worker was running with
  WorkerDiedError and sends again the rest of its chunk that has no result (the tasks whose
  results were still in the dead worker's batch run twice).
"""

from __future__ import annotations

import atexit
import bisect
import collections
import concurrent.futures as _cf
import contextlib
import functools
import itertools
import math
import os
import queue as _stdqueue
import signal
import sys
import threading
import time
import traceback
import weakref
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures.process import BrokenProcessPool as _BrokenProcessPool
from multiprocessing import TimeoutError as _MpTimeoutError
from multiprocessing import connection as _mpconn
from multiprocessing import get_context
from multiprocessing.reduction import ForkingPickler
from typing import Any, Self

from . import _shoal
from ._hold import hold as _hold
from ._pool_worker import (
    _COLS,
    _IDLE,
    _KW,
    _NEW,
    _ONE,
    _RUNNING,
    _S_END,
    _S_JOB,
    _S_START,
    _S_STATE,
    _STAR,
    _Arg,
    _Pickled,
    _worker,
)
from ._queues import Queue

__all__ = [
    "AsyncResult",
    "BrokenPoolError",
    "MapResult",
    "Pool",
    "ProcessPoolExecutor",
    "WorkerDiedError",
]

# The task and result queues' rings: a quarter of the queues' default (1 MiB). Creating a
# queue reserves its ring's pages (fallocate), most of a pool's start-up beyond the processes
# and threads under fork; a chunk of tasks or a batch of results over a quarter of the ring
# (64 KiB) travels in a heap block instead.
_RING = 1 << 18
# A function pickle longer than this goes into shared memory once per call instead of riding
# in every chunk message.
_INLINE_FN = 1024
# Automatic chunks aim at this many seconds of work each; _TASK_OVERHEAD is what the pool adds
# per task beyond the measured seconds (the parent's share: the chunk's pickle, the result's
# delivery).
_CHUNK_SECONDS = 0.01
_TASK_OVERHEAD = 1e-6
_MAX_AUTO_CHUNK = 1 << 14
# Automatic chunks are cut when needed, not all at once: at most this many of a call's chunks
# per worker are out (sent, not yet complete), so each is sized from the latest measurement.
_AHEAD = 2
# The pool is broken when a row's workers died this many times in a row before their
# initializer returned (a spawn child that cannot start, an initializer that kills its process),
# with no other worker past its initializer meanwhile.
_START_DEATHS = 3
# With calls outstanding and no result for this long, the result thread looks for lost tasks.
_SWEEP_SECONDS = 0.25
# Arguments of these types are never looked up by identity (small, and interned or cheap).
_ATOMIC = frozenset({int, float, bool, type(None), str, bytes, complex})


# The stub re-exports ShoalError from shoal itself, a cycle mypy cannot resolve here.
class WorkerDiedError(_shoal.ShoalError):  # type: ignore[misc]
    """A pool worker died (killed by a signal, os._exit, a crash) while running this task.

    ``pid``, ``exitcode`` (negative: the signal number), ``signal`` (its name, or None) and
    ``task`` (a description of the task: the call's function and the task's index) say which.
    The pool replaced the worker and sent the rest of its chunk again; other tasks go on.
    """

    __module__ = "shoal"  # as every exported error: shoal.WorkerDiedError in reprs and pickles

    def __init__(self, pid: int, exitcode: int | None, task: str) -> None:
        self.pid = pid
        self.exitcode = exitcode
        self.signal = _signal_name(exitcode)
        self.task = task
        how = f"killed by {self.signal}" if self.signal else f"exit code {exitcode}"
        super().__init__(f"pool worker {pid} died ({how}) while running {task}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (WorkerDiedError, (self.pid, self.exitcode, self.task))


class BrokenPoolError(_shoal.ShoalError, _BrokenProcessPool):  # type: ignore[misc]
    """The pool cannot run tasks: its workers died, _START_DEATHS times in a row in one of its
    rows, before their initializer returned (a spawn child that cannot import its main module,
    an initializer that kills its process). Every outstanding task fails with it and every
    new call raises it; no worker is started again. ``pid``, ``exitcode`` and ``signal`` name
    the last such death.

    A ``concurrent.futures.process.BrokenProcessPool`` too, as ProcessPoolExecutor's users
    expect.
    """

    __module__ = "shoal"

    def __init__(self, pid: int, exitcode: int | None, deaths: int) -> None:
        self.pid = pid
        self.exitcode = exitcode
        self.signal = _signal_name(exitcode)
        self.deaths = deaths
        how = f"killed by {self.signal}" if self.signal else f"exit code {exitcode}"
        super().__init__(
            f"shoal.Pool is broken: {deaths} workers in a row died before their initializer "
            f"returned (the last, pid {pid}: {how}); no worker is started again"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (BrokenPoolError, (self.pid, self.exitcode, self.deaths))


def _signal_name(exitcode: int | None) -> str | None:
    """The name of the signal that ended a process (a negative exit code), else None."""
    if exitcode is None or exitcode >= 0:
        return None
    try:
        return signal.Signals(-exitcode).name
    except ValueError:
        return f"signal {-exitcode}"


# ---------------------------------------------------------------------------------------------
# The worker: shoal/_pool_worker.py (apart, so that a spawn or forkserver worker imports little)


# ---------------------------------------------------------------------------------------------
# Results
#
# A job's sink takes its results a batch at a time, from the result thread:
# ``_batch(first, vals, errs)``: tasks first .. first + len(vals) - 1, each batch delivered
# once (the pool drops a task's second result), errs None or offset -> that task's error
# (vals holds None there).


class AsyncResult:
    """The result of one ``apply_async`` (multiprocessing.pool.AsyncResult)."""

    def __init__(self, pool: Pool, callback: Any, error_callback: Any) -> None:
        self._pool = pool
        self._event = threading.Event()
        self._callback = callback
        self._error_callback = error_callback
        self._value: Any = None
        self._success = False

    def ready(self) -> bool:
        return self._event.is_set()

    def successful(self) -> bool:
        if not self.ready():
            raise ValueError(f"{self!r} not ready")
        return self._success

    def wait(self, timeout: float | None = None) -> None:
        self._pool._wait_event(self._event, timeout)

    def get(self, timeout: float | None = None) -> Any:
        self.wait(timeout)
        if not self.ready():
            raise _MpTimeoutError
        if self._success:
            return self._value
        raise self._value

    # Called by the result thread (one task).
    def _batch(self, first: int, vals: list[Any], errs: dict[int, Any] | None) -> None:
        if errs:
            self._finish(False, errs[0])
        else:
            self._finish(True, vals[0])

    def _finish(self, ok: bool, value: Any) -> None:
        self._success, self._value = ok, value
        try:
            if ok and self._callback is not None:
                self._callback(value)
            if not ok and self._error_callback is not None:
                self._error_callback(value)
        finally:
            self._event.set()


ApplyResult = AsyncResult


class MapResult(AsyncResult):
    """The result of one ``map_async``/``starmap_async``: a list, or the first task's error."""

    def __init__(self, pool: Pool, n: int, callback: Any, error_callback: Any) -> None:
        super().__init__(pool, callback, error_callback)
        self._list: list[Any] = [None] * n
        self._error: BaseException | None = None

    def _batch(self, first: int, vals: list[Any], errs: dict[int, Any] | None) -> None:
        self._list[first : first + len(vals)] = vals
        if errs and self._error is None:
            self._error = errs[min(errs)]

    def _complete(self) -> None:
        if self._error is None:
            self._finish(True, self._list)
        else:
            self._list = []
            self._finish(False, self._error)


class _FutureResult:
    """A concurrent.futures.Future as a job's sink (one task)."""

    def __init__(self, fut: _cf.Future[Any]) -> None:
        self.fut = fut

    def _batch(self, first: int, vals: list[Any], errs: dict[int, Any] | None) -> None:
        if self.fut.cancelled():
            return
        if errs:
            self.fut.set_exception(errs[0])
        else:
            self.fut.set_result(vals[0])


class _Err:
    """A task's error in an IMapIterator's items (next raises it)."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class IMapIterator:
    """The iterator of ``imap`` (ordered) and ``imap_unordered``: ``next(timeout=None)``."""

    def __init__(self, pool: Pool, ordered: bool) -> None:
        self._pool = pool
        self._ordered = ordered
        self._cond = threading.Condition(threading.Lock())
        # Results ready to yield, in order (an _Err for a failed task); for imap, the batches
        # that came before their turn, by first index. The result thread adds under _cond; a
        # consumer takes with one popleft (atomic), and waits under _cond when there is none.
        self._items: collections.deque[Any] = collections.deque()
        self._pending: dict[int, list[Any]] = {}
        self._next = 0
        # Set (under _cond) once every result is in _items: the call completed, or failed.
        self._done = False

    def __iter__(self) -> IMapIterator:
        return self

    def next(self, timeout: float | None = None) -> Any:
        try:
            value = self._items.popleft()
        except IndexError:
            value = self._wait(timeout)
        if type(value) is _Err:
            raise value.exc
        return value

    __next__ = next

    def _wait(self, timeout: float | None) -> Any:
        """The next item, waited for under _cond: StopIteration at the end, the pool's
        TimeoutError after timeout seconds."""
        with self._cond:
            deadline = None if timeout is None else time.monotonic() + timeout
            while not self._items:
                if self._done:
                    raise StopIteration
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise _MpTimeoutError
                try:
                    self._cond.wait(left)
                except KeyboardInterrupt:
                    self._pool._interrupted()
                    raise
            return self._items.popleft()

    def _batch(self, first: int, vals: list[Any], errs: dict[int, Any] | None) -> None:
        if errs:
            vals = [_Err(errs[j]) if j in errs else v for j, v in enumerate(vals)]
        with self._cond:
            if not self._ordered:
                self._items.extend(vals)
            elif first != self._next:
                self._pending[first] = vals
            else:
                # Batches partition the call's tasks into runs (each task is delivered once),
                # so the one that holds task _next starts at it.
                self._items.extend(vals)
                self._next += len(vals)
                while self._next in self._pending:
                    more = self._pending.pop(self._next)
                    self._items.extend(more)
                    self._next += len(more)
            self._cond.notify_all()

    def _fail(self, e: BaseException) -> None:
        """The call failed as a whole: e is the last item."""
        with self._cond:
            self._items.append(_Err(e))
            self._done = True
            self._cond.notify_all()

    def _complete(self) -> None:
        with self._cond:
            self._done = True
            self._cond.notify_all()


# ---------------------------------------------------------------------------------------------
# The pool


class _Job:
    __slots__ = (
        "argholds",
        "chunks",
        "est_n",
        "est_s",
        "fn_ref",
        "held",
        "hold",
        "id",
        "keep",
        "keys",
        "mode",
        "progress",
        "received",
        "recur",
        "refdata",
        "seen",
        "sink",
        "starts",
        "total",
        "what",
    )

    def __init__(self, jid: int, sink: Any, fn_ref: Any, hold: Any, mode: int, what: str) -> None:
        self.id = jid
        self.sink = sink
        self.fn_ref = fn_ref
        self.hold = hold
        self.mode = mode
        # start -> [args, received flags, count left]; gone when the chunk is complete.
        self.chunks: dict[int, list[Any]] = {}
        self.starts: list[int] = []
        self.total: int | None = None
        self.received = 0
        # The measured task cost: seconds and tasks of the batches received, each halved at
        # every batch (an early outlier, a first call that imports, fades).
        self.est_s = 0.0
        self.est_n = 0.0
        self.what = what
        # Recurring arguments (see _Pool._substitute): the ids known to recur (None: the
        # iterable has no length, found as they come), id -> key, key -> the one pickle, the
        # objects so keyed (kept so that their ids stay theirs for the call), the previous
        # chunk's objects (unsized iterables), the holds of the call's shoal arguments.
        self.recur: set[int] | None = None
        self.keys: dict[int, int] = {}
        self.refdata: dict[int, Any] = {}
        self.keep: list[Any] = []
        self.seen: dict[int, Any] = {}
        self.held: set[int] = set()
        self.argholds: list[Any] = []
        self.progress: _Progress | None = None

    def est(self) -> float | None:
        """The call's measured seconds per task so far (None: nothing measured yet)."""
        return self.est_s / self.est_n if self.est_n else None

    def release(self) -> None:
        """The call is over: its holds end and the pool lets go of its arguments."""
        if self.hold is not None:
            self.hold.release()
            self.hold = None
        for h in self.argholds:
            h.release()
        self.argholds = []
        self.keep = []
        self.seen = {}
        self.refdata = {}
        self.keys = {}
        if self.progress is not None:
            self.progress.close()
            self.progress = None


_RUN, _CLOSE, _TERMINATE = 0, 1, 2

# Pools still running at interpreter exit are terminated first (atexit runs this before
# multiprocessing's own exit handler, registered earlier): their threads stop and drop the
# queues, and no supervisor starts a replacement for a worker that exit handler ended.
_LIVE: weakref.WeakSet[Pool] = weakref.WeakSet()


@atexit.register
def _terminate_live_pools() -> None:
    for pool in list(_LIVE):
        pool.terminate()


class Pool:
    """A process pool with multiprocessing.Pool's API (``map``, ``imap``, ``imap_unordered``,
    ``starmap``, ``apply`` and their ``_async`` forms, ``close``, ``terminate``, ``join``, the
    context manager) plus ``submit`` (a concurrent.futures.Future).

    ``initret=True`` (needs an initializer): each worker keeps its initializer's return value and
    every task function is called with it as the keyword argument ``initret``.

    A worker that dies (a signal, ``os._exit``, a crash) is replaced; the task it was running
    fails with :class:`WorkerDiedError`, the rest of its chunk runs elsewhere (the tasks whose
    results it had not sent yet run again), nothing hangs. Workers that keep dying before their
    initializer returns break the pool (:class:`BrokenPoolError`) instead of being replaced for
    ever.
    """

    def __init__(
        self,
        processes: int | None = None,
        initializer: Callable[..., Any] | None = None,
        initargs: Iterable[Any] = (),
        maxtasksperchild: int | None = None,
        context: Any = None,
        initret: bool = False,
    ) -> None:
        if processes is None:
            processes = os.process_cpu_count() if hasattr(os, "process_cpu_count") else None
            processes = processes or os.cpu_count() or 1
        if processes < 1:
            raise ValueError("Number of processes must be at least 1")
        if maxtasksperchild is not None and (
            not isinstance(maxtasksperchild, int) or maxtasksperchild <= 0
        ):
            raise ValueError("maxtasksperchild must be a positive int or None")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        if initret and initializer is None:
            raise ValueError(
                "shoal.Pool: initret=True passes the initializer's return value to every task; "
                "give an initializer"
            )
        self._ctx = context if context is not None else get_context()
        if isinstance(self._ctx, str):
            self._ctx = get_context(self._ctx)
        self._processes = processes
        self._maxtasks = maxtasksperchild
        self._initret = bool(initret)
        self._init, self._init_hold = self._prepare_init(initializer, tuple(initargs))
        self._tasks = Queue(ring_bytes=_RING)
        self._results = Queue(ring_bytes=_RING)
        # The slot table: a raw segment (the workers get it whole; no numpy on their side), seen
        # here as a (processes, _COLS) int64 table.
        self._slot_seg = _shoal.Segment.create(processes * _COLS * 8)
        self._slots = memoryview(self._slot_seg).cast("q", (processes, _COLS))
        for w in range(processes):
            for c in range(_COLS):
                self._slots[w, c] = 0
        self._state = _RUN
        self._broken: BaseException | None = None
        self._lock = threading.RLock()  # jobs, workers
        self._jobs: dict[int, _Job] = {}
        self._ids = itertools.count(1)
        self._idle = threading.Condition(self._lock)
        # Notified when a chunk completes or a call ends: the feeder waits on it for room.
        self._room = threading.Condition(self._lock)
        # Per row: how many of its workers in a row died before their initializer returned.
        self._start_deaths = [0] * processes
        # (job, chunk size) of the last chunks the feeder sent: for tests and curious readers.
        self._chunk_log: collections.deque[tuple[int, int]] = collections.deque(maxlen=1 << 12)
        self._workers: dict[int, Any] = {}
        self._wake_r, self._wake_w = os.pipe()
        self._feed: collections.deque[Any] = collections.deque()
        self._feed_cond = threading.Condition(threading.Lock())
        for wid in range(processes):
            self._start_worker(wid)
        self._result_thread = threading.Thread(
            target=self._handle_results, name="shoal.Pool results", daemon=True
        )
        self._result_thread.start()
        self._supervisor = threading.Thread(
            target=self._supervise, name="shoal.Pool supervisor", daemon=True
        )
        self._supervisor.start()
        self._feeder = threading.Thread(
            target=self._run_feeder, name="shoal.Pool feeder", daemon=True
        )
        self._feeder.start()
        _LIVE.add(self)

    # ---- workers ----

    def _prepare_init(
        self, initializer: Callable[..., Any] | None, initargs: tuple[Any, ...]
    ) -> tuple[Any, Any]:
        """(what each worker is given to run the initializer, the hold to release with the pool).

        Under fork a worker inherits the objects: nothing is pickled (and a big initarg stays
        one copy-on-write copy). Otherwise the initializer and initargs are pickled once here
        (_pickle_once: a big pickle goes into a held shoal segment), not once per worker by
        Process; a replacement worker unpickles the same pickle. Objects that pickle only while
        a process is being spawned (multiprocessing's Lock, Queue, Value...) refuse that one
        pickle: those go to Process as multiprocessing's pool gives them, one pickle per worker.
        """
        if initializer is None:
            return None, None
        if self._ctx.get_start_method() == "fork":
            return (initializer, initargs), None
        try:
            ref, hold = _pickle_once((initializer, initargs))
        except RuntimeError:  # multiprocessing's "should only be shared ... through inheritance"
            return (initializer, initargs), None
        return _Pickled(ref), hold

    def _rows(self) -> list[list[int]]:
        """The slot table, read now: one [state, job, start, end, index] per worker."""
        return self._slots.tolist()  # type: ignore[return-value]  # 2-D: a list of rows

    def _start_worker(self, wid: int) -> None:
        # _NEW until the worker has run its initializer (it writes _IDLE then): a death before
        # that is a failed start (_supervise).
        self._slots[wid, _S_STATE] = _NEW
        p = self._ctx.Process(
            target=_worker,
            args=(
                wid,
                self._tasks,
                self._results,
                self._slot_seg,
                self._init,
                self._maxtasks,
                self._initret,
                os.getpid(),
            ),
            name=f"shoal.Pool worker {wid}",
            daemon=True,
        )
        p.start()
        self._workers[wid] = p

    def _supervise(self) -> None:
        while True:
            with self._lock:
                if self._state == _TERMINATE and not self._workers:
                    return
                by_sentinel: dict[Any, tuple[int, Any]] = {
                    p.sentinel: (wid, p) for wid, p in self._workers.items()
                }
            ready = _mpconn.wait([*by_sentinel, self._wake_r])
            if self._wake_r in ready:
                os.read(self._wake_r, 4096)
            for s in ready:
                if s not in by_sentinel:
                    continue
                wid, dead = by_sentinel[s]
                dead.join()
                with self._lock:
                    if wid not in self._workers or self._workers[wid] is not dead:
                        continue
                    del self._workers[wid]
                    row = self._rows()[wid]
                    # The row is read: clear it, so that a replacement killed before its first
                    # store is not taken for this worker again (its tasks sent twice).
                    self._slots[wid, _S_STATE] = _IDLE
                    if self._state == _TERMINATE:
                        continue
                    self._results.put(("D", wid, dead.pid, dead.exitcode, row))
                    # A failed start counts only while no other worker of the pool has got
                    # past its initializer: then the initializer can succeed, and a worker
                    # killed from outside while starting is no sign of a broken pool.
                    up = any(self._slots[w, _S_STATE] != _NEW for w in self._workers)
                    if row[_S_STATE] == _NEW and not up:
                        self._start_deaths[wid] += 1
                    else:
                        self._start_deaths[wid] = 0
                    if self._start_deaths[wid] >= _START_DEATHS and self._broken is None:
                        # Replacing it again would fail again, for ever: the pool is broken.
                        # The result thread fails every outstanding call with the error.
                        err = BrokenPoolError(dead.pid, dead.exitcode, self._start_deaths[wid])
                        self._broken = err
                        self._results.put(("I", wid, err))
                    if (self._state == _RUN or self._jobs) and self._broken is None:
                        self._start_worker(wid)

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    # ---- results ----

    def _handle_results(self) -> None:
        get = self._results.get
        suspects: set[tuple[int, int]] = set()
        while True:
            try:
                # While calls are outstanding, a quiet result queue is the moment to look for
                # tasks no one holds (below); otherwise wait for ever.
                msg = get(True, _SWEEP_SECONDS if self._jobs else None)
            except _stdqueue.Empty:
                with self._lock:
                    suspects = self._sweep(suspects)
                continue
            if msg is None:
                return
            with self._lock:
                if msg[0] == "D":
                    self._worker_died(*msg[1:])
                    continue
                if msg[0] == "I":
                    # A worker's initializer raised: every call fails with its error, no
                    # worker is started again (multiprocessing's pool would restart it for
                    # ever, its calls never completing).
                    if self._broken is None:
                        self._broken = msg[2]
                    for failed in list(self._jobs.values()):
                        self._fail_job(failed, msg[2])
                    continue
                jid, first, vals, errs, seconds = msg
                job = self._jobs.get(jid)
                if job is not None:
                    self._deliver(job, first, vals, errs, seconds)

    def _sweep(self, suspects: set[tuple[int, int]]) -> set[tuple[int, int]]:
        """Send again the tasks that no one holds: taken from the task queue by a process that
        died before its slot named them (killed inside the queue's get, or between get and the
        slot's first store). Called with no result waiting; a task is sent again only when two
        sweeps in a row (_SWEEP_SECONDS apart) found it neither received, nor in the task queue
        (the queue is empty), nor inside a running worker's chunk (the whole chunk: the tasks
        it ran may have results still buffered in it): a live worker between get and its slot
        store is a few stores long, never _SWEEP_SECONDS. Returns this sweep's suspects."""
        if not self._jobs or self._tasks.qsize() != 0:
            return set()
        held: dict[int, list[tuple[int, int]]] = {}
        for row in self._rows():
            if row[_S_STATE] == _RUNNING:
                held.setdefault(row[_S_JOB], []).append((row[_S_START], row[_S_END]))
        now: set[tuple[int, int]] = set()
        for job in self._jobs.values():
            ranges = held.get(job.id, [])
            for cs, rec in job.chunks.items():
                for k, got in enumerate(rec[1]):
                    i = cs + k
                    if not got and not any(a <= i < b for a, b in ranges):
                        now.add((job.id, i))
        lost = now & suspects
        for jid, i in sorted(lost):
            job = self._jobs[jid]
            start = self._chunk_of(job, i)
            if start is not None:
                arg = job.chunks[start][0][i - start]
                self._tasks.put((jid, job.fn_ref, i, job.mode, [arg], job.refdata, jid))
        return now - lost

    def _deliver(
        self, job: _Job, first: int, vals: list[Any], errs: dict[int, Any] | None, seconds: float
    ) -> None:
        """A batch of results, tasks first .. first + len(vals) - 1 (all in one chunk): each task
        not yet delivered goes to the call's sink, the others are dropped."""
        cs = self._chunk_of(job, first)
        if cs is None:
            return
        rec = job.chunks[cs]
        flags = rec[1]
        off = first - cs
        k = len(vals)
        if seconds > 0:
            job.est_s = job.est_s * 0.5 + seconds
            job.est_n = job.est_n * 0.5 + k
        if flags.find(1, off, off + k) < 0:
            self._deliver_run(job, rec, cs, first, vals, errs)
        else:
            # Some were delivered already (failed by a death notice, or run twice after a
            # resend): deliver the others, run by run.
            j = 0
            while j < k:
                if flags[off + j]:
                    j += 1
                    continue
                e = j
                while e < k and not flags[off + e]:
                    e += 1
                sub = {i - j: x for i, x in errs.items() if j <= i < e} if errs else None
                self._deliver_run(job, rec, cs, first + j, vals[j:e], sub or None)
                j = e
        self._maybe_complete(job)

    def _deliver_run(
        self,
        job: _Job,
        rec: list[Any],
        cs: int,
        first: int,
        vals: list[Any],
        errs: dict[int, Any] | None,
    ) -> None:
        k = len(vals)
        off = first - cs
        rec[1][off : off + k] = b"\x01" * k
        rec[2] -= k
        if rec[2] == 0:
            del job.chunks[cs]
            self._room.notify_all()
        job.received += k
        try:
            job.sink._batch(first, vals, errs)
            if job.progress is not None:
                job.progress.tick(k)
        except Exception:  # noqa: BLE001 - a callback's error must not stop the pool
            traceback.print_exc()

    def _chunk_of(self, job: _Job, idx: int) -> int | None:
        """The start of the live chunk of job that holds task idx (None: none does)."""
        # job.starts lists every chunk start the feeder made, increasing; a chunk sent again
        # after a death keeps its record under its first start.
        k = bisect.bisect_right(job.starts, idx) - 1
        if k < 0:
            return None
        s = job.starts[k]
        rec = job.chunks.get(s)
        if rec is None or idx >= s + len(rec[0]):
            return None
        return s

    def _maybe_complete(self, job: _Job) -> None:
        if job.total is None or job.received < job.total:
            return
        del self._jobs[job.id]
        job.release()
        sink = job.sink
        try:
            if isinstance(sink, (MapResult, IMapIterator)):
                sink._complete()
        except Exception:  # noqa: BLE001
            traceback.print_exc()
        if not self._jobs:
            self._idle.notify_all()

    def _worker_died(self, wid: int, pid: int, exitcode: int | None, row: list[int]) -> None:
        state, jid, start, end, idx = row
        if state != _RUNNING:
            return
        job = self._jobs.get(jid)
        if job is None:
            return
        cs = self._chunk_of(job, idx)
        if cs is None:
            return
        if not job.chunks[cs][1][idx - cs]:
            err = WorkerDiedError(pid, exitcode, f"task {idx} of {job.what}")
            self._deliver(job, idx, [None], {0: err}, 0.0)
        rec = job.chunks.get(cs)
        if rec is None:
            return
        # The chunk's other tasks with no result are sent again: those after idx had not
        # started; those before it had run, but their results were still in the worker's batch
        # (they run twice: at least once, as in any system that survives a death).
        lo, hi = max(start, cs), min(end, cs + len(rec[0]))
        todo = [i for i in range(lo, hi) if i != idx and not rec[1][i - cs]]
        for run in _runs(todo):
            args = [rec[0][i - cs] for i in run]
            self._tasks.put((job.id, job.fn_ref, run[0], job.mode, args, job.refdata, jid))

    # ---- submitting ----

    def _check_running(self) -> None:
        if self._state != _RUN:
            raise ValueError("Pool not running")
        if self._broken is not None:
            raise self._broken

    def _new_job(self, fn: Any, sink: Any, mode: int, kwargs: dict[str, Any] | None = None) -> _Job:
        if self._initret:
            bound = fn.keywords if isinstance(fn, functools.partial) else {}
            if "initret" in bound or (kwargs and "initret" in kwargs):
                raise TypeError(
                    "shoal.Pool(initret=True) passes initret to every task itself; a task "
                    "cannot pass it too"
                )
        fn_ref, hold = _pickle_once(fn)  # the one pickle of this call's function
        what = getattr(fn, "__qualname__", None) or type(fn).__name__
        job = _Job(next(self._ids), sink, fn_ref, hold, mode, f"a call of {what}")
        with self._lock:
            if self._broken is not None:  # an initializer raised since _check_running
                if hold is not None:
                    hold.release()
                raise self._broken
            self._jobs[job.id] = job
        return job

    def _enqueue(
        self, job: _Job, items: Iterable[Any], chunksize: int | None, n: int | None
    ) -> None:
        with self._feed_cond:
            self._feed.append((job, items, chunksize, n))
            self._feed_cond.notify()

    def _run_feeder(self) -> None:
        while True:
            with self._feed_cond:
                while not self._feed:
                    self._feed_cond.wait()
                work = self._feed.popleft()
            if work is None:
                return
            job, items, chunksize, n = work
            try:
                self._feed_job(job, items, chunksize, n)
            except BaseException as e:  # noqa: BLE001 - the iterable's error fails the call
                with self._lock:
                    if job.id in self._jobs:
                        self._fail_job(job, e)

    def _feed_job(
        self, job: _Job, items: Iterable[Any], chunksize: int | None, n: int | None
    ) -> None:
        if n is not None:
            # One pass over the call's arguments finds the objects that recur by identity: each
            # is pickled once, not once per chunk (_substitute).
            job.recur = _recurring(items, job.mode)
        it = iter(items)
        start = 0
        cap = _MAX_AUTO_CHUNK
        if n is not None:
            # At least four chunks per worker (multiprocessing's map uses this size), so that
            # the last ones still balance.
            cap = max(1, min(cap, math.ceil(n / (4 * self._processes))))
        ahead = _AHEAD * self._processes
        probes = 0
        while self._state != _TERMINATE and job.id in self._jobs:
            if chunksize is not None:
                size = chunksize
            else:
                with self._lock:
                    while self._feed_full(job, start, probes, ahead) and (
                        self._state != _TERMINATE and job.id in self._jobs
                    ):
                        self._room.wait(_SWEEP_SECONDS)
                    if self._state == _TERMINATE or job.id not in self._jobs:
                        break  # terminated, or the call failed, while waiting
                    est = job.est()
                if est is None:  # nothing measured (yet; or the tasks so far killed workers)
                    size = 1
                    probes += 1
                else:
                    size = max(1, min(cap, int(_CHUNK_SECONDS / (est + _TASK_OVERHEAD))))
            args = list(itertools.islice(it, size))
            if not args:
                break
            refs = self._substitute(job, args) if job.recur is None or job.recur else None
            with self._lock:
                job.chunks[start] = [args, bytearray(len(args)), len(args)]
                job.starts.append(start)
                floor = min(self._jobs, default=job.id)
            self._chunk_log.append((job.id, len(args)))
            self._tasks.put((job.id, job.fn_ref, start, job.mode, args, refs, floor))
            start += len(args)
        with self._lock:
            job.total = start
            if job.id in self._jobs:
                self._maybe_complete(job)
            else:
                job.release()  # failed while fed: what the feeder took since goes too

    def _feed_full(self, job: _Job, sent: int, probes: int, ahead: int) -> bool:
        """Whether the feeder must wait before cutting job's next automatic chunk (sent: the
        tasks cut so far). It cuts a chunk when a worker is about to need it, from the newest
        measurement: it waits while `ahead` of the call's chunks are out (sent, not complete)
        and they hold at least `ahead` chunks' worth of work (_CHUNK_SECONDS each; chunks of
        tiny tasks capped by the call's length are shorter, and more of them go out, so that
        the workers do not starve while this thread waits for a CPU). The first chunks are
        one task each, one per worker (probes); then it waits for the first result: one probe
        done means a worker is free, and the cost is measured."""
        if probes >= self._processes and job.received == 0:
            return True
        if len(job.chunks) < ahead:
            return False
        est = job.est()
        return est is None or (sent - job.received) * est >= ahead * _CHUNK_SECONDS

    def _substitute(self, job: _Job, args: list[Any]) -> dict[int, Any] | None:
        """Replace (in place) each argument of the chunk that recurs across the call's tasks
        with an _Arg key; return the chunk's refs (key -> the argument's one pickle), or None.

        A recurring object is pickled once per call (inside the holds of the call's shoal
        objects, so a shoal object pickles as a held handle: no pin, no broker round trip) and
        a worker unpickles it once per call. With a sized iterable the recurring ids are known
        beforehand (job.recur); otherwise an object recurs when it was in this chunk or the
        previous one already, so its first chunk carried it inline (a second pickle)."""
        mode = job.mode
        refs: dict[int, Any] = {}
        recur = job.recur
        keys = job.keys
        seen_now: dict[int, Any] = {}
        atomic = _ATOMIC

        def sub(o: Any) -> Any:
            if type(o) in atomic:
                return o
            i = id(o)
            key = keys.get(i)
            if key is None:
                if i not in job.held and _is_shoal(o):
                    job.held.add(i)
                    # Holding only saves pins: an object that cannot be held (not a handle-
                    # pickling shoal object, a named one, a closed one) pickles as it is.
                    with contextlib.suppress(Exception):
                        job.argholds.append(_hold(o))
                if recur is not None:
                    if i not in recur:
                        return o
                elif i not in job.seen and i not in seen_now:
                    seen_now[i] = o
                    return o
                key = keys[i] = len(keys)
                ref, hold = _pickle_once(o)
                with self._lock:  # a resend (the result thread) pickles refdata under it
                    job.refdata[key] = ref
                job.keep.append(o)
                if hold is not None:
                    job.argholds.append(hold)
            refs[key] = job.refdata[key]
            return _Arg(key)

        for k, a in enumerate(args):
            if mode == _ONE:
                args[k] = tuple(sub(o) for o in a) if type(a) is tuple else sub(a)
            elif mode == _STAR:
                if type(a) in (tuple, list):
                    args[k] = tuple(sub(o) for o in a)
            else:
                args[k] = (tuple(sub(o) for o in a[0]), {kk: sub(v) for kk, v in a[1].items()})
        if recur is None:
            job.seen = seen_now
        return refs or None

    def _fail_job(self, job: _Job, e: BaseException) -> None:
        self._jobs.pop(job.id, None)
        job.release()
        self._room.notify_all()
        sink = job.sink
        if isinstance(sink, IMapIterator):
            sink._fail(e)
        elif isinstance(sink, _FutureResult):
            if not sink.fut.done():
                sink.fut.set_exception(e)
        elif isinstance(sink, AsyncResult) and not sink.ready():
            sink._finish(False, e)
        if not self._jobs:
            self._idle.notify_all()

    # ---- the API ----

    def apply_async(
        self,
        func: Callable[..., Any],
        args: Iterable[Any] = (),
        kwds: dict[str, Any] | None = None,
        callback: Any = None,
        error_callback: Any = None,
    ) -> AsyncResult:
        """Run func(*args, **kwds) in a worker: an AsyncResult; callback or error_callback gets its
        outcome (in the pool's result thread)."""
        self._check_running()
        res = AsyncResult(self, callback, error_callback)
        kwds = dict(kwds or {})
        job = self._new_job(func, res, _KW, kwds)
        self._enqueue(job, [(tuple(args), kwds)], 1, 1)
        return res

    def apply(
        self, func: Callable[..., Any], args: Iterable[Any] = (), kwds: dict[str, Any] | None = None
    ) -> Any:
        """func(*args, **kwds) run in a worker, waiting for it."""
        return self.apply_async(func, args, kwds).get()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> _cf.Future[Any]:
        """Run fn(*args, **kwargs) in a worker: a concurrent.futures.Future of its result."""
        self._check_running()
        # The future stays pending (cancel() works) until its result comes; a cancelled one's
        # result is dropped.
        fut: _cf.Future[Any] = _cf.Future()
        job = self._new_job(fn, _FutureResult(fut), _KW, kwargs)
        self._enqueue(job, [(args, kwargs)], 1, 1)
        return fut

    def _map_async(
        self,
        func: Any,
        iterable: Iterable[Any],
        mode: int,
        chunksize: int | None,
        callback: Any,
        error_callback: Any,
        progress: bool | str = False,
    ) -> MapResult:
        self._check_running()
        _check_progress(progress)
        items = iterable if hasattr(iterable, "__len__") else list(iterable)
        n = len(items)  # type: ignore[arg-type]
        res = MapResult(self, n, callback, error_callback)
        job = self._new_job(func, res, mode)
        job.progress = _make_progress(progress, n)
        self._enqueue(job, items, _check_chunksize(chunksize), n)
        return res

    def map_async(
        self,
        func: Callable[..., Any],
        iterable: Iterable[Any],
        chunksize: int | None = None,
        callback: Any = None,
        error_callback: Any = None,
        *,
        progress: bool | str = False,
    ) -> MapResult:
        """map without waiting: a MapResult whose get() is the list of results, or raises the first
        task's error."""
        return self._map_async(func, iterable, _ONE, chunksize, callback, error_callback, progress)

    def starmap_async(
        self,
        func: Callable[..., Any],
        iterable: Iterable[Any],
        chunksize: int | None = None,
        callback: Any = None,
        error_callback: Any = None,
        *,
        progress: bool | str = False,
    ) -> MapResult:
        """starmap without waiting: a MapResult."""
        return self._map_async(func, iterable, _STAR, chunksize, callback, error_callback, progress)

    def map(
        self,
        func: Callable[..., Any],
        iterable: Iterable[Any],
        chunksize: int | None = None,
        *,
        progress: bool | str = False,
    ) -> list[Any]:
        """[func(x) for x in iterable], run in the workers in chunks (chunksize None: sized from the
        measured task cost); raises the first task's error. ``progress=True`` shows a progress
        bar on stderr (tqdm's when it is installed; ``"plain"``: a plain line): tasks done,
        rate and ETA."""
        res = self.map_async(func, iterable, chunksize, progress=progress)
        return res.get()  # type: ignore[no-any-return]

    def starmap(
        self,
        func: Callable[..., Any],
        iterable: Iterable[Any],
        chunksize: int | None = None,
        *,
        progress: bool | str = False,
    ) -> list[Any]:
        """[func(*args) for args in iterable], as map."""
        res = self.starmap_async(func, iterable, chunksize, progress=progress)
        return res.get()  # type: ignore[no-any-return]

    def _imap(
        self,
        func: Any,
        iterable: Iterable[Any],
        chunksize: int | None,
        ordered: bool,
        mode: int,
        progress: bool | str = False,
    ) -> IMapIterator:
        self._check_running()
        _check_progress(progress)
        it = IMapIterator(self, ordered)
        job = self._new_job(func, it, mode)
        n = len(iterable) if hasattr(iterable, "__len__") else None  # type: ignore[arg-type]
        job.progress = _make_progress(progress, n)
        self._enqueue(job, iterable, _check_chunksize(chunksize), n)
        return it

    def imap(
        self,
        func: Callable[..., Any],
        iterable: Iterable[Any],
        chunksize: int | None = None,
        *,
        progress: bool | str = False,
    ) -> IMapIterator:
        """An iterator of func(x) for x in iterable, in order, as the results come; a task's error
        is raised at its place and the iteration goes on after it. ``progress`` as map's."""
        return self._imap(func, iterable, chunksize, True, _ONE, progress)

    def imap_unordered(
        self,
        func: Callable[..., Any],
        iterable: Iterable[Any],
        chunksize: int | None = None,
        *,
        progress: bool | str = False,
    ) -> IMapIterator:
        """As imap, in the order the results come."""
        return self._imap(func, iterable, chunksize, False, _ONE, progress)

    def close(self) -> None:
        """No more tasks; the workers exit once the tasks sent are done (join waits for that)."""
        with self._lock:
            if self._state == _RUN:
                self._state = _CLOSE

    def join(self) -> None:
        """Wait for the tasks sent and for the workers to exit (after close or terminate)."""
        if self._state == _RUN:
            raise ValueError("Pool is still running")
        try:
            with self._lock:
                while self._jobs and self._state == _CLOSE:
                    self._idle.wait()
        except KeyboardInterrupt:
            self._interrupted()
            raise
        self._shutdown(kill=False)

    def terminate(self) -> None:
        """Stop the workers now (SIGTERM, then SIGKILL); unfinished calls fail."""
        self._shutdown(kill=True)

    def _interrupted(self) -> None:
        # Ctrl-C in a wait of the parent: stop the workers, then let KeyboardInterrupt go on.
        self._shutdown(kill=True)

    def _shutdown(self, kill: bool) -> None:
        with self._lock:
            if (
                self._state == _TERMINATE
                and not self._workers
                and not self._result_thread.is_alive()
            ):
                return
            self._state = _TERMINATE
            workers = list(self._workers.values())
            self._workers.clear()
            self._room.notify_all()
        with self._feed_cond:
            self._feed.clear()
            self._feed.append(None)
            self._feed_cond.notify()
        if kill:
            for p in workers:
                if p.exitcode is None:
                    p.terminate()
        else:
            for _ in workers:
                self._tasks.put(None)
        deadline = time.monotonic() + (1.0 if kill else 3600.0)
        for p in workers:
            p.join(max(0.0, deadline - time.monotonic()))
            if p.exitcode is None:
                p.kill()
                p.join()
        self._wake()
        if self._supervisor is not threading.current_thread():
            self._supervisor.join()
        self._results.put(None)
        if self._result_thread is not threading.current_thread():
            self._result_thread.join()
        self._feeder.join()
        with self._lock:
            for job in list(self._jobs.values()):
                self._fail_job(job, RuntimeError("shoal.Pool was terminated"))
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        # Nothing of the pool's shared memory outlives it: the queues and the slot table go
        # now (the workers that shared them are gone).
        self._tasks = self._results = None  # type: ignore[assignment]
        self._slots.release()
        self._slots = None  # type: ignore[assignment]
        self._slot_seg.close()
        self._slot_seg = None  # type: ignore[assignment]
        if self._init_hold is not None:
            self._init_hold.release()
            self._init_hold = None

    def _wait_event(self, event: threading.Event, timeout: float | None) -> None:
        try:
            event.wait(timeout)
        except KeyboardInterrupt:
            self._interrupted()
            raise

    def __enter__(self) -> Self:
        if self._state != _RUN:
            raise ValueError("Pool not running")
        return self

    def __exit__(self, *exc: object) -> None:
        self.terminate()

    def __reduce__(self) -> Any:
        raise NotImplementedError("pool objects cannot be passed between processes or pickled")

    def __repr__(self) -> str:
        state = {_RUN: "RUN", _CLOSE: "CLOSE", _TERMINATE: "TERMINATE"}[self._state]
        return f"<shoal.Pool state={state} pool_size={self._processes}>"


# A progress bar is redrawn at most this often (seconds), from the result thread.
_PROGRESS_EVERY = 0.1


class _Progress:
    """A call's progress on stderr: tasks done, rate and ETA. A tqdm bar when tqdm is installed
    (and not ``plain``), else one line redrawn with a carriage return. ``tick`` (one per
    result, in the result thread) costs a counter and a clock read; the bar is redrawn at most
    every _PROGRESS_EVERY seconds, so tiny tasks are not slowed."""

    def __init__(self, total: int | None, plain: bool) -> None:
        self.total = total
        self.done = 0
        self.shown = 0
        self.t0 = time.monotonic()
        self.next = self.t0 + _PROGRESS_EVERY
        self.bar: Any = None
        if not plain:
            try:
                from tqdm import tqdm  # type: ignore[import-untyped,import-not-found,unused-ignore]
            except ImportError:
                pass
            else:
                # The pool, not tqdm, decides when to redraw (mininterval 0: every update).
                self.bar = tqdm(total=total, unit="task", mininterval=0, smoothing=0.1)

    def tick(self, k: int = 1) -> None:
        self.done += k
        now = time.monotonic()
        if now >= self.next:
            self.next = now + _PROGRESS_EVERY
            self._show(now)

    def _show(self, now: float) -> None:
        if self.bar is not None:
            self.bar.update(self.done - self.shown)
            self.shown = self.done
            return
        spent = now - self.t0
        rate = self.done / spent if spent > 0 else 0.0
        line = f"{self.done}"
        if self.total is not None:
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            pct = 100 * self.done // self.total if self.total else 100
            line = (
                f"{pct:3d}% {self.done}/{self.total} tasks, {rate:,.0f} tasks/s, ETA {_fmt_s(eta)}"
            )
        else:
            line = f"{self.done} tasks, {rate:,.0f} tasks/s"
        sys.stderr.write(f"\r{line}  ")
        sys.stderr.flush()

    def close(self) -> None:
        self._show(time.monotonic())
        if self.bar is not None:
            self.bar.close()
        else:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _fmt_s(seconds: float) -> str:
    if seconds == float("inf"):
        return "?"
    m, sec = divmod(int(seconds + 0.5), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m:02d}:{sec:02d}"


def _check_progress(progress: object) -> None:
    if progress not in (True, False, None, "plain"):
        raise ValueError(
            f"progress must be True (a tqdm bar, or a plain line without tqdm), 'plain' or "
            f"False, not {progress!r}"
        )


def _make_progress(progress: bool | str, total: int | None) -> _Progress | None:
    if not progress:
        return None
    return _Progress(total, plain=progress == "plain")


def _pickle_once(obj: Any) -> tuple[Any, Any]:
    """(ref, hold): obj pickled once (multiprocessing's reducers); a pickle of at most
    _INLINE_FN bytes is the ref itself, a bigger one is copied once into a shoal segment held for
    the call (hold), the ref then carrying the held handle's pickle (tens of bytes)."""
    data = ForkingPickler.dumps(obj)
    if len(data) <= _INLINE_FN:
        return bytes(data), None
    seg = _shoal.Segment.create(len(data))
    memoryview(seg)[:] = data
    hold = _hold(seg)
    return (ForkingPickler.dumps(seg).tobytes(),), hold


def _runs(xs: list[int]) -> list[list[int]]:
    """xs (increasing) cut into runs of consecutive integers."""
    out: list[list[int]] = []
    for x in xs:
        if out and out[-1][-1] == x - 1:
            out[-1].append(x)
        else:
            out.append([x])
    return out


def _objects_of(a: Any, mode: int) -> Any:
    """The argument objects of one task (those worth a look by identity)."""
    if mode == _ONE:
        return a if type(a) is tuple else (a,)
    if mode == _STAR:
        return a if type(a) in (tuple, list) else ()
    return (*a[0], *a[1].values())


def _recurring(items: Iterable[Any], mode: int) -> set[int]:
    """The ids of the argument objects that occur more than once in items."""
    if type(items) is range:
        return set()
    kinds = set(map(type, items))  # one pass in C: most calls' arguments are all atomic
    if kinds <= _ATOMIC:
        return set()
    counts: dict[int, int] = {}
    get = counts.get
    atomic = _ATOMIC
    if mode == _ONE:
        for a in items:
            t = type(a)
            if t is tuple:
                for o in a:
                    if type(o) not in atomic:
                        i = id(o)
                        counts[i] = get(i, 0) + 1
            elif t not in atomic:
                i = id(a)
                counts[i] = get(i, 0) + 1
    else:
        for a in items:
            for o in _objects_of(a, mode):
                if type(o) not in atomic:
                    i = id(o)
                    counts[i] = get(i, 0) + 1
    return {i for i, c in counts.items() if c > 1}


def _is_shoal(o: Any) -> bool:
    return type(o).__module__.startswith("shoal")


def _check_chunksize(chunksize: int | None) -> int | None:
    if chunksize is None:
        return None
    if not isinstance(chunksize, int) or chunksize < 1:
        raise ValueError(f"chunksize must be a positive int, not {chunksize!r}")
    return chunksize


class ProcessPoolExecutor(_cf.Executor):
    """concurrent.futures.ProcessPoolExecutor on shoal.Pool's engine: ``submit``, ``map``
    (chunked, ordered), ``shutdown(wait, cancel_futures)``."""

    def __init__(
        self,
        max_workers: int | None = None,
        mp_context: Any = None,
        initializer: Callable[..., Any] | None = None,
        initargs: tuple[Any, ...] = (),
        *,
        max_tasks_per_child: int | None = None,
    ) -> None:
        if max_workers is not None and max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        self._pool = Pool(max_workers, initializer, initargs, max_tasks_per_child, mp_context)
        self._futures: set[_cf.Future[Any]] = set()
        self._shut = False

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> _cf.Future[Any]:
        if self._shut:
            raise RuntimeError("cannot schedule new futures after shutdown")
        fut = self._pool.submit(fn, *args, **kwargs)
        self._futures.add(fut)
        fut.add_done_callback(self._futures.discard)
        return fut

    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
        buffersize: int | None = None,
    ) -> Iterator[Any]:
        if self._shut:
            raise RuntimeError("cannot schedule new futures after shutdown")
        it = self._pool._imap(
            fn, list(zip(*iterables)), None if chunksize == 1 else chunksize, True, _STAR
        )
        deadline = None if timeout is None else time.monotonic() + timeout

        def gen() -> Iterator[Any]:
            while True:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    yield it.next(left)
                except StopIteration:
                    return
                except _MpTimeoutError:
                    raise _cf.TimeoutError from None

        return gen()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._shut = True
        if cancel_futures:
            for f in list(self._futures):
                f.cancel()
        self._pool.close()
        if wait:
            self._pool.join()
