"""Demo scenes ``frozen-list`` and ``frozen-dict``: seeds 000 and 001 with frozen object graphs.

``frozen-list`` (seed 000): two forked children each iterate a big list of ints, ``for x in
data``. A plain list is shared by fork's copy-on-write only until it is read: iterating writes
every int's reference count, so each child copies every page of int objects. The same list
frozen (``shoal.freeze``) lives in one read-only shared image; iterating it makes new ints in
the child and writes nothing shared. Shown: each child's private growth while iterating
(``private_anonymous``: new private pages and copy-on-write copies, not shared memory).

``frozen-dict`` (seed 001): ``Pool(2).map(func, range(n))`` where ``func`` looks up a dict cache
(``{i: bin(i)}``), three ways under spawn: the cache bound with ``functools.partial`` (pickled
into every chunk of tasks), stored in a global by a Pool initializer (one pickled copy per
worker), and frozen, bound with the same partial (a small handle per chunk; every worker maps
one image). Shown: the wall time end to end and each worker's private growth.

``run_list_scene(size_bytes, out)`` and ``run_dict_scene(size_bytes, out)`` have the demo's
scene signature and return whether shoal kept its promise (no private copy, right results).
Their workers are those of ``seeds``, which examples/python/seed000_list_fork.py and
seed001_dict_cache.py run too.
"""

from __future__ import annotations

import gc
import multiprocessing as mp
import sys
import time
from typing import Any, TextIO

from .._frozen import freeze
from . import seeds
from .harness import fmt_duration
from .measure import MIB, ProcMem, fmt_bytes, fmt_signed

__all__ = ["run_dict_scene", "run_list_scene"]

FLOOR = 4 * MIB
CHILDREN = 2
BYTES_PER_ITEM = 40  # a plain list of ints: a pointer and an int object per item
BYTES_PER_ENTRY = 96  # about what an int -> bin(int) entry takes
DICT_MAX = 1 << 20  # the dict scene's cap: its stdlib ways must finish in seconds

PLAIN = "plain list"
FROZEN = "shoal.freeze(list)"
PARTIAL = "partial(dict)"
GLOBAL = "initializer + global"
SHOAL = "partial(FrozenDict)"


# --------------------------------------------------------------------------------------
# frozen-list


def _children(arg: Any) -> list[dict[str, Any]]:
    """Seed 000's loop in CHILDREN forked children, over ``arg`` (None: the inherited list)."""
    ctx = mp.get_context("fork")
    conns, procs = seeds.start(ctx, seeds.iterate, [(seeds.Before(), arg)] * CHILDREN)
    try:
        return seeds.gather(conns)
    finally:
        seeds.dismiss(conns, procs, seeds.DEADLINE)


