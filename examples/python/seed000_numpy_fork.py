"""Seed 000: workers sum a big numpy array; is it shared or copied? Under every start method.

    python examples/python/seed000_numpy_fork.py [--size-mb 1024] [--workers 4]
        [--start-method fork|spawn|forkserver|all] [--json PATH]

The seed's script makes a global ``data = np.ones((N, N))`` at import time and has 4
forked workers call ``data.sum()``; it finds the array shared (fork's copy-on-write: numpy
keeps its elements in one buffer that nobody writes), while a list of ints is copied
(every ``for x in data`` writes the refcount of each element, dirtying every page). That
luck depends on fork: under spawn, and under forkserver (the Linux default since Python
3.14), each worker re-imports the module, so the global line runs again and every worker
builds its own copy.

With shoal the workers get ``data = shoal.share(np.ones((N, N)))`` as a Process argument
(a small handle when pickled, inherited under fork) and map the one copy, whatever the
start method. This script runs both, the seed's global and shoal, under the start
method(s) asked for, and prints each worker's private (Anonymous) growth while summing,
its USS and PSS, and the machine's Shmem growth. It exits with status 1 if a shoal worker's
private memory grew by more than max(1% of the array, 2 MiB), if Shmem grew by more than
one copy (+4 MiB of slack) with shoal, or if a sum is wrong. The seed's own figures are
shown, not checked.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import sys
import time
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

import shoal

# shoal's own /proc readers (shoal._tools.measure): Anonymous, USS and PSS from smaps_rollup;
# and the worker plumbing `shoal demo` uses too (shoal._tools.seeds: start the workers,
# gather their reports, let them go).
from shoal._tools import seeds
from shoal._tools.measure import (
    ProcMem,
    diff,
    fmt_bytes,
    fmt_signed,
    proc_mem,
    settled_shmem,
    shmem_growth,
    wait_shmem_back,
)

SLACK = 4 << 20
SEED = "the seed's global np.ones"
SHOAL = "shoal.share"


# The seed's global. Its script assigns it at import time; here the parent assigns it
# before starting the workers (the same thing for fork). A spawn or forkserver child
# imports this module afresh, finds None, and builds it as the seed's import-time line
# would: see seed_worker.
data: np.ndarray | None = None


def _report(conn: Connection, before: ProcMem, total: float, seconds: float) -> None:
    # seeds.finish waits until the parent has measured every worker while all are alive.
    report = {"pid": os.getpid(), "total": total, "seconds": seconds}
    seeds.finish(conn, report | {"growth": diff(proc_mem(), before)})


def seed_worker(n: int, conn: Connection) -> None:
    """The seed's worker: ``x = data.sum()`` on the module global."""
    global data
    before = proc_mem()
    t0 = time.perf_counter()
    if data is None:  # not inherited (spawn, forkserver): the import-time line runs again
        data = np.ones((n, n))
    total = float(data.sum())
    _report(conn, before, total, time.perf_counter() - t0)


def shoal_worker(shared: shoal.Array, conn: Connection) -> None:
    """The same worker with shoal: the array is an argument, mapped, never copied."""
    before = proc_mem()
    t0 = time.perf_counter()
    total = float(shared.sum())
    _report(conn, before, total, time.perf_counter() - t0)


def run(way: str, method: str, n: int, workers: int) -> dict[str, Any]:
    """Start the workers one way under one start method; return the figures."""
    global data
    ctx = mp.get_context(method)
    shmem0 = settled_shmem()
    shared = None
    nbytes = n * n * 8
    if way == SHOAL:
        local = np.ones((n, n))
        shared = shoal.share(local)
        del local
    else:
        data = np.ones((n, n))
    t0 = time.perf_counter()
    if way == SHOAL:
        conns, procs = seeds.start(ctx, shoal_worker, [(shared,)] * workers)
    else:
        conns, procs = seeds.start(ctx, seed_worker, [(n,)] * workers)
    try:
        reports = seeds.gather(conns)
        wall = time.perf_counter() - t0
        mems = [proc_mem(r["pid"]) for r in reports]
        # The limit applies to shoal (one copy); the seed's way is only shown.
        growth, readings = shmem_growth(shmem0, nbytes + SLACK if way == SHOAL else None)
    finally:
        seeds.dismiss(conns, procs, seeds.DEADLINE)
    data = None
    del shared
    wait_shmem_back(shmem0, SLACK)  # so that the next run starts from the same baseline
    return {
        "way": way,
        "start_method": method,
        "bytes": nbytes,
        "wall_seconds": wall,
        "shmem_growth": growth,
        "shmem_readings": readings,
        "workers": [
            {
                "pid": r["pid"],
                "sum_ok": r["total"] == float(n * n),
                "seconds": r["seconds"],
                "anonymous_growth": r["growth"].anonymous,
                "uss": m.uss,
                "pss": m.pss,
                "pss_shmem": m.pss_shmem,
            }
            for r, m in zip(reports, mems, strict=True)
        ],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--size-mb", type=int, default=1024, help="array size in MiB")
    ap.add_argument("--workers", type=int, default=4)
    methods = mp.get_all_start_methods()
    ap.add_argument("--start-method", default="all", choices=[*methods, "all"])
    ap.add_argument("--json", metavar="PATH", help="also write the figures as JSON here")
    args = ap.parse_args(argv)
    n = max(1, math.isqrt((args.size_mb << 20) // 8))
    nbytes = n * n * 8
    limit = max(nbytes // 100, 2 << 20)
    print(
        f"seed 000: {args.workers} workers each sum an array of {fmt_bytes(nbytes)} "
        f"(np.ones(({n}, {n}))); private growth is each worker's Anonymous memory growth "
        "while it got and summed the array"
    )
    runs = []
    ok = True
    for method in methods if args.start_method == "all" else [args.start_method]:
        for way in (SHOAL, SEED):
            r = run(way, method, n, args.workers)
            runs.append(r)
            ws = r["workers"]
            sums_ok = all(w["sum_ok"] for w in ws)
            growth = [w["anonymous_growth"] for w in ws]
            copies = sum(max(g, 0) for g in growth) / nbytes
            print(
                f"\n[{method}] {way}: {r['wall_seconds']:.2f} s to start the workers and sum; "
                f"machine Shmem {fmt_signed(r['shmem_growth'])}"
                + (f" (least of {r['shmem_readings']} readings)" if r["shmem_readings"] > 1 else "")
                + "; private copies made by the workers: "
                f"{copies:.2f}; sums {'right' if sums_ok else 'WRONG'}"
            )
            for w in ws:
                print(
                    f"  worker pid {w['pid']:>7}: private growth {fmt_signed(w['anonymous_growth'])}"
                    f", USS {fmt_bytes(w['uss'])}, PSS {fmt_bytes(w['pss'])}"
                    f" (of which shared memory {fmt_bytes(w['pss_shmem'])})"
                )
            if way == SHOAL:
                good = sums_ok and max(growth) <= limit and r["shmem_growth"] <= nbytes + SLACK
                print(
                    f"  check (private growth <= {fmt_bytes(limit)} per worker, Shmem <= one "
                    f"copy + {fmt_bytes(SLACK)}): {'yes' if good else 'NO'}"
                )
                ok = ok and good
            else:
                ok = ok and sums_ok
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"anonymous_limit": limit, "runs": runs, "ok": ok}, f, indent=1)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
