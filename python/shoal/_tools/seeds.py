"""The worker processes of the seed problems, shared by the demo's scenes and the examples.

``shoal demo`` (scene_arrays, scene_frozen) and examples/python/seed*.py run the same seeds:
the workers below are the one copy of each seed's loop and of the plumbing that starts the
workers, measures them and collects their reports. They live in the package, not in the
examples, because the installed demo cannot import files from examples/.

The plumbing: ``start`` runs ``target(*args, conn)`` in one process per argument tuple;
a worker measures itself, hands its report to ``finish`` (which also holds it until the
parent has measured every worker while all are alive) and exits when ``dismiss`` says so.
``gather`` collects the reports. ``Before`` first among a worker's arguments tells its memory
before the rest of its arguments are unpickled.

Seed 000 (lists): ``iterate``, the seed's ``for x in data``, over ``data`` (the seed's global,
inherited under fork) or over its argument. Seed 001 (a dict cache in ``Pool.map``): ``func``
and its variants, and ``pool_map``, which runs one of them the way the seed asks; and, for a
pool that is already running (shoal.Pool next to its peers: the demo's ``pool`` scene and
bench/python/pool.py), ``warm`` (until every worker has run a task) and ``workers_memory``
(each worker's figures read from the parent, to set against a bare pool's worker).
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Iterable, Sequence
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from typing import Any

from .harness import dismiss
from .measure import ProcMem, diff, private_anonymous, proc_mem

__all__ = [
    "DEADLINE",
    "Before",
    "before",
    "dismiss",
    "finish",
    "func",
    "func_global",
    "func_initret",
    "func_no_cache",
    "gather",
    "identity",
    "iterate",
    "memory_now",
    "pool_map",
    "private_limit",
    "set_global",
    "start",
    "warm",
    "worker_pid",
    "workers_memory",
]

DEADLINE = 300.0
"""Seconds to wait for a worker's report or its exit: a bound for a hung worker, never
expected to be reached."""


def private_limit(nbytes: int, floor: int) -> int:
    """How much a worker's private memory may grow while it reads ``nbytes`` of shared data
    and still count as having copied none of it: 1% of the data, at least ``floor``."""
    return max(nbytes // 100, floor)


# --------------------------------------------------------------------------------------
# plumbing


def memory_now() -> tuple[ProcMem, int]:
    """This process's smaps_rollup figures and its private anonymous memory, now."""
    return proc_mem(), private_anonymous()


class Before:
    """Unpickles to the receiving process's ``memory_now()``: placed before the data among a
    spawned worker's arguments, it measures the worker before the data arrives. Under fork
    nothing is pickled and the worker gets the Before itself: it then measures when it starts
    (see ``before``)."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (memory_now, ())


def before(mark: Any) -> tuple[ProcMem, int]:
    """What a ``Before`` argument unpickled to, or the memory now if it was inherited."""
    return mark if isinstance(mark, tuple) else memory_now()


def start(
    ctx: Any, target: Callable[..., None], argsets: Iterable[tuple[Any, ...]]
) -> tuple[list[Connection], list[BaseProcess]]:
    """One daemon process per tuple of ``argsets``, started by the multiprocessing context
    ``ctx`` and running ``target(*args, conn)``; returns the parent's ends of the pipes and
    the processes."""
    conns: list[Connection] = []
    procs: list[BaseProcess] = []
    for args in argsets:
        mine, theirs = ctx.Pipe()
        p = ctx.Process(target=target, args=(*args, theirs), daemon=True)
        p.start()
        theirs.close()
        conns.append(mine)
        procs.append(p)
    return conns, procs


def gather(conns: Sequence[Connection], deadline: float = DEADLINE) -> list[dict[str, Any]]:
    """Every worker's report, in the order of ``conns``."""
    reports = []
    for c in conns:
        if not c.poll(deadline):
            raise RuntimeError("a worker did not report")
        reports.append(c.recv())
    return reports


def finish(conn: Connection, report: dict[str, Any]) -> None:
    """A worker's last step: send its report, then wait for the parent's word (``dismiss``),
    so that the parent measures every worker while all of them still map the data."""
    conn.send(report)
    conn.recv()
    conn.close()


# --------------------------------------------------------------------------------------
# seed 000: a big list iterated by forked workers

data: Any = None
"""The seed's global list. The parent assigns it just before it forks (the seed assigns it
at import time: the same thing under fork) and a forked worker inherits it."""


