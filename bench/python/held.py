"""One array sent many times: shoal.hold (held handles) vs pinned handles vs a plain ndarray.

Measures, in one run, interleaved, with medians and spreads over 5 repetitions:

1. ``pickle.dumps`` of one shoal.Array N times (N = 1000; ``SHOAL_BENCH_HELD_N``): outside a
   hold (every pickle pins: one broker round trip each) and inside ``shoal.hold`` (no round
   trip, the same text each time), next to the plain ndarray's pickle (its bytes);
2. ``Pool.map(f, [a] * N, chunksize=1)`` on a warm 2-worker spawn Pool, ``f`` reading a few
   elements: the array held, pinned, and as a plain ndarray (the stdlib's way: the bytes go
   through the pipe every time). The array is 1 MiB (``--quick``: 256 KiB; size knob
   ``SHOAL_BENCH_HELD_BYTES``).

Run ``python bench/python/held.py [--quick]`` to print the section; ``shoal bench`` calls
``run(quick)``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import pickle
import time
from typing import Any

import numpy as np

import shoal
from shoal._tools.harness import Way, fmt_duration, run_side_by_side, section, size_from_env

N_ENV = "SHOAL_BENCH_HELD_N"
SIZE_ENV = "SHOAL_BENCH_HELD_BYTES"
SIZE_DEFAULT = 1 << 20
SIZE_QUICK = 256 << 10
REPEAT = 5
WARMUP = 1
WORKERS = 2

HELD = "shoal.Array inside shoal.hold (held)"
PINNED = "shoal.Array, no hold (pinned)"
PLAIN = "numpy.ndarray (its bytes)"


def _task(a: np.ndarray) -> float:
    return float(a[0] + a[-1])


def _dumps_ways(arr: shoal.Array, plain: np.ndarray, n: int) -> list[Way]:
    def held() -> None:
        with shoal.hold(arr):
            for _ in range(n):
                pickle.dumps(arr)

    def pinned() -> None:
        for _ in range(n):
            pickle.dumps(arr)

    def numpy_bytes() -> None:
        for _ in range(n):
            pickle.dumps(plain)

    return [Way(HELD, held), Way(PINNED, pinned), Way(PLAIN, numpy_bytes)]


def _pool_ways(pool: Any, arr: shoal.Array, plain: np.ndarray, n: int) -> list[Way]:
    want = float(plain[0] + plain[-1])

    def check(got: list[float]) -> None:
        if got != [want] * n:
            raise AssertionError("a task saw the wrong data")

    def held() -> None:
        with shoal.hold(arr):
            check(pool.map(_task, [arr] * n, chunksize=1))

    def pinned() -> None:
        check(pool.map(_task, [arr] * n, chunksize=1))

    def numpy_bytes() -> None:
        check(pool.map(_task, [plain] * n, chunksize=1))

    return [Way(HELD, held), Way(PINNED, pinned), Way(PLAIN, numpy_bytes)]


def _per_item(res: Any, n: int) -> str:
    rows = [
        f"- {name}: {fmt_duration(res.median(name) / n)} per item"
        f" ({n / res.median(name):,.0f} per second)"
        for name in res.names
    ]
    return "\n".join(rows)


def run(quick: bool) -> str:
    """Run every measurement; return the markdown section."""
    n = size_from_env(N_ENV, 1000)
    nbytes = SIZE_QUICK if quick else size_from_env(SIZE_ENV, SIZE_DEFAULT, minimum=8)
    started = time.monotonic()
    plain = np.arange(nbytes // 8, dtype=np.float64)
    arr = shoal.share(plain)
    session = arr.segment.session if arr.segment is not None else ""
    dumps = run_side_by_side(_dumps_ways(arr, plain, n), REPEAT, WARMUP, baseline=PINNED)
    with mp.get_context("spawn").Pool(WORKERS) as pool:
        pool.map(_task, [arr] * WORKERS * 4, chunksize=1)  # every worker connected and warm
        maps = run_side_by_side(_pool_ways(pool, arr, plain, n), REPEAT, WARMUP, baseline=PINNED)
    elapsed = time.monotonic() - started
    size = f"{nbytes // 1024} KiB"
    parts = [
        f"One {size} float64 array sent N = {n} times (session {session[:8]}).",
        "",
        dumps.to_markdown(f"pickle.dumps of the same array, {n} times"),
        _per_item(dumps, n),
        "",
        maps.to_markdown(
            f"Pool.map(f, [a] * {n}, chunksize=1), spawn, {WORKERS} warm workers, f reads 2 "
            "elements"
        ),
        _per_item(maps, n),
        "",
        f"Whole script: {fmt_duration(elapsed)}" + (" (`--quick`)." if quick else "."),
    ]
    return section("Held handles: one array sent many times (shoal.hold)", "\n".join(parts))


def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a 256 KiB array instead of 1 MiB")
    print(run(parser.parse_args().quick))


if __name__ == "__main__":
    _main()
