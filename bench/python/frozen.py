"""Frozen object graphs (seeds 000 and 001): lookups, iteration, freezing, Pool.map end to end,
and memory, side by side with the plain objects and the stdlib's ways, on the same data.

Measured in one run, interleaved, medians and spreads over >= 5 repetitions (1 warm-up):

a. lookup: ``for k in keys: d[k]`` over 10**6 random existing keys of a 2**20-entry dict, on
   the dict and on its FrozenDict, for int -> str (seed 001's cache) and str -> int (the keys
   looked up are equal, freshly built str objects, not the dict's own);
b. iteration: ``for x in l: pass`` over a list of 10**7 ints and its FrozenList;
c. ``shoal.freeze(d)`` next to ``pickle.dumps(d)`` of the same 2**20-entry dict;
d. seed 001 end to end: ``Pool(2).map(func, range(2**20))`` where ``func`` looks up the cache:
   the cache as a FrozenDict argument (``functools.partial``), as a plain dict in the partial,
   stored in a global by a Pool initializer (spawn and forkserver), inherited as a global over
   fork, in a ``Manager().dict()`` (extrapolated from a 64th of the tasks: each lookup is a
   round trip to the manager), and mpire's ``shared_objects`` where mpire is installed; then,
   once per way, each worker's memory growth (Anonymous/USS/PSS) and the machine's Shmem;
e. memory: a child (fork, spawn) that iterates the frozen list of 10**7 ints or looks up every
   key of the frozen dict of 2**20 entries, and the plain list under fork, whose every page of
   int objects the child copies (seed 000).

``--quick``: a 16th of the sizes. Size knobs: ``SHOAL_BENCH_FROZEN_DICT_N``,
``SHOAL_BENCH_FROZEN_LIST_N`` or ``SHOAL_BENCH_SCALE``. ``python bench/python/frozen.py
[--quick]`` prints the section; ``shoal bench`` calls ``run(quick)``.
"""

from __future__ import annotations

import argparse
import functools
import gc
import importlib
import multiprocessing as mp
import os
import pickle
import random
import sys
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import shoal
from shoal._tools.harness import (
    Result,
    Way,
    fmt_duration,
    memory_table,
    run_side_by_side,
    section,
    size_from_env,
)
from shoal._tools.measure import (
    ProcMem,
    diff,
    fmt_bytes,
    private_anonymous,
    proc_mem,
    settled_shmem,
    shmem_growth,
)

_mpire: Any
try:
    _mpire = importlib.import_module("mpire")
except ImportError:  # a peer: measured where it installs
    _mpire = None

DICT_ENV = "SHOAL_BENCH_FROZEN_DICT_N"
LIST_ENV = "SHOAL_BENCH_FROZEN_LIST_N"
DICT_N = 1 << 20
LIST_N = 10**7
LOOKUPS = 10**6
QUICK_DIV = 16
REPEAT = 5
WARMUP = 1
WORKERS = 2
MANAGER_DIV = 64
DEADLINE = 300.0
FLOOR = 4 << 20

DICT = "dict"
FROZEN = "FrozenDict"
LIST = "list"
FLIST = "FrozenList"
PICKLE = "pickle.dumps(d)"
FREEZE = "shoal.freeze(d)"

S_SHOAL = "FrozenDict argument (spawn)"
S_SHOAL_FS = "FrozenDict argument (forkserver)"
S_SHOAL_FORK = "FrozenDict argument (fork)"
S_SHOAL_FREEZE = "freeze + FrozenDict argument (spawn)"
S_PARTIAL = "partial(func, cache=dict) (spawn)"
S_INIT = "initializer + global (spawn)"
S_INIT_FS = "initializer + global (forkserver)"
S_FORK = "global inherited over fork"
S_MANAGER = f"Manager().dict() (spawn; 1/{MANAGER_DIV} of the tasks, extrapolated)"
S_MPIRE = "mpire WorkerPool(shared_objects=cache) (fork)"


# --------------------------------------------------------------------------------------
# workers (module level: spawn and forkserver children import this file by path)

_global_cache: Any = None
_before: tuple[ProcMem, int] | None = None
_barrier: Any = None


def _func(i: int, cache: Any) -> int:
    return int(cache[i].count("1"))


def _func_global(i: int) -> int:
    return int(_global_cache[i].count("1"))


def _func_mpire(cache: Any, i: int) -> int:
    return int(cache[i].count("1"))


def _set_global(cache: Any) -> None:
    global _global_cache
    _global_cache = cache


def _memory_now() -> tuple[ProcMem, int]:
    return proc_mem(), private_anonymous()


