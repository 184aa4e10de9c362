"""The worker's side of ``shoal.Pool`` (docs/design/pool.md): the loop each worker process runs,
and the few names a task message carries.

It lives apart from ``shoal._pool`` so that a spawn or forkserver worker imports little: the
parent pickles ``_worker`` by reference, so starting a worker imports this module (and the
``shoal`` package, whose ``__init__`` is lazy) and nothing of the parent's side -- no numpy, no
concurrent.futures. What must stay true: this module imports only the standard library pieces a
multiprocessing worker imports anyway, ``shoal._shoal`` and ``shoal._queues``' engine; the
slots arrive as a raw ``shoal._shoal.Segment`` and a big pickle as one, never as a numpy array.
tests/python/test_pool.py checks that a spawn worker has not imported numpy.
"""

from __future__ import annotations

import collections
import functools
import os
import pickle
import queue as _stdqueue
import signal
import time
from collections.abc import Callable
from multiprocessing.reduction import ForkingPickler

# typing is not imported at run time (a spawn worker imports this module; typing costs it 3 ms):
# the annotations are strings, and TYPE_CHECKING is True only for type checkers.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

from . import _shoal
from ._queues import Queue

# Task modes: fn(x), fn(*x), fn(*args, **kwargs).
_ONE, _STAR, _KW = 0, 1, 2
# Slot columns and states. The parent writes _NEW into a row before it starts the row's
# worker; the worker writes _IDLE once its initializer has returned, then _RUNNING / _IDLE
# around each chunk.
_S_STATE, _S_JOB, _S_START, _S_END, _S_INDEX = range(5)
_COLS = 5
_IDLE, _RUNNING, _NEW = 0, 1, 2
# A worker sends the results it holds at its chunk's end and whenever this many seconds have
# passed since it last sent some (a long chunk streams its results).
_FLUSH_SECONDS = 0.02
# How many calls' functions a worker keeps unpickled (older calls are over, or nearly).
_FN_CACHE = 4
# An idle worker checks this often (seconds) that the pool's process still lives.
_PARENT_CHECK = 1.0


class _Arg:
    """Stands in a chunk message for an argument that recurs across the call's tasks: the
    chunk's ``refs`` map its key to the argument's one pickle (inline bytes, or a held shoal
    segment's handle), which a worker unpickles once per call."""

    __slots__ = ("key",)

    def __init__(self, key: int) -> None:
        self.key = key

    def __reduce__(self) -> tuple[Any, ...]:
        return (_Arg, (self.key,))


# The stub re-exports ShoalError from shoal itself, a cycle mypy cannot resolve here.


class _Pickled:
    """The pool's initializer and initargs pickled once (ref: as _pickle_once's), for the
    workers of a spawn or forkserver pool to unpickle each."""

    __slots__ = ("ref",)

    def __init__(self, ref: Any) -> None:
        self.ref = ref

    def __reduce__(self) -> tuple[Any, ...]:
        return (_Pickled, (self.ref,))


def _worker(
    wid: int,
    tasks: Queue,
    results: Queue,
    slots: Any,
    init: Any,
    maxtasks: int | None,
    initret: bool,
    parent: int,
) -> None:
    # Ctrl-C is the parent's to handle: it stops the workers (a terminal sends SIGINT to the
    # whole foreground process group).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    slot = memoryview(slots).cast("B").cast("q")
    base = wid * _COLS
    value: Any = None
    if init is not None:
        try:
            # The initializer and its arguments: pickled once for the pool (a _Pickled), or
            # the objects themselves (inherited under fork, or pickled by Process when they
            # pickle only while spawning).
            initializer, initargs = _load_fn(init.ref) if type(init) is _Pickled else init
            value = initializer(*initargs)
        except Exception as e:  # noqa: BLE001 - the pool is broken: say so, do not loop
            try:
                results.put(("I", wid, _with_traceback(e)))
            except Exception:  # noqa: BLE001 - an unpicklable error: its text then
                results.put(("I", wid, RuntimeError(f"the initializer raised {e!r}")))
            return
    # Started and initialized (the parent wrote _NEW before starting this process): a death
    # from here on is not a failed start (Pool._supervise counts those).
    slot[base + _S_STATE] = _IDLE
    fns: collections.OrderedDict[int, Any] = collections.OrderedDict()
    # job -> {key: unpickled recurring argument}: one unpickle per call, dropped once the call
    # is over (older than the message's floor) or the worker has been idle for a while.
    argcache: dict[int, dict[int, Any]] = {}
    done = 0
    put = results.put
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
        total = len(args)
        # maxtasksperchild counts tasks: run only what is left of the quota.
        n = total if maxtasks is None else min(total, maxtasks - done)
        slot[base + _S_JOB] = job
        slot[base + _S_START] = start
        slot[base + _S_END] = start + total
        slot[base + _S_INDEX] = start
        slot[base + _S_STATE] = _RUNNING  # last: a RUNNING row is whole
        fn = fns.get(job)
        failed: BaseException | None = None
        if fn is None:
            try:
                fn = _load_fn(fn_ref)
                if initret:
                    fn = functools.partial(fn, initret=value)
            except BaseException as e:  # noqa: BLE001 - every task of the chunk fails with it
                failed = e
            else:
                fns[job] = fn
                if len(fns) > _FN_CACHE:
                    fns.popitem(last=False)
        if refs and failed is None:
            try:
                args = _resolve_args(args, mode, refs, argcache.setdefault(job, {}))
            except BaseException as e:  # noqa: BLE001 - every task of the chunk fails with it
                failed = e
        if failed is not None:
            err = _with_traceback(failed)
            _flush(put, job, start, [None] * total, dict.fromkeys(range(total), err), 0.0)
            slot[base + _S_STATE] = _IDLE
            continue
        _run_tasks(fn, mode, args, n, job, start, slots, base + _S_INDEX, put)
        done += n
        if n < total:
            # Retire mid-chunk: the rest goes back to the queue for another worker.
            rest = list(msg[4][n:])  # as sent (recurring arguments as keys)
            tasks.put((job, fn_ref, start + n, mode, rest, refs, floor))
        slot[base + _S_STATE] = _IDLE
        if maxtasks is not None and done >= maxtasks:
            return


