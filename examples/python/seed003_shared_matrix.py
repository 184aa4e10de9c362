"""Seed 003: a large read-only matrix read by 5 worker processes, held in memory once.

    python examples/python/seed003_shared_matrix.py [--size-mb 1024] [--workers 5]
        [--start-method spawn|fork|forkserver] [--json PATH]

The question behind it: a 60 GB SciPy matrix must be read by 5+ multiprocessing.Process
objects; it is read-only, so no lock is needed, but a copy per process is out of the
question. numpy-sharedmem (which leaked on abnormal exit), RawArray plus dtype mapping,
numpy.memmap, or a global inherited over fork? And is passing it to Process() pickling it?

With shoal: ``shared = shoal.share(matrix)`` once, then pass ``shared`` as an ordinary
Process argument. It pickles to a small handle under every start method (under fork it is
simply inherited), and each worker maps the same physical pages, read-only: a worker that
tries to write gets a ValueError, not a private copy. Nothing to name, unlink or clean up:
the memory goes when the last process holding it is gone, killed ones included.

Each worker sums its block of rows and the whole matrix and reports its memory. This
script checks, and exits with status 1 if not: every sum is right; every worker's private
memory (Anonymous) grew by at most max(1% of the matrix, 2 MiB) while reading it; the
machine's shared memory (Shmem) grew by at most one copy (+4 MiB of slack).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from multiprocessing.connection import Connection

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
)

COLS = 1024  # float64 columns: one row is 8 KiB
SLACK = 4 << 20


def worker(i: int, matrix: shoal.Array, lo: int, hi: int, conn: Connection) -> None:
    """Sum rows [lo, hi) and the whole matrix; report; wait until the parent has measured."""
    before = proc_mem()
    t0 = time.perf_counter()
    block = float(matrix[lo:hi].sum())
    whole = float(matrix.sum())
    seconds = time.perf_counter() - t0
    report = {
        "i": i,
        "pid": os.getpid(),
        "block": block,
        "whole": whole,
        "seconds": seconds,
        "growth": diff(proc_mem(), before),
        "kind": type(matrix).__name__,
        "writeable": bool(matrix.flags.writeable),
    }
    seeds.finish(conn, report)  # returns once the parent has measured every worker


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--size-mb", type=int, default=1024, help="matrix size in MiB")
    ap.add_argument("--workers", type=int, default=5)
    ap.add_argument("--start-method", default="spawn", choices=mp.get_all_start_methods())
    ap.add_argument("--json", metavar="PATH", help="also write the figures as JSON here")
    args = ap.parse_args(argv)
    n = args.workers
    rows = max(n, (args.size_mb << 20) // (COLS * 8))
    ctx = mp.get_context(args.start_method)

    shmem0 = settled_shmem()
    # The matrix, as the program would load it (here: distinct values, so a page mapped
    # at the wrong place would change a sum), then shared once. The local one is dropped.
    matrix = np.arange(rows * COLS, dtype=np.float64).reshape(rows, COLS)
    matrix /= 7.0
    t0 = time.perf_counter()
    shared = shoal.share(matrix)
    share_s = time.perf_counter() - t0
    del matrix
    nbytes = shared.nbytes
    print(
        f"seed 003: a {fmt_bytes(nbytes)} read-only matrix ({rows} x {COLS} float64), "
        f"shared once with shoal.share in {share_s:.3f} s; {n} workers ({args.start_method}) "
        "get it as a Process argument"
    )

    bounds = np.linspace(0, rows, n + 1).astype(int)
    expect_block = [float(shared[bounds[i] : bounds[i + 1]].sum()) for i in range(n)]
    expect_whole = float(shared.sum())

    t0 = time.perf_counter()
    blocks = [(i, shared, int(bounds[i]), int(bounds[i + 1])) for i in range(n)]
    conns, procs = seeds.start(ctx, worker, blocks)
    try:
        reports = seeds.gather(conns)
        wall = time.perf_counter() - t0
        # Every worker still maps the matrix: measure them all now.
        mems: list[ProcMem] = [proc_mem(r["pid"]) for r in reports]
        parent = proc_mem()
        growth, readings = shmem_growth(shmem0, nbytes + SLACK)
    finally:
        seeds.dismiss(conns, procs, seeds.DEADLINE)

    limit = max(nbytes // 100, 2 << 20)
    print(
        f"all {n} workers started, read and summed it in {wall:.2f} s (wall); each worker, "
        "while all of them map it:"
    )
    header = (
        f"  {'worker':>6} {'pid':>7}  {'rows':>15}  {'block sum':>9}  {'whole sum':>9}  "
        f"{'private growth':>14}  {'USS':>9}  {'PSS':>9}  {'PSS shmem':>9}"
    )
    print(header)
    workers_out = []
    ok = True
    pss_shmem_total = parent.pss_shmem
    for r, m in zip(reports, mems, strict=True):
        i = r["i"]
        block_ok = bool(np.isclose(r["block"], expect_block[i], rtol=1e-12, atol=0))
        whole_ok = bool(np.isclose(r["whole"], expect_whole, rtol=1e-12, atol=0))
        anon = r["growth"].anonymous
        ok = ok and block_ok and whole_ok and anon <= limit
        pss_shmem_total += m.pss_shmem
        rows_s = f"{bounds[i]}-{bounds[i + 1] - 1}"
        grew = fmt_signed(anon)
        print(
            f"  {i:>6} {r['pid']:>7}  {rows_s:>15}  {'ok' if block_ok else 'WRONG':>9}  "
            f"{'ok' if whole_ok else 'WRONG':>9}  {grew:>14}  "
            f"{fmt_bytes(m.uss):>9}  {fmt_bytes(m.pss):>9}  {fmt_bytes(m.pss_shmem):>9}"
        )
        workers_out.append(
            {
                "pid": r["pid"],
                "block_ok": block_ok,
                "whole_ok": whole_ok,
                "anonymous_growth": anon,
                "uss": m.uss,
                "pss": m.pss,
                "pss_shmem": m.pss_shmem,
                "seconds": r["seconds"],
                "kind": r["kind"],
                "writeable": r["writeable"],
            }
        )
    shmem_ok = growth <= nbytes + SLACK
    ok = ok and shmem_ok
    again = f", the least of {readings} readings" if readings > 1 else ""
    print(
        f"the machine's Shmem grew by {fmt_bytes(growth)} ({growth / nbytes:.2f} copies of "
        f"the matrix{again}); the shared pages' PSS summed over this process and the "
        f"workers: {fmt_bytes(pss_shmem_total)} ({pss_shmem_total / nbytes:.2f} copies)"
    )
    private_ok = all(w["anonymous_growth"] <= limit for w in workers_out)
    sums_ok = all(w["block_ok"] and w["whole_ok"] for w in workers_out)
    print(
        f"check: every worker's private growth <= {fmt_bytes(limit)}: "
        f"{'yes' if private_ok else 'NO'}; Shmem growth <= one copy + {fmt_bytes(SLACK)}: "
        f"{'yes' if shmem_ok else 'NO'}; all sums right: {'yes' if sums_ok else 'NO'}"
    )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(
                {
                    "bytes": nbytes,
                    "start_method": args.start_method,
                    "share_seconds": share_s,
                    "wall_seconds": wall,
                    "shmem_growth": growth,
                    "shmem_readings": readings,
                    "pss_shmem_total": pss_shmem_total,
                    "anonymous_limit": limit,
                    "workers": workers_out,
                    "ok": ok,
                },
                f,
                indent=1,
            )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