class _Before:
    """Unpickles to the receiving process's memory at that moment (a mark placed before the
    payload among a child's arguments); under fork it is not pickled and stays a _Before."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_memory_now, ())


def _init_measured(mark: Any, barrier: Any, cache: Any) -> None:
    global _before, _barrier, _global_cache
    _before = mark if isinstance(mark, tuple) else _memory_now()
    _barrier = barrier
    if cache is not None:  # else: none, or the global a forked worker inherited
        _global_cache = cache


def _report(_: int) -> tuple[int, ProcMem, ProcMem, int]:
    """One per worker (the barrier holds each until all have one): growth, figures now, and
    private anonymous growth."""
    _barrier.wait(DEADLINE)
    assert _before is not None
    now = proc_mem()
    return os.getpid(), diff(now, _before[0]), now, private_anonymous() - _before[1]


def _reader(mark: Any, obj: Any, what: str, conn: Connection) -> None:
    before, private = mark if isinstance(mark, tuple) else _memory_now()
    total = 0
    if what == "iterate":
        for x in obj:
            total += x
    else:
        for k in range(len(obj)):
            total += len(obj[k])
    conn.send((diff(proc_mem(), before), private_anonymous() - private, total))
    conn.recv()
    conn.close()


# --------------------------------------------------------------------------------------
# a, b, c: in this process


def _bench_lookup(n: int, lookups: int) -> tuple[Result, Result]:
    rng = random.Random(1)
    picks = [rng.randrange(n) for _ in range(lookups)]
    int_str = {i: bin(i) for i in range(n)}
    str_int = {f"key-{i}": i for i in range(n)}
    fi, fs = shoal.freeze(int_str), shoal.freeze(str_int)
    int_keys = picks
    str_keys = [f"key-{i}" for i in picks]  # equal, new objects

    def loop(d: Any, keys: list[Any]) -> Callable[[], object]:
        def fn() -> None:
            for k in keys:
                d[k]

        return fn

    r_int = run_side_by_side(
        [Way(DICT, loop(int_str, int_keys)), Way(FROZEN, loop(fi, int_keys))],
        repeat=REPEAT,
        warmup=WARMUP,
    )
    r_str = run_side_by_side(
        [Way(DICT, loop(str_int, str_keys)), Way(FROZEN, loop(fs, str_keys))],
        repeat=REPEAT,
        warmup=WARMUP,
    )
    return r_int, r_str


def _bench_iterate(n: int) -> Result:
    plain = list(range(n))
    frozen = shoal.freeze(plain)

    def loop(seq: Any) -> Callable[[], object]:
        def fn() -> None:
            for _ in seq:
                pass

        return fn

    return run_side_by_side(
        [Way(LIST, loop(plain)), Way(FLIST, loop(frozen))], repeat=REPEAT, warmup=WARMUP
    )


def _bench_freeze(n: int) -> tuple[Result, int, int]:
    d = {i: bin(i) for i in range(n)}
    held: list[Any] = []

    def drop() -> None:
        held.clear()
        gc.collect()

    res = run_side_by_side(
        [
            Way(PICKLE, lambda: held.append(pickle.dumps(d, protocol=5)), teardown=drop),
            Way(FREEZE, lambda: held.append(shoal.freeze(d)), teardown=drop),
        ],
        repeat=REPEAT,
        warmup=WARMUP,
    )
    return res, len(pickle.dumps(d, protocol=5)), shoal.freeze(d).nbytes


# --------------------------------------------------------------------------------------
# d: seed 001 end to end


class _Seed001:
    def __init__(self, n: int) -> None:
        self.n = n
        self.cache = {i: bin(i) for i in range(n)}
        self.frozen = shoal.freeze(self.cache)
        self.expect = [i.bit_count() for i in range(n)]
        self.wrong: set[str] = set()

    def check(self, name: str, got: list[int], n: int | None = None) -> None:
        if got != self.expect[: self.n if n is None else n]:
            self.wrong.add(name)

    def ways(self) -> list[Way]:
        n = self.n

        def pool_map(name: str, method: str, arg: str) -> Callable[[], object]:
            def fn() -> None:
                ctx = mp.get_context(method)
                if arg == "global":
                    with ctx.Pool(WORKERS, initializer=_set_global, initargs=(self.cache,)) as p:
                        got = p.map(_func_global, range(n))
                elif arg == "fork":
                    _set_global(self.cache)
                    try:
                        with ctx.Pool(WORKERS) as p:
                            got = p.map(_func_global, range(n))
                    finally:
                        _set_global(None)
                else:
                    if arg == "freeze":
                        cache: Any = shoal.freeze(self.cache)
                    else:
                        cache = self.frozen if arg == "frozen" else self.cache
                    with ctx.Pool(WORKERS) as p:
                        got = p.map(functools.partial(_func, cache=cache), range(n))
                self.check(name, got)

            return fn

        def manager() -> float:
            ctx = mp.get_context("spawn")
            m = n // MANAGER_DIV
            t0 = time.perf_counter()
            with ctx.Manager() as mgr:
                d = mgr.dict(self.cache)
                with ctx.Pool(WORKERS) as p:
                    t1 = time.perf_counter()
                    got = p.map(functools.partial(_func, cache=d), range(m))
                    t2 = time.perf_counter()
            self.check(S_MANAGER, got, m)
            return (t1 - t0) + (t2 - t1) * MANAGER_DIV

        ways = [
            Way(S_SHOAL, pool_map(S_SHOAL, "spawn", "frozen")),
            Way(S_SHOAL_FS, pool_map(S_SHOAL_FS, "forkserver", "frozen")),
            Way(S_SHOAL_FORK, pool_map(S_SHOAL_FORK, "fork", "frozen")),
            Way(S_SHOAL_FREEZE, pool_map(S_SHOAL_FREEZE, "spawn", "freeze")),
            Way(S_PARTIAL, pool_map(S_PARTIAL, "spawn", "dict")),
            Way(S_INIT, pool_map(S_INIT, "spawn", "global")),
            Way(S_INIT_FS, pool_map(S_INIT_FS, "forkserver", "global")),
            Way(S_FORK, pool_map(S_FORK, "fork", "fork")),
            Way(S_MANAGER, manager, self_timed=True),
        ]
        if _mpire is not None:

            def mpire_way() -> None:
                with _mpire.WorkerPool(
                    WORKERS, shared_objects=self.cache, start_method="fork"
                ) as p:
                    got = p.map(_func_mpire, range(n))
                self.check(S_MPIRE, got)

            ways.append(Way(S_MPIRE, mpire_way))
        return ways

    def memory(self, name: str) -> tuple[list[tuple[ProcMem, ProcMem, int]], int]:
        """One run of a way with each worker's memory growth reported; and Shmem growth."""
        method = {
            S_SHOAL_FS: "forkserver",
            S_INIT_FS: "forkserver",
            S_FORK: "fork",
            S_SHOAL_FORK: "fork",
        }.get(name, "spawn")
        ctx = mp.get_context(method)
        base = settled_shmem()
        barrier = ctx.Barrier(WORKERS)
        n = self.n
        use_global = name in (S_INIT, S_INIT_FS, S_FORK)
        if name == S_FORK:
            _set_global(self.cache)
        initargs = (_Before(), barrier, self.cache if name in (S_INIT, S_INIT_FS) else None)
        frozen: Any = shoal.freeze(self.cache) if name == S_SHOAL_FREEZE else self.frozen
        try:
            with ctx.Pool(WORKERS, initializer=_init_measured, initargs=initargs) as p:
                if use_global:
                    p.map(_func_global, range(n))
                else:
                    cache = self.cache if name == S_PARTIAL else frozen
                    p.map(functools.partial(_func, cache=cache), range(n))
                reports = p.map(_report, range(WORKERS), chunksize=1)
                # Machine-wide: a neighbour's passing segment can show; ours stays while held.
                ours = self.frozen.nbytes if name == S_SHOAL_FREEZE else 0
                shmem, _ = shmem_growth(base, ours + (4 << 20))
        finally:
            _set_global(None)
        return [(g, now, private) for _, g, now, private in reports], shmem


