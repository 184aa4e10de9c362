"""``shoal.Pool`` and ``shoal.ProcessPoolExecutor``: multiprocessing.Pool's API over shoal
queues, that pickles a call's function once and never hangs when a worker dies.

The engine (design note: docs/design/pool.md):

- one task queue and one result queue (``shoal.Queue``); a task message is one chunk
  ``(job, fn_ref, start, mode, args, refs, floor)``; a result message is one task's
  ``(job, index, ok, value, seconds)``, so results are per task whatever the chunking;
- a call's function (a ``functools.partial`` with its bound arguments included) is pickled once;
  a big pickle goes once into a shoal array held for the call (``fn_ref`` is then its held
  handle, a few dozen bytes); each worker unpickles it at most once per call;
- so is an argument object that recurs by identity across the call's tasks: the chunks carry
  an ``_Arg(key)`` in its place and ``refs`` (key -> its one pickle); a worker unpickles it once
  per call and drops it when the call is over (``floor``: the oldest call still outstanding);
  the call's shoal arguments are held (``shoal.hold``) for the call, so they pickle with no pin;
- each worker writes what it is running into its row of a shared ``int64`` table (its *slot*):
  ``[state, job, chunk start, chunk end, index]``;
- a supervisor thread in the parent waits on the workers' sentinels; when one exits it reads the
  dead worker's slot, puts a death notice into the result queue (after everything the worker
  put, as the worker is gone) and starts a replacement. The result thread, the only one that
  changes the jobs' state, then fails the task the worker was running with WorkerDiedError and
  sends the rest of its chunk again.
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
import pickle
import queue as _stdqueue
import signal
import sys
import threading
import time
import traceback
import weakref
from collections.abc import Callable, Iterable, Iterator
from multiprocessing import TimeoutError as _MpTimeoutError
from multiprocessing import connection as _mpconn
from multiprocessing import get_context
from multiprocessing.pool import (  # type: ignore[attr-defined]  # not in typeshed
    ExceptionWithTraceback,
    MaybeEncodingError,
)
from multiprocessing.reduction import ForkingPickler
from typing import Any, Self

import numpy as np

from . import _shoal
from ._array import empty as _empty
from ._hold import hold as _hold
from ._queues import Queue

__all__ = ["AsyncResult", "MapResult", "Pool", "ProcessPoolExecutor", "WorkerDiedError"]

# Task modes: fn(x), fn(*x), fn(*args, **kwargs).
_ONE, _STAR, _KW = 0, 1, 2
# Slot columns and states.
_S_STATE, _S_JOB, _S_START, _S_END, _S_INDEX = range(5)
_IDLE, _RUNNING = 0, 1
# A function pickle longer than this goes into shared memory once per call instead of riding
# in every chunk message.
_INLINE_FN = 1024
# Automatic chunks aim at this many seconds of work each.
_CHUNK_SECONDS = 0.01
_MAX_AUTO_CHUNK = 4096
# How many calls' functions a worker keeps unpickled (older calls are over, or nearly).
_FN_CACHE = 4
# With calls outstanding and no result for this long, the result thread looks for lost tasks.
_SWEEP_SECONDS = 0.25
# An idle worker checks this often (seconds) that the pool's process still lives.
_PARENT_CHECK = 1.0
# Arguments of these types are never looked up by identity (small, and interned or cheap).
_ATOMIC = frozenset({int, float, bool, type(None), str, bytes, complex})


class _Arg:
    """Stands in a chunk message for an argument that recurs across the call's tasks: the
    chunk's ``refs`` map its key to the argument's one pickle (inline bytes, or a held shoal
    array's handle), which a worker unpickles once per call."""

    __slots__ = ("key",)

    def __init__(self, key: int) -> None:
        self.key = key

    def __reduce__(self) -> tuple[Any, ...]:
        return (_Arg, (self.key,))


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
        self.signal: str | None = None
        if exitcode is not None and exitcode < 0:
            try:
                self.signal = signal.Signals(-exitcode).name
            except ValueError:
                self.signal = f"signal {-exitcode}"
        self.task = task
        how = f"killed by {self.signal}" if self.signal else f"exit code {exitcode}"
        super().__init__(f"pool worker {pid} died ({how}) while running {task}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (WorkerDiedError, (self.pid, self.exitcode, self.task))


# ---------------------------------------------------------------------------------------------
# The worker


def _worker(
    wid: int,
    tasks: Queue,
    results: Queue,
    slots: Any,
    initializer: Callable[..., Any] | None,
    initargs: tuple[Any, ...],
    maxtasks: int | None,
    initret: bool,
    parent: int,
) -> None:
    # Ctrl-C is the parent's to handle: it stops the workers (a terminal sends SIGINT to the
    # whole foreground process group).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    slot = memoryview(slots).cast("B").cast("q")
    base = wid * 5
    slot[base + _S_STATE] = _IDLE
    kw: dict[str, Any] = {}
    if initializer is not None:
        try:
            value = initializer(*initargs)
        except Exception as e:  # noqa: BLE001 - the pool is broken: say so, do not loop
            try:
                results.put(("I", wid, ExceptionWithTraceback(e, e.__traceback__)))
            except Exception:  # noqa: BLE001 - an unpicklable error: its text then
                results.put(("I", wid, RuntimeError(f"the initializer raised {e!r}")))
            return
        if initret:
            kw = {"initret": value}
    fns: collections.OrderedDict[int, Any] = collections.OrderedDict()
    # job -> {key: unpickled recurring argument}: one unpickle per call, dropped once the call
    # is over (older than the message's floor) or the worker has been idle for a while.
    argcache: dict[int, dict[int, Any]] = {}
    done = 0
    put = results.put
    perf = time.perf_counter
    get = tasks.get
    while True:
        try:
            msg = get(True, _PARENT_CHECK)
        except _stdqueue.Empty:
            argcache.clear()  # idle: the calls whose arguments these were are over, or nearly
            if not _alive(parent):
                return  # the parent was killed: no one will send or read anything more
            continue
        if msg is None:
            break
        job, fn_ref, start, mode, args, refs, floor = msg
        if argcache and min(argcache) < floor:
            for old in [j for j in argcache if j < floor]:
                del argcache[old]
        slot[base + _S_JOB] = job
        slot[base + _S_START] = start
        slot[base + _S_END] = start + len(args)
        slot[base + _S_INDEX] = start
        slot[base + _S_STATE] = _RUNNING
        fn = fns.get(job)
        if fn is None:
            try:
                fn = _load_fn(fn_ref)
            except BaseException as e:  # noqa: BLE001 - every task of the chunk fails with it
                err = ExceptionWithTraceback(e, e.__traceback__)
                for i in range(len(args)):
                    slot[base + _S_INDEX] = start + i
                    put((job, start + i, False, err, 0.0))
                slot[base + _S_STATE] = _IDLE
                continue
            fns[job] = fn
            if len(fns) > _FN_CACHE:
                fns.popitem(last=False)
        if refs:
            try:
                args = _resolve_args(args, mode, refs, argcache.setdefault(job, {}))
            except BaseException as e:  # noqa: BLE001 - every task of the chunk fails with it
                err = ExceptionWithTraceback(e, e.__traceback__)
                for i in range(len(args)):
                    slot[base + _S_INDEX] = start + i
                    put((job, start + i, False, err, 0.0))
                slot[base + _S_STATE] = _IDLE
                continue
        for i, a in enumerate(args):
            idx = start + i
            slot[base + _S_INDEX] = idx
            t0 = perf()
            try:
                if mode == _ONE:
                    r = (job, idx, True, fn(a, **kw), 0.0)
                elif mode == _STAR:
                    r = (job, idx, True, fn(*a, **kw), 0.0)
                else:
                    r = (job, idx, True, fn(*a[0], **a[1], **kw), 0.0)
            except Exception as e:  # noqa: BLE001 - a task's error is its result
                r = (job, idx, False, ExceptionWithTraceback(e, e.__traceback__), 0.0)
            r = (*r[:4], perf() - t0)
            try:
                put(r)
            except Exception as e:  # noqa: BLE001 - an unpicklable result fails its task only
                wrapped = MaybeEncodingError(e, _safe_repr(r[3]))
                put((job, idx, False, wrapped, r[4]))
            done += 1
            if maxtasks is not None and done >= maxtasks:
                if i + 1 < len(args):
                    # Retire: the rest of the chunk goes back to the queue for another worker.
                    rest = list(msg[4][i + 1 :])  # as sent (recurring arguments as keys)
                    tasks.put((job, fn_ref, idx + 1, mode, rest, refs, floor))
                slot[base + _S_STATE] = _IDLE
                return
        slot[base + _S_STATE] = _IDLE


def _alive(pid: int) -> bool:
    """Whether process pid runs (a zombie, killed but not yet reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _load_fn(fn_ref: Any) -> Any:
    if type(fn_ref) is bytes:
        return pickle.loads(fn_ref)
    arr = pickle.loads(fn_ref[0])  # the held array's handle
    return pickle.loads(memoryview(arr).cast("B"))


def _resolve_args(
    args: list[Any], mode: int, refs: dict[int, Any], cache: dict[int, Any]
) -> list[Any]:
    """The chunk's arguments with each _Arg replaced by its object, unpickled at most once per
    call in this worker (cache)."""

    def get(a: _Arg) -> Any:
        try:
            return cache[a.key]
        except KeyError:
            v = cache[a.key] = _load_fn(refs[a.key])
            return v

    def one(a: Any) -> Any:
        return get(a) if type(a) is _Arg else a

    if mode == _ONE:  # a tuple argument: its items are looked at (imap(f, [(big, i), ...]))
        return [tuple(one(x) for x in a) if type(a) is tuple else one(a) for a in args]
    if mode == _STAR:
        return [tuple(one(x) for x in a) if type(a) in (tuple, list) else a for a in args]
    return [(tuple(one(x) for x in a[0]), {k: one(v) for k, v in a[1].items()}) for a in args]


def _safe_repr(x: Any) -> str:
    try:
        return repr(x)[:200]
    except Exception:  # noqa: BLE001
        return f"<unprintable {type(x).__name__}>"


# ---------------------------------------------------------------------------------------------
# Results


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

    # Called by the result thread.
    def _task(self, idx: int, ok: bool, value: Any) -> None:
        self._finish(ok, value)

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

    def _task(self, idx: int, ok: bool, value: Any) -> None:
        if ok:
            self._list[idx] = value
        elif self._error is None:
            self._error = value

    def _complete(self) -> None:
        if self._error is None:
            self._finish(True, self._list)
        else:
            self._list = []
            self._finish(False, self._error)


class _FutureResult:
    """A concurrent.futures.Future as a job's sink."""

    def __init__(self, fut: _cf.Future[Any]) -> None:
        self.fut = fut

    def _task(self, idx: int, ok: bool, value: Any) -> None:
        if self.fut.cancelled():
            return
        if ok:
            self.fut.set_result(value)
        else:
            self.fut.set_exception(value)


class IMapIterator:
    """The iterator of ``imap`` (ordered) and ``imap_unordered``: ``next(timeout=None)``."""

    def __init__(self, pool: Pool, ordered: bool) -> None:
        self._pool = pool
        self._ordered = ordered
        self._cond = threading.Condition(threading.Lock())
        self._items: collections.deque[tuple[bool, Any]] = collections.deque()
        self._pending: dict[int, tuple[bool, Any]] = {}
        self._next = 0
        self._length: int | None = None
        self._yielded = 0

    def __iter__(self) -> IMapIterator:
        return self

    def next(self, timeout: float | None = None) -> Any:
        with self._cond:
            deadline = None if timeout is None else time.monotonic() + timeout
            while not self._items:
                if self._length is not None and self._yielded >= self._length:
                    raise StopIteration
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise _MpTimeoutError
                try:
                    self._cond.wait(left)
                except KeyboardInterrupt:
                    self._pool._interrupted()
                    raise
            ok, value = self._items.popleft()
            self._yielded += 1
        if ok:
            return value
        raise value

    __next__ = next

    def _task(self, idx: int, ok: bool, value: Any) -> None:
        with self._cond:
            if not self._ordered:
                self._items.append((ok, value))
            else:
                self._pending[idx] = (ok, value)
                while self._next in self._pending:
                    self._items.append(self._pending.pop(self._next))
                    self._next += 1
            self._cond.notify()

    def _set_length(self, n: int) -> None:
        with self._cond:
            self._length = n
            self._cond.notify()


# ---------------------------------------------------------------------------------------------
# The pool


class _Job:
    __slots__ = (
        "argholds",
        "chunks",
        "fn_ref",
        "held",
        "hold",
        "id",
        "keep",
        "keys",
        "measured",
        "mode",
        "progress",
        "received",
        "recur",
        "refdata",
        "seconds",
        "seen",
        "sink",
        "starts",
        "timed",
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
        self.seconds = 0.0
        self.timed = 0
        self.what = what
        self.measured = threading.Event()
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
    fails with :class:`WorkerDiedError`, the rest of its chunk runs elsewhere, nothing hangs.
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
        self._initializer = initializer
        self._initargs = tuple(initargs)
        self._maxtasks = maxtasksperchild
        self._initret = bool(initret)
        self._tasks = Queue()
        self._results = Queue()
        self._slots = _empty((processes, 5), dtype=np.int64)
        self._slots[:] = 0
        self._state = _RUN
        self._broken: BaseException | None = None
        self._lock = threading.RLock()  # jobs, workers
        self._jobs: dict[int, _Job] = {}
        self._ids = itertools.count(1)
        self._idle = threading.Condition(self._lock)
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

    def _start_worker(self, wid: int) -> None:
        p = self._ctx.Process(
            target=_worker,
            args=(
                wid,
                self._tasks,
                self._results,
                self._slots,
                self._initializer,
                self._initargs,
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
                    row = [int(x) for x in self._slots[wid]]
                    # The row is read: clear it, so that a replacement killed before its first
                    # store is not taken for this worker again (its tasks sent twice).
                    self._slots[wid, _S_STATE] = _IDLE
                    if self._state == _TERMINATE:
                        continue
                    self._results.put(("D", wid, dead.pid, dead.exitcode, row))
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
                jid, idx, ok, value, seconds = msg
                job = self._jobs.get(jid)
                if job is not None:
                    self._deliver(job, idx, ok, value, seconds)

    def _sweep(self, suspects: set[tuple[int, int]]) -> set[tuple[int, int]]:
        """Send again the tasks that no one holds: taken from the task queue by a process that
        died before its slot named them (killed inside the queue's get, or between get and the
        slot's first store). Called with no result waiting; a task is sent again only when two
        sweeps in a row (_SWEEP_SECONDS apart) found it neither received, nor in the task queue
        (the queue is empty), nor inside a running worker's chunk: a live worker between get
        and its slot store is a few stores long, never _SWEEP_SECONDS. Returns this sweep's
        suspects."""
        if not self._jobs or self._tasks.qsize() != 0:
            return set()
        held: dict[int, list[tuple[int, int]]] = {}
        for row in self._slots.tolist():
            if row[_S_STATE] == _RUNNING:
                held.setdefault(row[_S_JOB], []).append((row[_S_INDEX], row[_S_END]))
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

    def _deliver(self, job: _Job, idx: int, ok: bool, value: Any, seconds: float) -> None:
        chunk_start = self._chunk_of(job, idx)
        if chunk_start is None:
            return
        rec = job.chunks[chunk_start]
        flags = rec[1]
        if flags[idx - chunk_start]:
            return  # already failed by a death notice, or a duplicate
        flags[idx - chunk_start] = 1
        rec[2] -= 1
        if rec[2] == 0:
            del job.chunks[chunk_start]
        job.received += 1
        job.seconds += seconds
        job.timed += 1
        job.measured.set()
        try:
            job.sink._task(idx, ok, value)
            if job.progress is not None:
                job.progress.tick()
        except Exception:  # noqa: BLE001 - a callback's error must not stop the pool
            traceback.print_exc()
        self._maybe_complete(job)

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
            if isinstance(sink, MapResult):
                sink._complete()
            elif isinstance(sink, IMapIterator):
                sink._set_length(job.total)
        except Exception:  # noqa: BLE001
            traceback.print_exc()
        if not self._jobs:
            self._idle.notify_all()

    def _worker_died(self, wid: int, pid: int, exitcode: int | None, row: list[int]) -> None:
        state, jid, _start, end, idx = row
        if state != _RUNNING:
            return
        job = self._jobs.get(jid)
        if job is None:
            return
        cs = self._chunk_of(job, idx)
        if cs is None:
            return
        rec = job.chunks[cs]
        if not rec[1][idx - cs]:
            err = WorkerDiedError(pid, exitcode, f"task {idx} of {job.what}")
            self._deliver(job, idx, False, err, 0.0)
        # The chunk's tasks after idx did not start: send them again.
        rest = list(range(idx + 1, end))
        left = job.chunks.get(cs)
        if left is not None and rest:
            args = [left[0][i - cs] for i in rest if not left[1][i - cs]]
            if args and len(args) == len(rest):
                self._tasks.put((job.id, job.fn_ref, idx + 1, job.mode, args, job.refdata, jid))
            else:
                for i in rest:
                    if not left[1][i - cs]:
                        msg = (job.id, job.fn_ref, i, job.mode, [left[0][i - cs]])
                        self._tasks.put((*msg, job.refdata, jid))

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
        probes = 0
        cap = _MAX_AUTO_CHUNK
        if n is not None:
            cap = max(1, min(cap, math.ceil(n / (4 * self._processes))))
        while self._state != _TERMINATE and job.id in self._jobs:
            if chunksize is not None:
                size = chunksize
            elif probes < self._processes:
                size = 1
                probes += 1
            else:
                if probes == self._processes:
                    # Wait briefly for a first measurement of this call's task cost.
                    job.measured.wait(0.05)
                    probes += 1
                with self._lock:
                    avg = job.seconds / job.timed if job.timed else None
                size = cap if avg is None or avg <= 0 else int(_CHUNK_SECONDS / (avg + 2e-6))
                size = max(1, min(cap, size))
            args = list(itertools.islice(it, size))
            if not args:
                break
            refs = self._substitute(job, args) if job.recur is None or job.recur else None
            with self._lock:
                job.chunks[start] = [args, bytearray(len(args)), len(args)]
                job.starts.append(start)
                floor = min(self._jobs, default=job.id)
            self._tasks.put((job.id, job.fn_ref, start, job.mode, args, refs, floor))
            start += len(args)
        with self._lock:
            job.total = start
            if job.id in self._jobs:
                self._maybe_complete(job)
            else:
                job.release()  # failed while fed: what the feeder took since goes too

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
        sink = job.sink
        if isinstance(sink, IMapIterator):
            with sink._cond:
                sink._items.append((False, e))
                sink._length = sink._yielded + len(sink._items)
                sink._cond.notify()
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
        self._slots = None  # type: ignore[assignment]

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

    def tick(self) -> None:
        self.done += 1
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
    _INLINE_FN bytes is the ref itself, a bigger one is copied once into a shoal array held for
    the call (hold), the ref then carrying the held handle's pickle (tens of bytes)."""
    data = ForkingPickler.dumps(obj)
    if len(data) <= _INLINE_FN:
        return bytes(data), None
    arr = _empty(len(data), dtype=np.uint8)
    arr[:] = np.frombuffer(data, dtype=np.uint8)
    hold = _hold(arr)
    return (ForkingPickler.dumps(arr).tobytes(),), hold


def _objects_of(a: Any, mode: int) -> Any:
    """The argument objects of one task (those worth a look by identity)."""
    if mode == _ONE:
        return a if type(a) is tuple else (a,)
    if mode == _STAR:
        return a if type(a) in (tuple, list) else ()
    return (*a[0], *a[1].values())


def _recurring(items: Iterable[Any], mode: int) -> set[int]:
    """The ids of the argument objects that occur more than once in items."""
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
