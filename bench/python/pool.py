"""Process pools side by side: the overhead per task and the start-up time (issue 17, 5 b, c).

Measures, in one run, interleaved, with medians and spreads over 3 repetitions:

1. N trivial tasks (``abs``; N = 10**5, ``--quick``: 10**4; knob ``SHOAL_BENCH_POOL_TASKS``)
   through ``map`` and ``imap_unordered`` on warm 2-worker pools (fork), with the default
   chunk size and with a tuned one (1000): shoal.Pool, multiprocessing.Pool,
   concurrent.futures.ProcessPoolExecutor (``map``; it has no ``imap_unordered``), mpire's
   WorkerPool and loky's executor (where they install);
2. the start-up time of a 2-worker pool under each start method: from the constructor to the
   first result of a 2-task ``map`` (the pool's teardown is not timed), shoal.Pool next to
   multiprocessing.Pool.

Run ``python bench/python/pool.py [--quick]`` to print the section; ``shoal bench`` calls
``run(quick)``.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import multiprocessing as mp
import time
from typing import Any

import shoal
from shoal._tools.harness import Result, Way, fmt_duration, run_side_by_side, section, size_from_env

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
WORKERS = 2
METHODS = ("fork", "spawn", "forkserver")


def _check(got: Any, n: int) -> None:
    got = list(got)
    if sorted(got) != list(range(n)):
        raise AssertionError("a pool lost or changed a task's result")


def _task_ways(pools: dict[str, Any], n: int) -> list[Way]:
    items = range(n)
    sh, mpp, ppe = pools["shoal"], pools["mp"], pools["ppe"]
    ways = [
        Way("shoal.Pool.map, default", lambda: _check(sh.map(abs, items), n)),
        Way(
            "shoal.Pool.imap_unordered, default",
            lambda: _check(sh.imap_unordered(abs, items), n),
        ),
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


def _startup_ways(method: str) -> list[Way]:
    box: list[Any] = []

    def teardown() -> None:
        while box:
            box.pop().terminate()

    def shoal_start() -> None:
        box.append(shoal.Pool(WORKERS, context=method))
        _check(box[-1].map(abs, range(2)), 2)

    def mp_start() -> None:
        box.append(mp.get_context(method).Pool(WORKERS))
        _check(box[-1].map(abs, range(2)), 2)

    return [
        Way(f"shoal.Pool({WORKERS}), {method}", shoal_start, teardown=teardown),
        Way(f"multiprocessing.Pool({WORKERS}), {method}", mp_start, teardown=teardown),
    ]


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
    pools = _start_pools()
    try:
        tasks = run_side_by_side(
            _task_ways(pools, n), REPEAT, WARMUP, baseline="multiprocessing.Pool.map, default"
        )
    finally:
        _stop_pools(pools)
    starts = [
        run_side_by_side(
            _startup_ways(m), REPEAT, WARMUP, baseline=f"multiprocessing.Pool({WORKERS}), {m}"
        )
        for m in METHODS
    ]
    elapsed = time.monotonic() - started
    missing = [name for name, mod in (("mpire", _mpire), ("loky", _loky)) if mod is None]
    parts = [
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
                "timed)"
            ),
            "",
        ]
    parts.append(f"Whole script: {fmt_duration(elapsed)}" + (" (`--quick`)." if quick else "."))
    return section("Process pools: overhead per task and start-up (shoal.Pool)", "\n".join(parts))


def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="10**4 tasks per call, not 10**5")
    print(run(parser.parse_args().quick))


if __name__ == "__main__":
    _main()
