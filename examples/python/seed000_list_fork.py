"""Seed 000, the list half: forked workers iterate a big list of ints; is it copied?

    python examples/python/seed000_list_fork.py [--size-mb 256] [--workers 4]
        [--start-method fork|spawn|forkserver] [--json PATH]

The seed builds a global ``data = list(range(10**8))`` and has 4 forked workers run
``for x in data: pass``; the machine's free memory drops by a copy per worker. The answer it
got: fork's copy-on-write shares the pages, but iterating writes the reference count of every
int object, so every page holding one is copied into each worker that reads it.

With shoal the list is frozen once, ``data = shoal.freeze(list(range(n)))``, and given to the
workers as a Process argument (inherited under fork, a small handle under spawn). The ints
live in one shared, read-only image; iterating makes a new int object per element in the
worker and writes nothing shared, so nothing is copied.

This script runs the seed's plain list and the frozen list, one after the other, under the
start method asked for (the seed's is fork; under spawn and forkserver the plain list travels
as a pickled argument, a full copy per worker). For each worker it prints the growth of its
private anonymous memory while iterating (from /proc/PID/smaps: new private pages and
copy-on-write copies of the parent's, not shared memory), next to the Anonymous and USS
figures of smaps_rollup (under fork, Anonymous does not see copies; USS counts the frozen
image's pages while no other process maps them). It exits with status 1 if a frozen-list worker's private memory grew by
more than max(1% of the frozen image, 4 MiB) or if a sum is wrong; the plain list's figures are
shown, not checked.
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

# The workers are the ones `shoal demo` runs (shoal._tools.seeds): seeds.iterate is the
# seed's loop, `for x in data`, over the seed's global `seeds.data` (inherited under fork) or
# over its argument. It reports its "private" growth: memory from /proc/PID/smaps that only
# the worker maps -- new private pages and copy-on-write copies, not shared memory
# (smaps_rollup's Anonymous does not see copies made under fork).
from shoal._tools import seeds
from shoal._tools.measure import fmt_bytes, fmt_signed

FLOOR = 4 << 20
BYTES_PER_ITEM = 40  # a plain list of ints: an 8-byte pointer and a 32-byte int object each
PLAIN = "plain list (the seed)"
FROZEN = "shoal.freeze(list)"


def run(way: str, method: str, n: int, workers: int) -> dict[str, Any]:
    ctx: Any = mp.get_context(method)
    plain = list(range(n))
    size = sys.getsizeof(plain) + n * 32 if n else 0
    frozen = None
    t0 = time.perf_counter()
    if way == FROZEN:
        frozen = shoal.freeze(plain)
        freeze_s = time.perf_counter() - t0
        del plain
        gc.collect()
        arg: Any = frozen
    else:
        freeze_s = 0.0
        # The seed's global under fork; under spawn and forkserver the list is an argument.
        seeds.data = plain if method == "fork" else None
        arg = None if method == "fork" else plain
    conns, procs = seeds.start(ctx, seeds.iterate, [(seeds.Before(), arg)] * workers)
    try:
        reports = seeds.gather(conns)
    finally:
        seeds.dismiss(conns, procs, seeds.DEADLINE)
        seeds.data = None
    return {
        "way": way,
        "start_method": method,
        "items": n,
        "plain_bytes": size,
        "frozen_bytes": frozen.nbytes if frozen is not None else None,
        "freeze_seconds": freeze_s,
        "workers": [
            {
                "pid": r["pid"],
                "sum_ok": r["total"] == n * (n - 1) // 2,
                "seconds": r["seconds"],
                "private_growth": r["private"],
                "uss_growth": r["growth"].uss,
                "anonymous_growth": r["growth"].anonymous,
            }
            for r in reports
        ],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--size-mb", type=int, default=256, help="size of the plain list, in MiB")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--start-method", default="fork", choices=mp.get_all_start_methods())
    ap.add_argument("--json", metavar="PATH", help="also write the figures as JSON here")
    args = ap.parse_args(argv)
    n = max(1000, (args.size_mb << 20) // BYTES_PER_ITEM)
    print(
        f"seed 000 (lists): {args.workers} workers ({args.start_method}) each iterate a list of "
        f"{n:,} ints (`for x in data`); private growth = the growth of the worker's private "
        "anonymous memory (new pages and copy-on-write copies) while iterating"
    )
    ok = True
    runs = []
    limit = 0
    for way in (PLAIN, FROZEN):
        r = run(way, args.start_method, n, args.workers)
        runs.append(r)
        ws = r["workers"]
        sums_ok = all(w["sum_ok"] for w in ws)
        if way == FROZEN:
            limit = max(r["frozen_bytes"] // 100, FLOOR)
            what = (
                f"frozen once in {r['freeze_seconds']:.2f} s into an image of "
                f"{fmt_bytes(r['frozen_bytes'])}"
            )
        else:
            what = f"about {fmt_bytes(r['plain_bytes'])} in the parent"
        print(f"\n{way}: {what}; sums {'right' if sums_ok else 'WRONG'}")
        for w in ws:
            print(
                f"  worker pid {w['pid']:>7}: private growth {fmt_signed(w['private_growth'])} "
                f"(Anonymous {fmt_signed(w['anonymous_growth'])}, USS {fmt_signed(w['uss_growth'])}); "
                f"iterated in {w['seconds']:.2f} s"
            )
        if way == FROZEN:
            worst = max(max(w["private_growth"], w["anonymous_growth"]) for w in ws)
            good = sums_ok and worst <= limit
            print(
                f"  check (each worker's private growth <= {fmt_bytes(limit)}): "
                f"{'yes' if good else 'NO'}"
            )
            ok = ok and good
        else:
            copies = sum(max(w["private_growth"], w["anonymous_growth"]) for w in ws) / max(
                r["plain_bytes"], 1
            )
            print(f"  the workers made {copies:.2f} copies of the list between them")
            ok = ok and sums_ok
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"limit": limit, "runs": runs, "ok": ok}, f, indent=1)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
