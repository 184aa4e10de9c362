"""Process pools side by side: seed 001 end to end, the overhead per task and the start-up time
(issue 17, 5 a, b, c).

Measures, in one run, interleaved, with medians and spreads over 3 repetitions:

0. seed 001 end to end (5 a): ``Pool(2)`` maps T tasks (T = 2**16; each looks up
   ``cache[k].count("1")``, the keys spread evenly over the cache) over a cache of C entries
   (``{i: bin(i)}``, C = 2**20), every way the seed and its peers give the workers the cache:
   multiprocessing.Pool with ``functools.partial`` (spawn), with an initializer + global (spawn,
   forkserver) and with the global inherited over fork; Manager().dict() (spawn); mpire's
   ``shared_objects`` (fork); loky's executor with an initializer + global and joblib's
   ``Parallel`` with the cache as an argument (where they install); shoal.Pool with the plain dict
   in the partial (spawn), with the cache frozen by ``shoal.freeze`` (fork, spawn, forkserver),
   and with ``initret`` (the plain dict and the frozen one, spawn); and, as a diagnosis,
   shoal.Pool with the global inherited over fork (the baseline's data flow: what the pool
   itself adds). Each repetition times, apart:
   the start-up (the constructor until every worker has run a task, its initializer included)
   and the task phase (from the call's first task to its last result, on the started, warm pool;
   the cache frozen beforehand); ``shoal.freeze`` is timed on its own next to
   ``pickle.dumps``. Then each worker's memory, read from the parent while the pool still runs,
   over a worker of a bare pool of the same kind (same start method, the same tasks without the
   cache), and the machine's Shmem growth. ``--quick``: C and T a 16th. Knobs
   ``SHOAL_BENCH_POOL_SEED_N``, ``SHOAL_BENCH_POOL_SEED_TASKS``.
1. N trivial tasks (``abs``; N = 10**5, ``--quick``: 10**4; knob ``SHOAL_BENCH_POOL_TASKS``)
   through ``map``, ``imap`` and ``imap_unordered`` on warm 2-worker pools (fork), with the default
   chunk size and with a tuned one (1000), and shoal.Pool's ``map`` with ``progress=True`` (the
   bar drawn into a buffer): shoal.Pool, multiprocessing.Pool,
   concurrent.futures.ProcessPoolExecutor (``map``; it has no ``imap_unordered``), mpire's
   WorkerPool and loky's executor (where they install);
2. the start-up time of a 2-worker pool under each start method: from the constructor to the
   first result of a 2-task ``map`` (the pool's teardown is not timed), shoal.Pool next to
   multiprocessing.Pool, interleaved, 15 repetitions, in a fresh interpreter whose main module
   imports only shoal and multiprocessing (a spawn worker re-imports the main module: this
   script's would weigh on both pools alike).

Run ``python bench/python/pool.py [--quick] [--seed-only]`` to print the section (``--seed-only``:
part 0 alone, a few minutes at full size; the whole script about 11 minutes on a loaded 2-core
machine, 3 in ``--quick``); ``shoal bench`` calls ``run(quick)``.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import functools
import gc
import io
import json
import math
import multiprocessing as mp
import pickle
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import shoal
from shoal._tools import seeds
from shoal._tools.harness import Result, Way, fmt_duration, run_side_by_side, section, size_from_env
from shoal._tools.measure import SHMEM_SLACK, ProcMem, diff, fmt_bytes, fmt_signed, machine_shmem

try:
    import mpire as _mpire
except ImportError:  # a peer: measured where it installs
    _mpire = None
try:
    import loky as _loky
except ImportError:
    _loky = None

N_ENV = "SHOAL_BENCH_POOL_TASKS"
N_DEFAULT = 10**5
N_QUICK = 10**4
TUNED = 1000
REPEAT = 3
WARMUP = 1
STARTUP_REPEAT = 15  # start-ups are short: more repetitions, for a ratio the noise moves less
WORKERS = 2
METHODS = ("fork", "spawn", "forkserver")


# --- 5 (a): seed 001 end to end ----------------------------------------------------------

SEED_N_ENV = "SHOAL_BENCH_POOL_SEED_N"
SEED_TASKS_ENV = "SHOAL_BENCH_POOL_SEED_TASKS"
SEED_N = 1 << 20
SEED_TASKS = 1 << 16
SEED_QUICK_DIV = 16
PRIVATE_LIMIT = 16 << 20  # the bound on a worker's private growth, cache frozen

A_PARTIAL = "multiprocessing.Pool, partial(func, cache=dict) (spawn)"
A_GLOBAL = "multiprocessing.Pool, initializer + global (spawn)"
A_GLOBAL_FS = "multiprocessing.Pool, initializer + global (forkserver)"
A_FORK = "multiprocessing.Pool, global inherited over fork"
A_MANAGER = "multiprocessing.Pool, Manager().dict() (spawn)"
A_MPIRE = "mpire WorkerPool(shared_objects=cache) (fork)"
A_LOKY = "loky executor, initializer + global"
A_JOBLIB = "joblib Parallel, delayed(func)(k, cache)"
A_SH_DICT = "shoal.Pool, partial(func, cache=dict) (spawn)"
A_SH_FROZEN = {m: f"shoal.Pool, partial(func, cache=frozen) ({m})" for m in METHODS}
A_SH_INITRET = "shoal.Pool, initret=dict (spawn)"
A_SH_INITRET_FROZEN = "shoal.Pool, initret=frozen (spawn)"
# Diagnosis: shoal.Pool with the baseline's own data flow (what the pool itself costs the call).
A_SH_FORK = "diagnosis: shoal.Pool, global inherited over fork"


def _func_mpire(cache: Any, k: int) -> int:
    """seeds.func for mpire, which passes its shared_objects first."""
    return int(cache[k].count("1"))


@dataclass
class _Open:
    """A started, warm pool of one way: its workers' pids, other processes that hold the cache
    for it (a manager), how to run the call and how to stop it."""

    pids: list[int]
    call: Callable[[], list[int]]
    close: Callable[[], None]
    helpers: dict[str, int] = field(default_factory=dict)


@dataclass
class _Memory:
    """One way's memory after its call, its pool still running."""

    workers: list[tuple[ProcMem, int]]  # (smaps_rollup, private anonymous) per worker
    helpers: dict[str, tuple[ProcMem, int]]
    shmem: int  # machine Shmem growth from before the pool started: the least of the runs


