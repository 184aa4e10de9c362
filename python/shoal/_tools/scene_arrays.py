"""Demo scene ``arrays``: seed 003 in miniature, the stdlib ways next to shoal.

A read-only float64 matrix is read by three worker processes (spawn), each of which sums
all of it. Three ways of handing it over, run one after the other on the same matrix:

- **pickled per worker**: the matrix itself as a Process argument, what the stdlib does
  with an ndarray. Each worker unpickles a private copy;
- **multiprocessing.shared_memory**: one copy in a named segment; the workers get its
  name, shape and dtype and attach; the creator closes and unlinks it at the end (and a
  SIGKILL before that leaves it in /dev/shm);
- **shoal.share**: one copy; the ``shoal.Array`` itself is the Process argument.

For each way the scene measures, per worker, the growth of its private memory (Anonymous,
from just before its argument was unpickled to after its sum) and its PSS while every
worker maps the matrix; and the growth of the machine's Shmem. It prints them side by side
and a one-line conclusion drawn from those figures.

``run_scene(size_bytes, out)`` runs it with the demo's scene signature (returns whether
shoal kept its promise: no private copy, one shared copy, right sums). Its workers start,
report and exit through ``seeds``, as the examples' do.
"""

from __future__ import annotations

import gc
import multiprocessing as mp
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing import shared_memory
from multiprocessing.connection import Connection
from typing import Any, TextIO

import numpy as np

from .._array import Array, share_array
from . import seeds
from .harness import fmt_duration
from .measure import (
    MIB,
    SHMEM_SLACK,
    fmt_bytes,
    fmt_signed,
    proc_mem,
    settled_shmem,
    shmem_growth,
    wait_shmem_back,
)

__all__ = ["run_scene"]

COLS = 1024  # float64 columns: one row is 8 KiB
WORKERS = 3

PICKLED = "pickled per worker"
STDLIB = "shared_memory"
SHOAL = "shoal.share"


# --------------------------------------------------------------------------------------
# the workers (module level: spawn children import them by name)


def _worker(way: str, mark: Any, payload: Any, conn: Connection) -> None:
    before, _ = seeds.before(mark)
    held: Any = None
    if way == STDLIB:
        name, shape, dtype = payload
        held = shared_memory.SharedMemory(name=name)
        matrix = np.ndarray(shape, dtype, buffer=held.buf)
    else:
        matrix = payload  # PICKLED: a private ndarray; SHOAL: a shoal.Array
    t0 = time.perf_counter()
    total = float(matrix.sum())
    seconds = time.perf_counter() - t0
    report = {
        "pid": os.getpid(),
        "total": total,
        "seconds": seconds,
        "anon_growth": proc_mem().anonymous - before.anonymous,
    }
    seeds.finish(conn, report)  # returns once the parent has measured every worker
    del matrix
    if held is not None:
        held.close()


# --------------------------------------------------------------------------------------
# one way


@dataclass
class _Outcome:
    way: str
    wall: float = 0.0  # seconds from handing over to every worker having summed
    share: float = 0.0  # seconds to put the matrix in shared memory (0 when pickled)
    anon: list[int] = field(default_factory=list)  # per worker
    pss: list[int] = field(default_factory=list)  # per worker, while all map it
    shmem: int = 0  # the machine's Shmem growth while the workers map it
    sums_ok: bool = True