def iterate(mark: Any, items: Any, conn: Connection) -> None:
    """The seed's loop, ``for x in data``, over the argument (or the inherited ``data`` when
    the argument is None); reports the sum and the worker's growth while iterating."""
    mem, private = before(mark)
    items = data if items is None else items
    t0 = time.perf_counter()
    total = 0
    for x in items:
        total += x
    seconds = time.perf_counter() - t0
    finish(
        conn,
        {
            "pid": os.getpid(),
            "total": total,
            "seconds": seconds,
            "growth": diff(proc_mem(), mem),
            "private": private_anonymous() - private,
        },
    )


# --------------------------------------------------------------------------------------
# seed 001: Pool.map over a function that looks up a dict cache

# Per Pool worker: its memory when it started, the barrier of the final report, and the
# cache the initializer way stores in a global (the seed's make_global).
_start_memory: tuple[ProcMem, int] | None = None
_barrier: Any = None
global_cache: Any = None


def func(i: int, cache: Any) -> int:
    """The seed's function, with the cache as an argument."""
    return int(cache[i].count("1"))


def func_no_cache(i: int) -> int:
    """What the cache holds, computed: the same Pool work without any cache."""
    return i.bit_count()


def func_global(i: int) -> int:
    """The seed's function for the initializer way: the cache is a global."""
    return int(global_cache[i].count("1"))


def func_initret(i: int, initret: Any) -> int:
    """The seed's proposal: the initializer's return value, the cache, as ``initret``."""
    return int(initret[i].count("1"))


def identity(cache: Any) -> Any:
    """The seed's initializer for ``initret``: the value it returns is every task's."""
    return cache


def set_global(cache: Any) -> None:
    """The seed's ``make_global``: the initializer that stores the cache in a global."""
    global global_cache
    global_cache = cache


def worker_pid(_: Any = None, *__: Any, **___: Any) -> int:
    """The pid of the worker that runs it; slow enough (a few ms) that every worker of a pool
    takes some of a handful of tasks. Any arguments (a shared object, ``initret``) are
    ignored."""
    time.sleep(0.005)
    return os.getpid()


def warm(run_tasks: Callable[[range], Iterable[int]], workers: int) -> list[int]:
    """Run ``worker_pid`` tasks through a pool (``run_tasks(range(k))`` maps them, one task a
    chunk) until every one of its ``workers`` has run one; returns their pids. A worker that
    is still starting (unpickling its initializer's arguments, say) is waited for: the pool
    is then started and warm."""
    seen: set[int] = set()
    end = time.monotonic() + DEADLINE
    while len(seen) < workers:
        if time.monotonic() > end:
            raise RuntimeError(f"only {len(seen)} of {workers} pool workers ran a task")
        seen.update(run_tasks(range(4 * workers)))
    return sorted(seen)


def workers_memory(pids: Iterable[int]) -> list[tuple[ProcMem, int]]:
    """Each process's smaps_rollup figures and its private anonymous bytes, read now from
    this process (the workers of a pool, still running)."""
    return [(proc_mem(pid), private_anonymous(pid)) for pid in pids]


def _init(mark: Any, barrier: Any, cache: Any) -> None:
    global _start_memory, _barrier, global_cache
    _start_memory = before(mark)
    _barrier = barrier
    global_cache = cache


def _report(_: int) -> tuple[int, ProcMem, int]:
    """One per worker (the barrier holds each until all have taken one): its pid, its
    smaps_rollup growth and its private anonymous growth since it started."""
    _barrier.wait(DEADLINE)
    assert _start_memory is not None
    mem, private = _start_memory
    return os.getpid(), diff(proc_mem(), mem), private_anonymous() - private


PARTIAL = "partial"
GLOBAL = "global"
NO_CACHE = "no cache"


def pool_map(
    ctx: BaseContext, workers: int, n: int, how: str, cache: Any = None
) -> tuple[float, list[tuple[int, ProcMem, int]], bool]:
    """``Pool(workers).map`` over ``range(n)``, end to end: with ``func`` bound to ``cache``
    by ``functools.partial`` (``how`` PARTIAL), with ``func_global`` and the cache stored by
    the Pool's initializer (GLOBAL), or with ``func_no_cache`` (NO_CACHE: the Pool's own
    cost). Returns the seconds taken, each worker's ``_report`` and whether every result
    was right."""
    barrier = ctx.Barrier(workers)
    initargs = (Before(), barrier, cache if how == GLOBAL else None)
    t0 = time.perf_counter()
    with ctx.Pool(workers, initializer=_init, initargs=initargs) as pool:
        if how == GLOBAL:
            got = pool.map(func_global, range(n))
        elif how == NO_CACHE:
            got = pool.map(func_no_cache, range(n))
        else:
            got = pool.map(functools.partial(func, cache=cache), range(n))
        wall = time.perf_counter() - t0
        growth = pool.map(_report, range(workers), chunksize=1)
    return wall, growth, got == [i.bit_count() for i in range(n)]