def run_list_scene(size: int, out: TextIO) -> bool:
    """Seed 000's list under fork: plain vs frozen; True if the frozen list was not copied."""
    n = max(1000, size // BYTES_PER_ITEM)
    expect = n * (n - 1) // 2
    plain = list(range(n))
    plain_bytes = sys.getsizeof(plain) + 32 * n
    print(
        f"A list of {n:,} ints (about {fmt_bytes(plain_bytes)}) is iterated by {CHILDREN} "
        "forked children, `for x in data`: first the plain list (a global the children "
        "inherit), then the same list frozen once with shoal.freeze (a Process argument).",
        file=out,
    )
    out.flush()
    seeds.data = plain
    try:
        plain_reports = _children(None)
    finally:
        seeds.data = None
    t0 = time.perf_counter()
    frozen = freeze(plain)
    freeze_s = time.perf_counter() - t0
    del plain
    gc.collect()
    frozen_reports = _children(frozen)
    limit = seeds.private_limit(frozen.nbytes, FLOOR)

    def private(r: dict[str, Any]) -> int:
        g: ProcMem = r["growth"]
        return max(int(r["private"]), g.anonymous)

    rows = [("", PLAIN, FROZEN)]
    for i in range(CHILDREN):
        rows.append(
            (
                f"child {i + 1}: private growth",
                fmt_signed(private(plain_reports[i])),
                fmt_signed(private(frozen_reports[i])),
            )
        )
    rows.append(
        (
            "iterated in",
            fmt_duration(max(r["seconds"] for r in plain_reports)),
            fmt_duration(max(r["seconds"] for r in frozen_reports)),
        )
    )
    rows.append(
        (
            "sums",
            "right" if all(r["total"] == expect for r in plain_reports) else "WRONG",
            "right" if all(r["total"] == expect for r in frozen_reports) else "WRONG",
        )
    )
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        print("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)), file=out)
    held = all(r["total"] == expect for r in frozen_reports) and all(
        private(r) <= limit for r in frozen_reports
    )
    copies = sum(max(private(r), 0) for r in plain_reports) / plain_bytes
    print(
        f"\nConclusion: the plain list cost {copies:.2f} copies between the {CHILDREN} children "
        f"(every int's refcount is written as it is read); the frozen list, built once in "
        f"{fmt_duration(freeze_s)} ({fmt_bytes(frozen.nbytes)}), cost none."
        if held
        else f"\nPROBLEM: a child iterating the frozen list grew by more than {fmt_bytes(limit)}"
        " or got a wrong sum.",
        file=out,
    )
    out.flush()
    return held


# --------------------------------------------------------------------------------------
# frozen-dict


def _dict_way(how: str, cache: Any, n: int) -> tuple[float, list[int], bool]:
    """Seed 001's Pool.map one way (``seeds.pool_map``'s ``how``): the wall time, each
    worker's private growth (the larger of private anonymous and Anonymous) and whether the
    results were right."""
    wall, reports, ok = seeds.pool_map(mp.get_context("spawn"), CHILDREN, n, how, cache)
    return wall, [max(private, g.anonymous) for _, g, private in reports], ok


def run_dict_scene(size: int, out: TextIO) -> bool:
    """Seed 001: Pool.map with a dict cache, three ways; True if shoal's workers copied
    nothing and every result was right."""
    n = min(DICT_MAX, max(1024, size // BYTES_PER_ENTRY))
    cache = {i: bin(i) for i in range(n)}
    t0 = time.perf_counter()
    frozen = freeze(cache)
    freeze_s = time.perf_counter() - t0
    print(
        f"Pool({CHILDREN}, spawn).map(func, range({n:,})) where func looks up a cache of "
        f"{n:,} entries ({{i: bin(i)}}); three ways to give the workers the cache "
        f"(shoal.freeze took {fmt_duration(freeze_s)} once, for an image of "
        f"{fmt_bytes(frozen.nbytes)}):",
        file=out,
    )
    out.flush()
    # What the Pool itself costs a worker (a chunk of tasks and results at a time), measured
    # with the same map and no cache: the frozen cache may add only the limit to it.
    pool_cost = max(_dict_way(seeds.NO_CACHE, None, n)[1])
    results = {
        PARTIAL: _dict_way(seeds.PARTIAL, cache, n),
        GLOBAL: _dict_way(seeds.GLOBAL, cache, n),
        SHOAL: _dict_way(seeds.PARTIAL, frozen, n),
    }

    def per_worker(vals: list[int]) -> str:
        lo, hi = min(vals), max(vals)
        return fmt_signed(lo) if hi - lo < MIB else f"{fmt_signed(lo)} .. {fmt_signed(hi)}"

    rows = [
        ("", *results),
        ("end to end", *(fmt_duration(w) for w, _, _ in results.values())),
        ("private growth, each worker", *(per_worker(g) for _, g, _ in results.values())),
        ("(the Pool's own, no cache)", *([fmt_signed(pool_cost)] * len(results))),
        ("results", *("right" if ok else "WRONG" for _, _, ok in results.values())),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)), file=out)
    wall, growth, ok = results[SHOAL]
    limit = seeds.private_limit(frozen.nbytes, FLOOR)
    held = ok and all(g <= pool_cost + limit for g in growth)
    print(
        f"\nConclusion: with the cache frozen, the seed's 'naive' partial is the right way: "
        f"{results[PARTIAL][0] / wall:.1f}x faster than binding the dict, "
        f"while the initializer + global took {results[GLOBAL][0] / wall:.1f}x its time; and "
        "no worker holds a copy."
        if held
        else f"\nPROBLEM: a worker of the shoal way grew by more than {fmt_bytes(limit)} over "
        f"the Pool's own {fmt_bytes(pool_cost)}, or a result was wrong.",
        file=out,
    )
    out.flush()
    return held