def _run_way(way: str, matrix: np.ndarray, expect: float) -> _Outcome:
    o = _Outcome(way)
    ctx = mp.get_context("spawn")
    base = settled_shmem()
    shm: shared_memory.SharedMemory | None = None
    shared: Array | None = None
    t0 = time.perf_counter()
    if way == STDLIB:
        shm = shared_memory.SharedMemory(create=True, size=matrix.nbytes)
        np.ndarray(matrix.shape, matrix.dtype, buffer=shm.buf)[...] = matrix
        payload: Any = (shm.name, matrix.shape, matrix.dtype.str)
    elif way == SHOAL:
        shared = share_array(matrix)
        payload = shared
    else:
        payload = matrix
    o.share = time.perf_counter() - t0 if way != PICKLED else 0.0
    t0 = time.perf_counter()
    conns, procs = seeds.start(ctx, _worker, [(way, seeds.Before(), payload)] * WORKERS)
    try:
        reports = seeds.gather(conns)
        o.wall = time.perf_counter() - t0
        o.pss = [proc_mem(r["pid"]).pss for r in reports]
        # Only the shared ways are held to one copy: a pickled one's Shmem is only shown.
        o.shmem, _ = shmem_growth(base, matrix.nbytes + SHMEM_SLACK if way != PICKLED else None)
        o.anon = [r["anon_growth"] for r in reports]
        o.sums_ok = all(bool(np.isclose(r["total"], expect, rtol=1e-12, atol=0)) for r in reports)
    finally:
        seeds.dismiss(conns, procs, seeds.DEADLINE)
        if shm is not None:
            shm.close()
            shm.unlink()
        del shared, payload
        gc.collect()
        wait_shmem_back(base, SHMEM_SLACK)  # untimed: so that the next way starts level
    return o


# --------------------------------------------------------------------------------------
# the scene


def run_scene(size: int, out: TextIO) -> bool:
    """The scene with the demo's signature: ``size`` in bytes; True if shoal held."""
    rows = max(WORKERS, size // (COLS * 8))
    matrix = np.arange(rows * COLS, dtype=np.float64).reshape(rows, COLS)
    matrix /= 3.0
    expect = float(matrix.sum())
    nbytes = matrix.nbytes
    print(
        f"A read-only matrix of {fmt_bytes(nbytes)} ({rows} x {COLS} float64) is read by "
        f"{WORKERS} worker processes (spawn), each summing all of it. Handed over three "
        "ways, one after the other:",
        file=out,
    )
    out.flush()
    results = {way: _run_way(way, matrix, expect) for way in (PICKLED, STDLIB, SHOAL)}

    def per_worker(values: list[int], fmt: Callable[[int], str] = fmt_signed) -> str:
        lo, hi = min(values), max(values)
        return fmt(lo) if abs(hi - lo) < MIB else f"{fmt(lo)} .. {fmt(hi)}"

    def copies(o: _Outcome) -> float:
        return (max(o.shmem, 0) + sum(max(a, 0) for a in o.anon)) / nbytes

    rows_out = [
        ("", *results),
        (
            "shared once in",
            *(fmt_duration(o.share) if o.way != PICKLED else "-" for o in results.values()),
        ),
        ("workers started + summed in", *(fmt_duration(o.wall) for o in results.values())),
        ("private growth, each worker", *(per_worker(o.anon) for o in results.values())),
        ("PSS, each worker", *(per_worker(o.pss, fmt_bytes) for o in results.values())),
        ("machine Shmem growth", *(fmt_signed(o.shmem) for o in results.values())),
        ("copies of the matrix", *(f"{copies(o):.2f}" for o in results.values())),
        ("sums", *("right" if o.sums_ok else "WRONG" for o in results.values())),
    ]
    widths = [max(len(r[i]) for r in rows_out) for i in range(len(rows_out[0]))]
    for r in rows_out:
        print("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)), file=out)

    s, p, m = results[SHOAL], results[PICKLED], results[STDLIB]
    limit = seeds.private_limit(nbytes, 2 * MIB)
    held = s.sums_ok and max(s.anon) <= limit and s.shmem <= nbytes + SHMEM_SLACK
    print(
        f"\nConclusion: shoal kept {copies(s):.2f} copies for {WORKERS} workers "
        f"(pickling: {copies(p):.2f}, {p.wall / s.wall:.1f}x shoal's time; shared_memory: "
        f"{copies(m):.2f}, with a name, shape and dtype to pass and an unlink() to call) "
        f"by passing the array itself."
        if held
        else f"\nPROBLEM: shoal's workers grew by {per_worker(s.anon)} of private memory and "
        f"Shmem by {fmt_signed(s.shmem)} (limits: {fmt_bytes(limit)} per worker, one copy).",
        file=out,
    )
    out.flush()
    return held
