"""Seed 001: Pool.map workers look up a big dict cache; how do they get it?

    python examples/python/seed001_dict_cache.py [--n 65536 | --size-mb MB] [--workers 2]
        [--start-method spawn|fork|forkserver] [--json PATH]

The seed: ``cache = {i: bin(i) for i in range(2**16)}`` and ``func(i) = cache[i].count("1")``,
mapped over ``range(2**16)`` by a Pool. Binding the cache with ``functools.partial`` works,
but pickles the whole dict into every chunk of tasks, and ends up slower than no Pool at all;
the accepted answer is a Pool ``initializer`` that stores it in a global: one pickled copy per
worker (none under fork, until the reference counts copy it page by page).

With shoal the cache is frozen once, ``cache = shoal.freeze(cache)``, and the seed's "naive"
partial becomes the right way: a FrozenDict pickles to a small handle, every worker maps the
same read-only image, and ``cache[i]`` is looked up in place. No global, no initializer.

This script runs the three ways one after the other (the partial with a plain dict, the
initializer + global, and the partial with a FrozenDict), each end to end (Pool start, map,
results), after the same map without any cache (``i.bit_count()``: what the Pool itself
costs a worker: a chunk of tasks and of results at a time, which under fork lands partly in
copies of the parent's free heap pages), and prints, per way, the wall time and each worker's private memory growth, from the
worker's start to the end of its work: private anonymous memory from /proc/PID/smaps (new
pages and copy-on-write copies, not shared memory), with smaps_rollup's Anonymous and USS. It
exits with status 1 if a result is wrong, or if a worker of the shoal way grew its private
memory by more than the Pool's own cost plus max(1% of the frozen image, 4 MiB).
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing as mp
import sys
import time
from typing import Any

import shoal

# The Pool's work is the one `shoal demo` runs (shoal._tools.seeds): seeds.func is the seed's
# function, `cache[i].count("1")`, with the cache as an argument; seeds.pool_map maps it over
# range(n) one way (a partial binding the cache, the initializer + global, or no cache) and
# has every worker report its growth: "private" is memory from /proc/PID/smaps that only the
# worker maps -- new private pages and copy-on-write copies, not shared memory
# (smaps_rollup's Anonymous does not see copies made under fork).
from shoal._tools import seeds
from shoal._tools.measure import fmt_bytes, fmt_signed

FLOOR = 4 << 20
BYTES_PER_ENTRY = 96  # about what one int -> bin(int) entry takes, plain or frozen
PARTIAL = "partial(func, cache=dict)"
GLOBAL = "initializer + global"
SHOAL = "partial(func, cache=shoal.freeze(dict))"
NO_CACHE = "no cache (i.bit_count()): the Pool's own cost"


def run(way: str, cache: dict[int, str], method: str, workers: int) -> dict[str, Any]:
    n = len(cache)
    frozen = None
    freeze_s = 0.0
    if way == SHOAL:
        t0 = time.perf_counter()
        frozen = shoal.freeze(cache)
        freeze_s = time.perf_counter() - t0
    gc.collect()
    how = {PARTIAL: seeds.PARTIAL, SHOAL: seeds.PARTIAL, GLOBAL: seeds.GLOBAL}
    wall, growth, ok = seeds.pool_map(
        mp.get_context(method),
        workers,
        n,
        how.get(way, seeds.NO_CACHE),
        frozen if way == SHOAL else cache,  # the seed's "naive" partial, with a FrozenDict
    )
    return {
        "way": way,
        "start_method": method,
        "entries": n,
        "frozen_bytes": frozen.nbytes if frozen is not None else None,
        "freeze_seconds": freeze_s,
        "wall_seconds": wall,
        "results_ok": ok,
        "workers": [
            {
                "pid": pid,
                "private_growth": private,
                "uss_growth": g.uss,
                "anonymous_growth": g.anonymous,
                "pss": g.pss,
            }
            for pid, g, private in growth
        ],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--n", type=int, default=1 << 16, help="entries in the cache (the seed's)")
    ap.add_argument(
        "--size-mb", type=int, help=f"size the cache instead: {BYTES_PER_ENTRY} bytes an entry"
    )
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--start-method", default="spawn", choices=mp.get_all_start_methods())
    ap.add_argument("--json", metavar="PATH", help="also write the figures as JSON here")
    args = ap.parse_args(argv)
    n = args.n if args.size_mb is None else max(1024, (args.size_mb << 20) // BYTES_PER_ENTRY)
    cache = {i: bin(i) for i in range(n)}
    print(
        f"seed 001: Pool({args.workers}, {args.start_method}).map(func, range({n:,})), func "
        f"looks up a cache of {n:,} entries (int -> bin(int)); three ways to give it the cache"
    )
    ok = True
    runs = []
    limit = 0
    pool_cost = 0
    for way in (NO_CACHE, PARTIAL, GLOBAL, SHOAL):
        r = run(way, cache, args.start_method, args.workers)
        runs.append(r)
        extra = ""
        if way == SHOAL:
            limit = max(r["frozen_bytes"] // 100, FLOOR)
            extra = (
                f" (+ freeze once: {r['freeze_seconds']:.3f} s, an image of "
                f"{fmt_bytes(r['frozen_bytes'])})"
            )
        print(
            f"\n{way}: {r['wall_seconds']:.3f} s end to end{extra}; results "
            f"{'right' if r['results_ok'] else 'WRONG'}"
        )
        for w in r["workers"]:
            print(
                f"  worker pid {w['pid']:>7}: private growth {fmt_signed(w['private_growth'])} "
                f"(Anonymous {fmt_signed(w['anonymous_growth'])}, USS {fmt_signed(w['uss_growth'])})"
            )
        ok = ok and r["results_ok"]
        worst = max(max(w["private_growth"], w["anonymous_growth"]) for w in r["workers"])
        if way == NO_CACHE:
            pool_cost = worst
        if way == SHOAL:
            good = worst <= pool_cost + limit
            print(
                f"  check (each worker's private growth <= the Pool's own {fmt_bytes(pool_cost)}"
                f" + {fmt_bytes(limit)}): {'yes' if good else 'NO'}"
            )
            ok = ok and good
    times = {r["way"]: r["wall_seconds"] for r in runs}
    print(
        f"\nshoal's way took {times[SHOAL] / times[PARTIAL]:.2f}x the time of the plain partial "
        f"and {times[SHOAL] / times[GLOBAL]:.2f}x that of the initializer + global"
    )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"limit": limit, "pool_cost": pool_cost, "runs": runs, "ok": ok}, f, indent=1)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