def _run_tasks(
    fn: Any,
    mode: int,
    args: list[Any],
    n: int,
    job: int,
    start: int,
    slots: Any,
    at: int,
    put: Callable[[Any], None],
) -> None:
    """Run the first n tasks of a chunk, sending their results in batches: one message at the
    chunk's end, and one whenever _FLUSH_SECONDS have passed since the last (so a long chunk
    still streams). Before each task its index goes into the slot table (word `at` of the
    segment slots): that store is what lets the parent tell, after a death, the task that was
    running from the ones whose results died buffered here. fn(x) and fn(*x) run in C
    (_shoal.run_tasks: the call and the store, no Python loop); fn(*args, **kwargs) here. The
    clock is read between pieces of the chunk, not per task: pieces double in length while
    they take under a quarter of _FLUSH_SECONDS."""
    perf = time.perf_counter
    run = _shoal.run_tasks
    if type(args) is not list:
        args = list(args)
    star = mode == _STAR
    vals: list[Any] = []
    errs: dict[int, Any] | None = None
    first = start  # the index of the batch's first task
    pos, step = 0, 1
    t_flush = t_piece = perf()
    while pos < n:
        end = min(n, pos + step)
        while pos < end:
            if mode == _KW:
                stop, exc = _run_kw(fn, args, pos, end, slots, at, start + pos, vals)
            else:
                stop, exc = run(fn, args, pos, end, star, slots, at, start + pos, vals)
            if exc is None:
                pos = stop
            else:  # the task at stop raised: its error is its result; go on with the next
                errs = _task_error(errs, start + stop - first, exc)
                vals.append(None)
                pos = stop + 1
        now = perf()
        if now - t_piece < _FLUSH_SECONDS / 4:
            step += step
        t_piece = now
        if pos >= n or now - t_flush >= _FLUSH_SECONDS:
            # seconds: the batch's tasks and the previous flush (a result's pickle is part of
            # what a task costs the pool).
            _flush(put, job, first, vals, errs, now - t_flush)
            vals = []
            errs = None
            first = start + pos
            t_flush = now


def _run_kw(
    fn: Any, args: list[Any], pos: int, end: int, slots: Any, at: int, index: int, out: list[Any]
) -> tuple[int, BaseException | None]:
    """_shoal.run_tasks for fn(*a[0], **a[1]) (apply, submit: one task a chunk, as a rule)."""
    slot = memoryview(slots).cast("q")
    for i in range(pos, end):
        slot[at] = index + (i - pos)
        a = args[i]
        try:
            out.append(fn(*a[0], **a[1]))
        except Exception as e:  # noqa: BLE001 - a task's error is its result
            return i, e
    return end, None


def _with_traceback(e: BaseException) -> Any:
    """e with its traceback's text, to raise in the parent as multiprocessing's pool does (the
    parent's error chains a RemoteTraceback). multiprocessing.pool is imported here, on the first
    error, not at start-up: with its traceback and linecache it is most of what a worker would
    otherwise import beyond multiprocessing's own (docs/design/pool.md)."""
    from multiprocessing.pool import ExceptionWithTraceback  # type: ignore[attr-defined]

    return ExceptionWithTraceback(e, e.__traceback__)


def _task_error(errs: dict[int, Any] | None, off: int, e: BaseException) -> dict[int, Any]:
    """errs (made if None) with the task at offset off failed with e, its traceback kept."""
    if errs is None:
        errs = {}
    errs[off] = _with_traceback(e)
    return errs


def _flush(
    put: Callable[[Any], None],
    job: int,
    first: int,
    vals: list[Any],
    errs: dict[int, Any] | None,
    seconds: float,
) -> None:
    """Send one batch of results: tasks first .. first + len(vals) - 1 of the call, errs mapping
    an offset to its task's error (vals holds None there). A result that cannot be pickled
    fails its task only, with multiprocessing's MaybeEncodingError."""
    try:
        put((job, first, vals, errs, seconds))
    except Exception:  # noqa: BLE001 - find the culprits, one pickle per result
        good: list[Any] = []
        bad: dict[int, Any] = {}
        for j, v in enumerate(vals):
            x = errs[j] if errs is not None and j in errs else v
            try:
                ForkingPickler.dumps(x)
            except Exception as e:  # noqa: BLE001
                from multiprocessing.pool import MaybeEncodingError  # type: ignore[attr-defined]

                bad[j] = MaybeEncodingError(e, _safe_repr(x))
                good.append(None)
            else:
                if errs is not None and j in errs:
                    bad[j] = x
                good.append(v)
        put((job, first, good, bad or None, seconds))


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
    seg = pickle.loads(fn_ref[0])  # the held segment's handle
    return pickle.loads(memoryview(seg))


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
