"""Demo scene ``pool-initret``: seed 001 on shoal.Pool, the seed's proposal made real.

``Pool(2).map(func, keys)`` where ``func`` looks up a dict cache (``{i: bin(i)}``) and the keys are
every 16th of the cache's (the shape of bench/python/pool.py's seed 001: 2**16 tasks over 2**20
entries, here smaller), two ways under spawn: multiprocessing.Pool with the cache bound by ``functools.partial`` (the seed's
"naive" way: the whole dict is pickled into every chunk of tasks and unpickled by the worker that
takes it), and shoal.Pool with the cache frozen once (``shoal.freeze``) and handed to each
worker by the seed's proposed ``initret`` (``initializer=identity, initargs=(frozen,),
initret=True``: every task gets the initializer's return value as the keyword argument
``initret``; the frozen cache travels as a handle and every worker maps the one image).

Shown: the pool's start-up (until every worker has run a task), the ``map`` (first task to last
result, on the warm pool) and each worker's private memory, the most seen while the map runs
(sampled from the parent every 10 ms: the partial's copy is unpickled for a chunk and dropped
after it) and after it, over a worker of a bare pool of the same kind that ran the same tasks
without the cache (private anonymous memory from /proc/PID/smaps: new pages and copy-on-write
copies, not shared memory).

``run_scene(size_bytes, out)`` has the demo's scene signature and returns whether shoal kept its
promise: right results, and no worker of shoal's way holding a copy (its growth under
``seeds.private_limit`` of the image). bench/python/pool.py measures the same seed at full size
next to every peer.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing as mp
import statistics
import textwrap
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

from .._frozen import freeze
from .._pool import Pool
from . import seeds
from .harness import fmt_duration
from .measure import MIB, fmt_bytes, fmt_signed, private_anonymous

__all__ = ["run_scene"]

WORKERS = 2
METHOD = "spawn"
FLOOR = 4 * MIB
BYTES_PER_ENTRY = 96  # about what an int -> bin(int) entry takes
MAX_ENTRIES = 1 << 17  # the scene's cap: the stdlib way must finish in a second or so
STRIDE = 16  # one task every STRIDE keys

STDLIB = "multiprocessing.Pool + partial(dict)"
SHOAL = "shoal.Pool + initret (frozen)"


@dataclass
class _Ran:
    start: float  # seconds, the constructor until every worker has run a task
    took: float  # seconds, the map: first task to last result
    peak: list[int]  # each worker's private anonymous bytes, the most seen during the map
    after: list[int]  # and after it
    ok: bool  # results right


def _warm(pool: Any) -> list[int]:
    return seeds.warm(lambda r: pool.map(seeds.worker_pid, r, chunksize=1), WORKERS)


class _Peak:
    """Samples the workers' private anonymous memory from a thread while a call runs: a copy
    that a worker unpickles for one chunk of tasks and drops after it shows only meanwhile."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.peak = [0] * len(pids)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        while not self.stop.wait(0.01):
            for i, pid in enumerate(self.pids):
                with contextlib.suppress(OSError):
                    self.peak[i] = max(self.peak[i], private_anonymous(pid))

    def done(self) -> list[int]:
        self.stop.set()
        self.thread.join()
        return self.peak


def _run(make: Callable[[], Any], fn: Any, keys: range) -> _Ran:
    """Start a pool, warm it, map fn over keys; what it took and what its workers held."""
    t0 = time.perf_counter()
    pool = make()
    try:
        pids = _warm(pool)
        start = time.perf_counter() - t0
        peak = _Peak(pids)
        t1 = time.perf_counter()
        got = pool.map(fn, keys)
        took = time.perf_counter() - t1
        peaks = peak.done()
        after = [p for _, p in seeds.workers_memory(pids)]
    finally:
        pool.terminate()
        pool.join()
    ok = got == [k.bit_count() for k in keys]
    return _Ran(start, took, [max(a, b) for a, b in zip(peaks, after, strict=True)], after, ok)


def run_scene(size: int, out: TextIO) -> bool:
    """Seed 001 on multiprocessing.Pool (partial) and shoal.Pool (frozen initret); True if
    shoal's workers copied nothing and every result was right."""
    n = min(MAX_ENTRIES, max(1024, size // BYTES_PER_ENTRY))
    keys = range(0, n, STRIDE)
    cache = {i: bin(i) for i in range(n)}
    t0 = time.perf_counter()
    frozen = freeze(cache)
    freeze_s = time.perf_counter() - t0
    intro = (
        f"Pool({WORKERS}, {METHOD}).map(func, keys): {len(keys):,} tasks, each looking up one "
        f"key (every {STRIDE}th) of a cache of {n:,} entries ({{i: bin(i)}}). The seed's naive "
        "way binds the cache with functools.partial (pickled into every chunk of tasks); the "
        "way it proposes passes the initializer's return value to every task as `initret`, "
        "which shoal.Pool does: Pool(initializer=identity, initargs=(frozen,), initret=True), "
        f"the cache frozen once (shoal.freeze: {fmt_duration(freeze_s)}, an image of "
        f"{fmt_bytes(frozen.nbytes)})."
    )
    print(textwrap.fill(intro, 100), file=out)
    out.flush()
    ctx = mp.get_context(METHOD)
    # What a worker of each pool costs without the cache, after the same tasks.
    bare = {
        STDLIB: _run(lambda: ctx.Pool(WORKERS), seeds.func_no_cache, keys),
        SHOAL: _run(lambda: Pool(WORKERS, context=METHOD), seeds.func_no_cache, keys),
    }
    results = {
        STDLIB: _run(lambda: ctx.Pool(WORKERS), functools.partial(seeds.func, cache=cache), keys),
        SHOAL: _run(
            lambda: Pool(
                WORKERS,
                initializer=seeds.identity,
                initargs=(frozen,),
                initret=True,
                context=METHOD,
            ),
            seeds.func_initret,
            keys,
        ),
    }

    def over_bare(way: str, which: str) -> list[int]:
        ref = int(statistics.median(getattr(bare[way], which)))
        return [v - ref for v in getattr(results[way], which)]

    peak = {w: over_bare(w, "peak") for w in results}
    after = {w: over_bare(w, "after") for w in results}

    def per_worker(vals: list[int]) -> str:
        return ", ".join(fmt_signed(v) for v in vals)

    rows = [
        ("", STDLIB, SHOAL),
        ("start-up (to every worker warm)", *(fmt_duration(r.start) for r in results.values())),
        ("map: first task to last result", *(fmt_duration(r.took) for r in results.values())),
        ("private memory, each worker*: most", *(per_worker(peak[w]) for w in results)),
        ("                              after", *(per_worker(after[w]) for w in results)),
        ("results", *("right" if r.ok else "WRONG" for r in results.values())),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        print("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)), file=out)
    print(
        "  * over a worker of a bare pool of the same kind, same tasks; most: sampled every 10 ms",
        file=out,
    )
    limit = seeds.private_limit(frozen.nbytes, FLOOR)
    held = results[SHOAL].ok and all(g <= limit for g in peak[SHOAL] + after[SHOAL])
    print(
        f"\nConclusion: the map took {results[STDLIB].took / results[SHOAL].took:.1f}x as long "
        "with the cache pickled per chunk as with the frozen cache as initret; shoal's workers "
        f"hold no copy (each under {fmt_bytes(limit)}), and no global hides the data flow."
        if held
        else f"\nPROBLEM: a worker of shoal's way grew by more than {fmt_bytes(limit)}, or a "
        "result was wrong.",
        file=out,
    )
    out.flush()
    return held