# --------------------------------------------------------------------------------------
# e: the memory of one reading child


def _child_growth(method: str, obj: Any, what: str) -> tuple[ProcMem, int]:
    """A child reads all of ``obj``: its memory growth and its private anonymous growth."""
    ctx: Any = mp.get_context(method)
    mine, theirs = ctx.Pipe()
    p = ctx.Process(target=_reader, args=(_Before(), obj, what, theirs))
    p.start()
    theirs.close()
    if not mine.poll(DEADLINE):
        raise RuntimeError("a reader did not report")
    growth, private, _ = mine.recv()
    mine.send("done")
    p.join(DEADLINE)
    mine.close()
    return growth, private


def _bench_children(
    list_n: int, dict_n: int
) -> tuple[dict[str, ProcMem], dict[str, int], list[str], bool]:
    rows: dict[str, ProcMem] = {}
    privates: dict[str, int] = {}
    notes: list[str] = []
    ok = True
    plain = list(range(list_n))
    size = sys.getsizeof(plain) + 32 * list_n
    fl = shoal.freeze(plain)
    cache = {i: bin(i) for i in range(dict_n)}
    fd = shoal.freeze(cache)
    del cache
    for method in ("fork", "spawn"):
        for label, obj, what in (
            (f"FrozenList of {list_n:,} ints, iterated", fl, "iterate"),
            (f"FrozenDict of {dict_n:,} entries, every key looked up", fd, "lookup"),
        ):
            g, private = _child_growth(method, obj, what)
            rows[f"{label} ({method} child)"] = g
            privates[f"{label} ({method} child)"] = private
            limit = max(obj.nbytes // 100, FLOOR)
            if max(g.anonymous, private) > limit:
                ok = False
                notes.append(
                    f"{label} ({method}): private growth {fmt_bytes(max(g.anonymous, private))}"
                    f" > {fmt_bytes(limit)}"
                )
    g, private = _child_growth("fork", plain, "iterate")
    rows[f"plain list of {list_n:,} ints, iterated (fork child)"] = g
    privates[f"plain list of {list_n:,} ints, iterated (fork child)"] = private
    notes.append(
        f"the plain list (about {fmt_bytes(size)}) made its forked child's private anonymous "
        f"memory grow by {fmt_bytes(private)} ({private / size:.0%}); its Anonymous by "
        f"{fmt_bytes(g.anonymous)}: smaps_rollup's Anonymous does not see copy-on-write copies"
    )
    return rows, privates, notes, ok


# --------------------------------------------------------------------------------------


def _verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def run(quick: bool) -> str:
    started = time.monotonic()
    div = QUICK_DIV if quick else 1
    dict_n = max(1024, size_from_env(DICT_ENV, DICT_N) // div)
    list_n = max(1024, size_from_env(LIST_ENV, LIST_N) // div)
    lookups = max(1024, LOOKUPS // div)

    r_int, r_str = _bench_lookup(dict_n, lookups)
    r_iter = _bench_iterate(list_n)
    r_freeze, pickle_bytes, frozen_bytes = _bench_freeze(dict_n)
    seed = _Seed001(dict_n)
    r_seed = run_side_by_side(seed.ways(), repeat=REPEAT, warmup=WARMUP, baseline=S_PARTIAL)
    seed_mem: dict[str, ProcMem] = {}
    seed_private: dict[str, int] = {}
    shmem_rows = []
    for name in r_seed.names:
        if name in (S_MANAGER, S_MPIRE):
            continue
        workers, shmem = seed.memory(name)
        for i, (g, now, private) in enumerate(workers):
            seed_mem[f"{name}, worker {i + 1} (growth)"] = g
            seed_mem[f"{name}, worker {i + 1} (now)"] = now
            seed_private[f"{name}, worker {i + 1}"] = private
        shmem_rows.append(f"| {name} | {fmt_bytes(shmem)} |")
    child_rows, child_private, child_notes, child_ok = _bench_children(list_n, dict_n)
    elapsed = time.monotonic() - started

    per_lookup = {
        k: r.median(FROZEN) / lookups for k, r in (("int -> str", r_int), ("str -> int", r_str))
    }
    targets = [
        (
            "lookup int -> str: FrozenDict <= 1.5x dict",
            f"{r_int.ratio(FROZEN):.2f}x",
            r_int.ratio(FROZEN) <= 1.5,
        ),
        (
            "lookup str -> int: FrozenDict <= 1.5x dict",
            f"{r_str.ratio(FROZEN):.2f}x",
            r_str.ratio(FROZEN) <= 1.5,
        ),
        (
            "iterate: FrozenList <= 2x list",
            f"{r_iter.ratio(FLIST):.2f}x",
            r_iter.ratio(FLIST) <= 2,
        ),
        (
            "freeze(d) <= pickle.dumps(d)",
            f"{r_freeze.ratio(FREEZE):.2f}x",
            r_freeze.ratio(FREEZE) <= 1,
        ),
        (
            "seed 001: FrozenDict argument faster than partial(dict) (spawn)",
            f"{r_seed.ratio(S_SHOAL, S_PARTIAL):.2f}x",
            r_seed.ratio(S_SHOAL, S_PARTIAL) < 1,
        ),
        (
            "seed 001: FrozenDict argument faster than initializer + global (spawn)",
            f"{r_seed.ratio(S_SHOAL, S_INIT):.2f}x",
            r_seed.ratio(S_SHOAL, S_INIT) < 1,
        ),
        (
            "seed 001: FrozenDict argument faster than initializer + global (forkserver)",
            f"{r_seed.ratio(S_SHOAL_FS, S_INIT_FS):.2f}x",
            r_seed.ratio(S_SHOAL_FS, S_INIT_FS) < 1,
        ),
        (
            "seed 001: FrozenDict argument faster than Manager().dict() (spawn)",
            f"{r_seed.ratio(S_SHOAL, S_MANAGER):.2f}x",
            r_seed.ratio(S_SHOAL, S_MANAGER) < 1,
        ),
        (
            "seed 001: FrozenDict argument (fork) <= 1.2x the global inherited over fork",
            f"{r_seed.ratio(S_SHOAL_FORK, S_FORK):.2f}x",
            r_seed.ratio(S_SHOAL_FORK, S_FORK) <= 1.2,
        ),
        (
            "children's private growth < max(1% of the image, 4 MiB)",
            "see the memory table",
            child_ok,
        ),
    ]
    parts = [
        (
            f"a 2**{dict_n.bit_length() - 1}-entry dict (`{{i: bin(i)}}`, and `{{f'key-{{i}}': "
            f"i}}` for str keys), {lookups:,} random existing keys, a list of {list_n:,} ints. "
            f"{REPEAT} rounds after {WARMUP} warm-up, the ways interleaved."
        ),
        "",
        r_int.to_markdown(f"lookup: `for k in keys: d[k]`, int -> str, {lookups:,} keys"),
        r_str.to_markdown(
            f"lookup: `for k in keys: d[k]`, str -> int, {lookups:,} keys (new equal str "
            "objects, their hash cached after the first round)"
        ),
        "Per lookup (FrozenDict, medians): "
        + ", ".join(f"{k}: {fmt_duration(v)}" for k, v in per_lookup.items())
        + ".",
        "",
        r_iter.to_markdown(f"iterate: `for x in l: pass`, {list_n:,} ints"),
        r_freeze.to_markdown(
            f"freeze vs pickle of the {dict_n:,}-entry int -> str dict (pickle: "
            f"{fmt_bytes(pickle_bytes)}; frozen image: {fmt_bytes(frozen_bytes)})"
        ),
        (
            f"shoal.freeze: {fmt_duration(r_freeze.median(FREEZE))} for {dict_n:,} entries, "
            f"{fmt_duration(r_freeze.median(FREEZE) / dict_n)} an entry."
        ),
        "",
        r_seed.to_markdown(
            f"seed 001: `Pool({WORKERS}).map(func, range({dict_n:,}))` end to end (Pool start "
            "included; the FrozenDict ways except 'freeze +' freeze once, beforehand)"
        ),
    ]
    if _mpire is None:
        parts.append("mpire: **not installed: skipped**.")
    if seed.wrong:
        parts.append("WRONG results: " + ", ".join(sorted(seed.wrong)))
    parts += [
        "",
        (
            "**Seed 001, workers' memory** (one run per way, after the map, every worker "
            "still alive): growth from the worker's start (before its initializer's arguments "
            "were unpickled) to after its last task, and its figures then:"
        ),
        "",
        memory_table(seed_mem),
        (
            "Private anonymous growth (from /proc/PID/smaps: new pages and copy-on-write "
            "copies, not shared memory):"
        ),
        "",
        "| worker | private anonymous growth |",
        "| --- | ---: |",
        *(f"| {k} | {fmt_bytes(v)} |" for k, v in seed_private.items()),
        "",
        "Machine Shmem growth during the run (the frozen image, for the shoal ways):",
        "",
        "| way | Shmem growth |",
        "| --- | ---: |",
        *shmem_rows,
        "",
        "**One reading child's memory growth** (seeds 000/001; one run each):",
        "",
        memory_table(child_rows),
        "| child | private anonymous growth |",
        "| --- | ---: |",
        *(f"| {k} | {fmt_bytes(v)} |" for k, v in child_private.items()),
        "",
        *(f"- {n}" for n in child_notes),
        "",
        "**Targets** (medians of this run):",
        "",
        "| target | measured | |",
        "| --- | ---: | --- |",
        *(f"| {t} | {m} | {_verdict(ok)} |" for t, m, ok in targets),
        "",
        f"Whole script: {fmt_duration(elapsed)}" + (" (`--quick`)." if quick else "."),
    ]
    return section("Frozen object graphs: lookups, iteration, freeze, seed 001", "\n".join(parts))


def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a 16th of the sizes")
    args = parser.parse_args()
    print(run(args.quick))


if __name__ == "__main__":
    _main()