@dataclass
class _SeedWay:
    name: str
    kind: str  # which bare pool its workers are set against: "mp/spawn", "shoal/fork", ...
    open: Callable[[], _Open]
    start_s: list[float] = field(default_factory=list)
    shmem: list[int] = field(default_factory=list)  # per repetition
    memory: _Memory | None = None


def _mp_warm(pool: Any) -> list[int]:
    return seeds.warm(lambda r: pool.map(seeds.worker_pid, r, chunksize=1), WORKERS)


def _mp_stop(pool: Any) -> Callable[[], None]:
    def stop() -> None:
        pool.terminate()
        pool.join()

    return stop


class _Seed:
    """The cache, its frozen image, the task keys and every way (5 a)."""

    def __init__(self, n: int, tasks: int) -> None:
        self.n = n
        self.cache = {i: bin(i) for i in range(n)}
        self.frozen = shoal.freeze(self.cache)
        self.keys = range(0, n, max(1, n // tasks))[:tasks]
        self.expect = [k.bit_count() for k in self.keys]
        # multiprocessing.Pool.map's default chunk size, given to the peers whose own default
        # is one task a message (loky) or a batch size tuned for cheap arguments (joblib).
        self.chunk = max(1, math.ceil(len(self.keys) / (4 * WORKERS)))
        self.wrong: set[str] = set()

    def ways(self) -> list[_SeedWay]:
        ways = [
            _SeedWay(A_FORK, "mp/fork", self._mp_fork),
            _SeedWay(A_PARTIAL, "mp/spawn", functools.partial(self._mp, "spawn", "partial")),
            _SeedWay(A_GLOBAL, "mp/spawn", functools.partial(self._mp, "spawn", "global")),
            _SeedWay(
                A_GLOBAL_FS, "mp/forkserver", functools.partial(self._mp, "forkserver", "global")
            ),
            _SeedWay(A_MANAGER, "mp/spawn", self._manager),
        ]
        if _mpire is not None:
            ways.append(_SeedWay(A_MPIRE, "mpire/fork", self._mpire))
        if _loky is not None:
            ways.append(_SeedWay(A_LOKY, "loky/loky", self._loky))
        if _joblib_parallel() is not None:
            ways.append(_SeedWay(A_JOBLIB, "joblib/loky", self._joblib))
        ways.append(
            _SeedWay(A_SH_DICT, "shoal/spawn", functools.partial(self._shoal, "spawn", "dict"))
        )
        ways += [
            _SeedWay(A_SH_FROZEN[m], f"shoal/{m}", functools.partial(self._shoal, m, "frozen"))
            for m in METHODS
        ]
        ways += [
            _SeedWay(
                A_SH_INITRET, "shoal/spawn", functools.partial(self._shoal, "spawn", "initret")
            ),
            _SeedWay(
                A_SH_INITRET_FROZEN,
                "shoal/spawn",
                functools.partial(self._shoal, "spawn", "initret-frozen"),
            ),
            _SeedWay(A_SH_FORK, "shoal/fork", functools.partial(self._shoal, "fork", "global")),
        ]
        return ways

    # ---- the ways: each starts its pool, warms it and says how to run the call ----

    def _mp(self, method: str, how: str) -> _Open:
        ctx = mp.get_context(method)
        keys = self.keys
        if how == "global":
            pool = ctx.Pool(WORKERS, initializer=seeds.set_global, initargs=(self.cache,))
            fn: Any = seeds.func_global
        else:
            pool = ctx.Pool(WORKERS)
            fn = functools.partial(seeds.func, cache=self.cache)
        return _Open(_mp_warm(pool), lambda: pool.map(fn, keys), _mp_stop(pool))

    def _mp_fork(self) -> _Open:
        seeds.set_global(self.cache)  # the seed's module-level cache, as a forked worker sees it
        pool = mp.get_context("fork").Pool(WORKERS)
        keys = self.keys
        stop = _mp_stop(pool)

        def close() -> None:
            stop()
            seeds.set_global(None)

        return _Open(_mp_warm(pool), lambda: pool.map(seeds.func_global, keys), close)

    def _manager(self) -> _Open:
        ctx = mp.get_context("spawn")
        mgr = ctx.Manager()
        proxy = mgr.dict(self.cache)
        pool = ctx.Pool(WORKERS)
        fn = functools.partial(seeds.func, cache=proxy)
        keys = self.keys
        stop = _mp_stop(pool)

        def close() -> None:
            stop()
            mgr.shutdown()

        pid = mgr._process.pid  # type: ignore[attr-defined]  # the process holding the dict
        return _Open(_mp_warm(pool), lambda: pool.map(fn, keys), close, {"manager": pid})

    def _mpire(self) -> _Open:
        assert _mpire is not None
        pool = _mpire.WorkerPool(
            WORKERS, shared_objects=self.cache, start_method="fork", keep_alive=True
        )
        pids = seeds.warm(lambda r: pool.map(seeds.worker_pid, r, chunk_size=1), WORKERS)
        keys = self.keys
        return _Open(pids, lambda: pool.map(_func_mpire, keys), pool.terminate)

    def _loky(self) -> _Open:
        assert _loky is not None
        ex = _loky.get_reusable_executor(
            max_workers=WORKERS, initializer=seeds.set_global, initargs=(self.cache,)
        )
        pids = seeds.warm(lambda r: list(ex.map(seeds.worker_pid, r)), WORKERS)
        keys, chunk = self.keys, self.chunk
        return _Open(
            pids,
            lambda: list(ex.map(seeds.func_global, keys, chunksize=chunk)),
            lambda: ex.shutdown(wait=True),
        )

    def _joblib(self) -> _Open:
        parallel, delayed = _joblib_parallel()  # type: ignore[misc]
        pids = seeds.warm(
            lambda r: parallel(n_jobs=WORKERS)(delayed(seeds.worker_pid)(i) for i in r), WORKERS
        )
        keys, chunk, cache = self.keys, self.chunk, self.cache

        def call() -> list[int]:
            run = parallel(n_jobs=WORKERS, batch_size=chunk)
            return list(run(delayed(seeds.func)(k, cache) for k in keys))

        return _Open(pids, call, _joblib_shutdown)

    def _shoal(self, method: str, how: str) -> _Open:
        cache: Any = self.cache if how in ("dict", "initret") else self.frozen
        keys = self.keys
        if how == "global":  # under fork: the cache in the global the workers inherit
            seeds.set_global(self.cache)
            pool = shoal.Pool(WORKERS, context=method)

            def close() -> None:
                pool.terminate()
                seeds.set_global(None)

            return _Open(_mp_warm(pool), lambda: pool.map(seeds.func_global, keys), close)
        if how.startswith("initret"):
            pool = shoal.Pool(
                WORKERS,
                initializer=seeds.identity,
                initargs=(cache,),
                initret=True,
                context=method,
            )
            fn: Any = seeds.func_initret
        else:
            pool = shoal.Pool(WORKERS, context=method)
            fn = functools.partial(seeds.func, cache=cache)
        return _Open(_mp_warm(pool), lambda: pool.map(fn, keys), pool.terminate)

    # ---- a bare pool of each kind: what a worker costs without the cache ----

    def bare(self, kind: str) -> tuple[list[tuple[ProcMem, int]], int]:
        """The memory of a bare pool's workers after the same tasks without the cache, and the
        machine's Shmem growth from before it started (its queues, say)."""
        gc.collect()
        base = machine_shmem()
        lib, method = kind.split("/")
        keys = self.keys
        ex: Any
        if lib in ("mp", "shoal"):
            pool: Any = (
                shoal.Pool(WORKERS, context=method)
                if lib == "shoal"
                else mp.get_context(method).Pool(WORKERS)
            )
            pids = _mp_warm(pool)
            pool.map(seeds.func_no_cache, keys)
            mem = seeds.workers_memory(pids)
            shmem = machine_shmem() - base
            _mp_stop(pool)()
        elif lib == "mpire":
            assert _mpire is not None
            with _mpire.WorkerPool(WORKERS, start_method="fork", keep_alive=True) as pool:
                pids = seeds.warm(lambda r: pool.map(seeds.worker_pid, r, chunk_size=1), WORKERS)
                pool.map(seeds.func_no_cache, keys)
                mem = seeds.workers_memory(pids)
                shmem = machine_shmem() - base
                pool.terminate()
        elif lib == "loky":
            ex = _loky.get_reusable_executor(max_workers=WORKERS)
            pids = seeds.warm(lambda r: list(ex.map(seeds.worker_pid, r)), WORKERS)
            list(ex.map(seeds.func_no_cache, keys, chunksize=self.chunk))
            mem = seeds.workers_memory(pids)
            shmem = machine_shmem() - base
            ex.shutdown(wait=True)
        else:
            parallel, delayed = _joblib_parallel()  # type: ignore[misc]
            pids = seeds.warm(
                lambda r: parallel(n_jobs=WORKERS)(delayed(seeds.worker_pid)(i) for i in r),
                WORKERS,
            )
            parallel(n_jobs=WORKERS, batch_size=self.chunk)(
                delayed(seeds.func_no_cache)(k) for k in keys
            )
            mem = seeds.workers_memory(pids)
            shmem = machine_shmem() - base
            _joblib_shutdown()
        return mem, shmem

    def cache_bytes(self) -> int:
        c = self.cache
        return sys.getsizeof(c) + sum(sys.getsizeof(k) + sys.getsizeof(v) for k, v in c.items())


def _joblib_parallel() -> tuple[Any, Any] | None:
    """joblib's Parallel and delayed, imported when measured (a spawned worker of another way
    re-imports this script: it need not import joblib too), or None where it is missing."""
    try:
        from joblib import Parallel, delayed
    except ImportError:
        return None
    return Parallel, delayed


def _joblib_shutdown() -> None:
    """Stop the loky executor joblib keeps for its next call, so that the next start-up is
    timed from cold (joblib has no public call for it)."""
    from joblib.externals.loky import reusable_executor

    ex = getattr(reusable_executor, "_executor", None)
    if ex is not None:
        ex.shutdown(wait=True)


def _seed_timed(seed: _Seed, way: _SeedWay) -> Way:
    """One repetition: setup starts and warms the pool (its start-up recorded apart), fn times
    the call, teardown reads the memory and stops the pool."""
    box: list[Any] = []

    def setup() -> None:
        gc.collect()
        base = machine_shmem()
        t0 = time.perf_counter()
        opened = way.open()
        way.start_s.append(time.perf_counter() - t0)
        box[:] = [opened, base]

    def fn() -> float:
        opened = box[0]
        t0 = time.perf_counter()
        got = opened.call()
        seconds = time.perf_counter() - t0
        if list(got) != seed.expect:
            seed.wrong.add(way.name)
        return seconds

    def teardown() -> None:
        if not box:
            return
        opened, base = box
        box.clear()
        try:
            # Machine-wide: a neighbour's passing segment adds to one reading, never takes away
            # from ours, so the table keeps the least of the repetitions.
            way.shmem.append(machine_shmem() - base)
            way.memory = _Memory(
                seeds.workers_memory(opened.pids),
                dict(
                    zip(
                        opened.helpers,
                        seeds.workers_memory(opened.helpers.values()),
                        strict=True,
                    )
                ),
                min(way.shmem),
            )
        finally:
            opened.close()

    return Way(way.name, fn, setup, teardown, self_timed=True)


def _freeze_ways(seed: _Seed) -> list[Way]:
    kept: list[Any] = []
    return [
        Way("pickle.dumps(cache): what a partial pays per chunk", lambda: pickle.dumps(seed.cache)),
        Way(
            "shoal.freeze(cache), once",
            lambda: kept.append(shoal.freeze(seed.cache)),
            teardown=kept.clear,
        ),
    ]


def _memory_rows(
    ways: list[_SeedWay], bare: dict[str, tuple[list[tuple[ProcMem, int]], int]]
) -> tuple[str, dict[str, int]]:
    """The memory table, and each way's largest worker private growth over a bare worker."""
    lines = [
        (
            "| way | process | private growth over a bare worker | Anonymous | USS | PSS | "
            "PSS shmem | machine Shmem growth |"
        ),
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    worst: dict[str, int] = {}
    for w in ways:
        m = w.memory
        if m is None:
            continue
        ref = bare[w.kind][0]
        ref_private = statistics.median(p for _, p in ref)
        ref_mem = ref[0][0]
        grow = [p - int(ref_private) for _, p in m.workers]
        worst[w.name] = max(grow)
        rows: list[tuple[str, ProcMem, int | None]] = [
            (f"worker {i + 1}", mem, g)
            for i, ((mem, _), g) in enumerate(zip(m.workers, grow, strict=True))
        ]
        rows += [(name, mem, None) for name, (mem, _) in m.helpers.items()]
        for i, (who, mem, g) in enumerate(rows):
            d = diff(mem, ref_mem)
            cells = [
                w.name if i == 0 else "",
                who,
                fmt_signed(g)
                if g is not None
                else f"{fmt_bytes(m.helpers[who][1])} (private, all)",
                fmt_signed(d.anonymous) if g is not None else fmt_bytes(mem.anonymous),
                fmt_signed(d.uss) if g is not None else fmt_bytes(mem.uss),
                fmt_bytes(mem.pss),
                fmt_bytes(mem.pss_shmem),
                fmt_signed(m.shmem) if i == 0 else "",
            ]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n", worst


def _mark(ok: bool) -> str:
    return "met" if ok else "**missed**"


def seed001(quick: bool) -> str:
    """5 (a): seed 001 end to end; returns the markdown part."""
    div = SEED_QUICK_DIV if quick else 1
    n = max(1024, size_from_env(SEED_N_ENV, SEED_N) // div)
    tasks = max(64, min(n, size_from_env(SEED_TASKS_ENV, SEED_TASKS) // div))
    started = time.monotonic()
    seed = _Seed(n, tasks)
    ways = seed.ways()
    freeze = run_side_by_side(_freeze_ways(seed), REPEAT, WARMUP)
    res = run_side_by_side([_seed_timed(seed, w) for w in ways], REPEAT, WARMUP, baseline=A_FORK)
    starts = Result({w.name: w.start_s[WARMUP:] for w in ways}, baseline=A_FORK)
    bare = {kind: seed.bare(kind) for kind in dict.fromkeys(w.kind for w in ways)}
    mem_text, worst = _memory_rows(ways, bare)
    elapsed = time.monotonic() - started
    image = seed.frozen.nbytes
    one = seed.cache_bytes()
    rows = []
    for m in METHODS:
        name = A_SH_FROZEN[m]
        r = res.ratio(name, A_FORK)
        rows.append(
            (
                f"task phase, shoal.Pool + frozen cache ({m}) <= the global inherited over fork's",
                f"{r:.2f}x",
                r <= 1.0,
            )
        )
    for m in METHODS:
        name = A_SH_FROZEN[m]
        w = next(x for x in ways if x.name == name)
        assert w.memory is not None
        pool_shmem = bare[w.kind][1]
        ok = worst[name] <= PRIVATE_LIMIT and w.memory.shmem <= pool_shmem + SHMEM_SLACK
        rows.append(
            (
                (
                    f"one copy of the cache ({m}): each worker's private growth <= "
                    f"{fmt_bytes(PRIVATE_LIMIT)}, no Shmem beyond the image made once and the "
                    "bare pool's own"
                ),
                (
                    f"worst worker {fmt_signed(worst[name])}; Shmem {fmt_signed(w.memory.shmem)} "
                    f"(bare pool: {fmt_signed(pool_shmem)})"
                ),
                ok,
            )
        )
    rows.append(
        ("every way's results right", ", ".join(sorted(seed.wrong)) or "all right", not seed.wrong)
    )
    targets = ["| target | measured | |", "| --- | ---: | --- |"]
    targets += [f"| {a} | {b} | {_mark(ok)} |" for a, b, ok in rows]
    missing = [
        name
        for name, there in (
            ("mpire", _mpire is not None),
            ("loky", _loky is not None),
            ("joblib", _joblib_parallel() is not None),
        )
        if not there
    ]
    parts = [
        f"**Seed 001 end to end** (5 a): `Pool({WORKERS})` maps {len(seed.keys):,} tasks, each "
        f"`cache[k].count('1')` with the keys spread evenly over a cache of {n:,} entries "
        f"(`{{i: bin(i)}}`, about {fmt_bytes(one)} as a dict; frozen image "
        f"{fmt_bytes(image)}). Start-up: the constructor until every worker has run a task "
        "(the initializer's copy of the cache included). Task phase: the `map` call, from its "
        "first task to its last result, on the started, warm pool (the cache frozen "
        f"beforehand). loky and joblib are given multiprocessing's default chunk ({seed.chunk} "
        "tasks: loky's own is 1 task a message, joblib's automatic batches start at 1 task, "
        "each pickling the cache). "
        + (f"Not installed here: {', '.join(missing)}." if missing else "Every peer installed."),
        "",
        starts.to_markdown("Seed 001: start-up, to a warm pool"),
        freeze.to_markdown(f"Seed 001: freezing the cache ({n:,} entries), next to pickling it"),
        res.to_markdown("Seed 001: task phase, first task to last result"),
        (
            "**Seed 001: memory** (after the call, the pool still running): each worker against a "
            "worker of a bare pool of the same kind and start method that ran the same tasks "
            "without the cache (growth: private anonymous from /proc/PID/smaps, i.e. new pages and "
            "copy-on-write copies; Anonymous and USS from smaps_rollup; PSS and PSS shmem as they "
            "are), and the machine's Shmem growth from before the pool started (the frozen image "
            f"was made before, once: {fmt_bytes(image)}). A manager holds the whole dict."
        ),
        "",
        mem_text,
        "**Seed 001 targets** (issue 17, 5 a)",
        "",
        "\n".join(targets),
        "",
        f"Seed 001 part: {fmt_duration(elapsed)}.",
        "",
    ]
    return "\n".join(parts)


# --- 5 (b), (c): overhead per task, start-up ---------------------------------------------


def _check(got: Any, n: int) -> None:
    got = list(got)
    if sorted(got) != list(range(n)):
        raise AssertionError("a pool lost or changed a task's result")


def _with_progress(call: Callable[[], Any], n: int) -> None:
    # The bar (tqdm's when installed) is drawn as it would be on a terminal, into a buffer, so
    # that the row costs what a user's bar costs and the bench's output stays readable.
    with contextlib.redirect_stderr(io.StringIO()):
        _check(call(), n)


def _task_ways(pools: dict[str, Any], n: int) -> list[Way]:
    items = range(n)
    sh, mpp, ppe = pools["shoal"], pools["mp"], pools["ppe"]
    ways = [
        Way("shoal.Pool.map, default", lambda: _check(sh.map(abs, items), n)),
        Way(
            "shoal.Pool.map, default, progress=True (the bar drawn into a buffer)",
            lambda: _with_progress(lambda: sh.map(abs, items, progress=True), n),
        ),
        Way(
            "shoal.Pool.imap_unordered, default",
            lambda: _check(sh.imap_unordered(abs, items), n),
        ),
        Way("shoal.Pool.imap, default", lambda: _check(sh.imap(abs, items), n)),
        Way(f"shoal.Pool.map, chunksize={TUNED}", lambda: _check(sh.map(abs, items, TUNED), n)),
        Way(
            f"shoal.Pool.imap_unordered, chunksize={TUNED}",
            lambda: _check(sh.imap_unordered(abs, items, TUNED), n),
        ),
        Way("multiprocessing.Pool.map, default", lambda: _check(mpp.map(abs, items), n)),
        Way(
            "multiprocessing.Pool.imap_unordered, default (chunksize 1)",
            lambda: _check(mpp.imap_unordered(abs, items), n),
        ),
        Way(
            "multiprocessing.Pool.imap, default (chunksize 1)",
            lambda: _check(mpp.imap(abs, items), n),
        ),
        Way(
            f"multiprocessing.Pool.imap_unordered, chunksize={TUNED}",
            lambda: _check(mpp.imap_unordered(abs, items, TUNED), n),
        ),
        Way(
            "ProcessPoolExecutor.map, default (chunksize 1)", lambda: _check(ppe.map(abs, items), n)
        ),
        Way(
            f"ProcessPoolExecutor.map, chunksize={TUNED}",
            lambda: _check(ppe.map(abs, items, chunksize=TUNED), n),
        ),
    ]
    if "mpire" in pools:
        mp_ire, mp_ire_u = pools["mpire"], pools["mpire_u"]
        ways += [
            Way("mpire WorkerPool.map, default", lambda: _check(mp_ire.map(abs, items), n)),
            Way(
                "mpire WorkerPool.imap_unordered, default",
                lambda: _check(mp_ire_u.imap_unordered(abs, items), n),
            ),
        ]
    if "loky" in pools:
        lk = pools["loky"]
        ways.append(Way("loky executor map, default", lambda: _check(lk.map(abs, items), n)))
    return ways


def _start_pools() -> dict[str, Any]:
    ctx = mp.get_context("fork")
    pools: dict[str, Any] = {
        "shoal": shoal.Pool(WORKERS, context=ctx),
        "mp": ctx.Pool(WORKERS),
        "ppe": cf.ProcessPoolExecutor(WORKERS, mp_context=ctx),
    }
    if _mpire is not None:
        # Two: a kept-alive mpire pool reuses its workers only for the same kind of call (its
        # map's workers fail an imap_unordered).
        pools["mpire"] = _mpire.WorkerPool(WORKERS, start_method="fork", keep_alive=True)
        pools["mpire_u"] = _mpire.WorkerPool(WORKERS, start_method="fork", keep_alive=True)
    if _loky is not None:
        pools["loky"] = _loky.get_reusable_executor(max_workers=WORKERS)
    for name, p in pools.items():  # every worker started and warm
        if name == "mpire_u":
            _check(p.imap_unordered(abs, range(64)), 64)
        else:
            _check(p.map(abs, range(64)), 64)
    return pools


def _stop_pools(pools: dict[str, Any]) -> None:
    pools["shoal"].terminate()
    pools["mp"].terminate()
    pools["ppe"].shutdown()
    if "mpire" in pools:
        pools["mpire"].terminate()
        pools["mpire_u"].terminate()
    if "loky" in pools:
        pools["loky"].shutdown()


# Start-up is timed in a fresh interpreter whose main module imports only shoal and
# multiprocessing, as a user's script would: under spawn a worker re-imports the main module,
# and this script's (the harness, the seeds, numpy) would add the same weight to both pools.
# Interleaved repetitions, the first WARMUP of each way dropped (the forkserver's own start).
_STARTUP_CODE = """
import json, multiprocessing as mp, sys, time
import shoal
method, workers, repeat, warmup = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
out = {"shoal": [], "mp": []}
for r in range(warmup + repeat):
    for name in ("shoal", "mp"):
        t0 = time.perf_counter()
        if name == "shoal":
            pool = shoal.Pool(workers, context=method)
        else:
            pool = mp.get_context(method).Pool(workers)
        if sorted(pool.map(abs, range(2))) != [0, 1]:
            raise SystemExit("a pool lost a result")
        t = time.perf_counter() - t0
        pool.terminate()
        pool.join()
        if r >= warmup:
            out[name].append(t)
print(json.dumps(out))
"""


def _startup(method: str, repeat: int) -> Result:
    """Start-up of shoal.Pool and multiprocessing.Pool under `method`, timed in a fresh
    interpreter (_STARTUP_CODE)."""
    args = [method, str(WORKERS), str(repeat), str(WARMUP)]
    r = subprocess.run(
        [sys.executable, "-c", _STARTUP_CODE, *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if r.returncode != 0:
        raise RuntimeError(f"start-up timing under {method} failed: {r.stderr[-2000:]}")
    got = json.loads(r.stdout)
    shoal_name = f"shoal.Pool({WORKERS}), {method}"
    mp_name = f"multiprocessing.Pool({WORKERS}), {method}"
    return Result({shoal_name: got["shoal"], mp_name: got["mp"]}, baseline=mp_name)


def _rates(res: Result, n: int) -> str:
    return "\n".join(
        f"- {name}: {n / res.median(name):,.0f} tasks/s ({fmt_duration(res.median(name) / n)} "
        "per task)"
        for name in res.names
    )


def run(quick: bool) -> str:
    """Run every measurement; return the markdown section."""
    n = N_QUICK if quick else size_from_env(N_ENV, N_DEFAULT)
    started = time.monotonic()
    seed_text = seed001(quick)
    pools = _start_pools()
    try:
        tasks = run_side_by_side(
            _task_ways(pools, n), REPEAT, WARMUP, baseline="multiprocessing.Pool.map, default"
        )
    finally:
        _stop_pools(pools)
    starts = [_startup(m, STARTUP_REPEAT) for m in METHODS]
    elapsed = time.monotonic() - started
    missing = [name for name, mod in (("mpire", _mpire), ("loky", _loky)) if mod is None]
    parts = [
        seed_text,
        f"{n} trivial tasks (`abs`) per call, {WORKERS} warm workers per pool, fork; "
        + (f"not installed here: {', '.join(missing)}." if missing else "every peer installed."),
        "",
        tasks.to_markdown(f"{n} trivial tasks through each pool"),
        _rates(tasks, n),
        "",
    ]
    for m, res in zip(METHODS, starts, strict=True):
        parts += [
            res.to_markdown(
                f"Start-up, {m}: constructor to the first result of a 2-task map (teardown not "
                f"timed; {STARTUP_REPEAT} repetitions in a fresh interpreter whose main module "
                "imports only shoal and multiprocessing)"
            ),
            "",
        ]
    parts.append(f"Whole script: {fmt_duration(elapsed)}" + (" (`--quick`)." if quick else "."))
    return section(
        "Pool: seed 001 end to end, overhead per task and start-up (shoal.Pool)", "\n".join(parts)
    )


def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="10**4 trivial tasks per call, not 10**5; seed 001 a 16th",
    )
    parser.add_argument(
        "--seed-only", action="store_true", help="only seed 001 end to end (5 a), not (b) and (c)"
    )
    args = parser.parse_args()
    print(
        section("Pool: seed 001 end to end", seed001(args.quick))
        if args.seed_only
        else run(args.quick)
    )


if __name__ == "__main__":
    _main()
