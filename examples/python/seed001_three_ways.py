"""Seed 001's three ways to hand a big dict to Pool workers, on shoal.Pool, each with the
seed's plain dict and with the cache frozen by the user (``shoal.freeze``).

    python examples/python/seed001_three_ways.py [--size-mb MB] [--workers N]
        [--start-method spawn|forkserver|fork]

The seed (a cache of the binary representations of the first 2**16 integers, a task counting
the on-bits of one) tries ``functools.partial`` (multiprocessing pickles the cache with every
chunk of tasks), an initializer that sets a global (one copy per worker, the data flow hidden
in a global), and proposes ``initret`` (the initializer's return value passed to every task).
On shoal.Pool:

- **partial**: the call's function, cache included, is pickled once per call and unpickled
  once per worker, never once per chunk or task;
- **initializer + global** and **initret**: the cache is unpickled once per worker, when the
  worker starts;
- with the cache frozen (``shoal.freeze``), each way sends a handle of a few dozen bytes and
  every worker maps the one frozen image: its private memory hardly grows.

For each run it prints each worker's private (Anonymous) growth over a worker of a bare pool
(same start method, no cache), read from /proc/PID/smaps after the counting, and checks it:
with the frozen cache under 16 MiB (and under a quarter of one copy); with the plain dict at most one copy of the cache (about
the dict's size in this process) per worker. Exit status 1 if a check fails.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from typing import Any

import shoal
from shoal._tools.measure import fmt_bytes, private_anonymous

FROZEN_LIMIT = 16 << 20  # the bound for a worker's growth with the cache frozen
SLACK = 4 << 20  # allocator and interpreter noise between two workers


def func(i: int, cache: Any) -> int:
    """The seed's naive way: the cache as an argument, bound with functools.partial."""
    return int(cache[i].count("1"))


def func_global(i: int) -> int:
    """The seed's 'correct' way: the cache in a global the initializer set."""
    return int(global_cache[i].count("1"))


def func_initret(i: int, initret: Any) -> int:
    """The seed's proposal: the initializer's return value as the keyword argument initret."""
    cache = initret  # Re-assign var for illustrative/readability purposes
    return int(cache[i].count("1"))


global_cache: Any = None


def make_global(cache: Any) -> None:
    global global_cache
    global_cache = cache


def identity(cache: Any) -> Any:
    return cache


def private_growth_probe(_: int, **initret: Any) -> tuple[int, int]:
    """(pid, private anonymous bytes) of the worker that runs it; slow enough that every
    worker takes some. (Under initret=True it gets initret too, and ignores it.)"""
    time.sleep(0.02)
    import os

    return os.getpid(), private_anonymous()


def worker_memory(pool: shoal.Pool, workers: int) -> dict[int, int]:
    """Each worker's private anonymous bytes, as reported by tasks it ran."""
    seen: dict[int, int] = {}
    for _ in range(20):
        for pid, anon in pool.map(private_growth_probe, range(4 * workers), chunksize=1):
            seen[pid] = max(anon, seen.get(pid, 0))
        if len(seen) >= workers:
            break
    return seen


def run(way: str, cache: Any, n: int, workers: int, method: str) -> tuple[list[int], float]:
    """Count the on-bits one way; return each worker's private anonymous bytes and the
    counting's seconds."""
    if way == "partial":
        pool = shoal.Pool(workers, context=method)
        fn: Any = functools.partial(func, cache=cache)
    elif way == "initializer + global":
        pool = shoal.Pool(workers, initializer=make_global, initargs=(cache,), context=method)
        fn = func_global
    else:
        pool = shoal.Pool(
            workers, initializer=identity, initargs=(cache,), initret=True, context=method
        )
        fn = func_initret
    with pool:
        t0 = time.perf_counter()
        counts = pool.map(fn, range(n))
        seconds = time.perf_counter() - t0
        assert counts == [i.bit_count() for i in range(n)], f"{way}: wrong counts"
        mem = worker_memory(pool, workers)
    return list(mem.values()), seconds


def dict_size(cache: dict[int, str]) -> int:
    return sys.getsizeof(cache) + sum(sys.getsizeof(k) + sys.getsizeof(v) for k, v in cache.items())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mb", type=float, default=None, help="about this much cache")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--start-method", default="spawn", choices=["spawn", "forkserver", "fork"])
    args = ap.parse_args(argv)
    n = 2**16 - 1 if args.size_mb is None else max(1024, int(args.size_mb * 2**20 / 96))
    cache = {i: bin(i) for i in range(n)}
    copy = dict_size(cache)
    t0 = time.perf_counter()
    frozen = shoal.freeze(cache)
    freeze_s = time.perf_counter() - t0
    print(
        f"seed 001: {n} entries ({fmt_bytes(copy)} as a dict, frozen in {freeze_s:.2f} s), "
        f"{args.workers} workers, {args.start_method}; growth is each worker's private "
        "(Anonymous) memory over a bare pool's worker"
    )
    with shoal.Pool(args.workers, context=args.start_method) as bare_pool:
        bare = statistics.median(worker_memory(bare_pool, args.workers).values())
    ok = True
    for way in ("partial", "initializer + global", "initret"):
        for label, c in (("dict", cache), ("frozen", frozen)):
            mems, seconds = run(way, c, n, args.workers, args.start_method)
            growth = [m - bare for m in mems]
            # Frozen: under 16 MiB, and under a quarter of one copy (so that a small cache
            # still tells a mapped image from a copy). A dict: one copy, with room for noise.
            frozen_limit = min(FROZEN_LIMIT, max(copy // 4, 1 << 20))
            limit = frozen_limit if label == "frozen" else copy + copy // 2 + SLACK
            good = all(g <= limit for g in growth)
            ok &= good
            print(
                f"  {way:>21} {label:>6}: {seconds:6.2f} s, worker growth "
                f"{', '.join(fmt_bytes(max(g, 0)) for g in growth)} "
                f"(limit {fmt_bytes(limit)}) {'ok' if good else 'OVER'}"
            )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
