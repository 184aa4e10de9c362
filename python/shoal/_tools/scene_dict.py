"""Demo scene ``shared-dict`` (seed 002): a dict shared by processes, Manager().dict() next to
shoal.Dict.

Three short acts, each measured in this run:

1. **speed**: gets and sets of small values (int keys, short strs) in this process, on a dict of
   1000 keys: Manager().dict() makes a socket round trip to its server process and two pickles
   per operation; shoal.Dict reads and writes shared memory in place;
2. **a counter from 2 processes**: each forked child adds 1 to ``d["n"]`` K times, the way
   people write it (``d["n"] += 1``, a get then a set) on Manager().dict(), and under the
   dict's own lock (``with d.lock: d["n"] += 1``) on shoal.Dict: the Manager loses updates,
   shoal's total is exact;
3. **nested mutation**: a child runs ``d["a"]["x"] = 1``. On Manager().dict() the change goes to
   a copy and is silently lost (the stdlib documents this). On shoal.Dict it is seen when this
   build stores a dict value as a live shoal.Dict; otherwise the value is a copy too, and the
   scene shows the way that works there, a reassignment under the lock.

``run_scene(size_bytes, out)`` runs it with the demo's scene signature (size is unused) and
returns whether shoal kept its promises (exact counter, writes seen across processes). A few
seconds.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from typing import Any, TextIO

from .._containers import Dict

__all__ = ["run_scene"]

KEYS = 1000
K = 2000  # increments per child in act 2
_DEADLINE = 30.0


def _rate(d: Any, seconds: float) -> tuple[float, float]:
    """(gets/s, sets/s) on `d` in this process, each for about `seconds`."""
    out = []
    for op in ("get", "set"):
        n, spent = 0, 0.0
        batch = 64
        start = time.perf_counter()
        while spent < seconds:
            if op == "get":
                for i in range(batch):
                    d[(n + i) % KEYS]
            else:
                for i in range(batch):
                    d[(n + i) % KEYS] = "value"
            n += batch
            spent = time.perf_counter() - start
            batch = min(batch * 2, 65536)
        out.append(n / spent)
    return out[0], out[1]


def _add(d: Any, k: int, locked: bool) -> None:
    for _ in range(k):
        if locked:
            with d.lock:
                d["n"] += 1
        else:
            d["n"] += 1


def _nested(d: Any) -> None:
    d["a"]["x"] = 1


def _reassign(d: Any) -> None:
    with d.lock:
        d["a"] = {**d["a"], "x": 1}


def _in_children(ctx: Any, target: Any, args: tuple[Any, ...], n: int) -> bool:
    procs = [ctx.Process(target=target, args=args) for _ in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(_DEADLINE)
    return all(p.exitcode == 0 for p in procs)


def _fmt_rate(r: float) -> str:
    return f"{r / 1e6:.2f} M/s" if r >= 1e6 else f"{r / 1e3:.1f} k/s"


def run_scene(size_bytes: int, out: TextIO) -> bool:
    del size_bytes  # small values: the point is the cost per operation
    ctx = mp.get_context("fork")
    with mp.Manager() as manager:
        md: Any = manager.dict({i: "value" for i in range(KEYS)})
        sd = Dict({i: "value" for i in range(KEYS)})

        print(f"1. get and set of small values, this process, a dict of {KEYS} keys:", file=out)
        mg, ms = _rate(md, 0.15)
        sg, ss = _rate(sd, 0.15)
        print(f"  Manager().dict(): get {_fmt_rate(mg)}, set {_fmt_rate(ms)}", file=out)
        print(
            f"  shoal.Dict:       get {_fmt_rate(sg)} ({sg / mg:.0f}x), "
            f"set {_fmt_rate(ss)} ({ss / ms:.0f}x)",
            file=out,
        )

        print(f'2. two processes each add 1 to d["n"] {K} times:', file=out)
        md["n"] = 0
        sd["n"] = 0
        ok_m = _in_children(ctx, _add, (md, K, False), 2)
        ok_s = _in_children(ctx, _add, (sd, K, True), 2)
        lost = 2 * K - md["n"]
        print(
            f'  Manager().dict(), d["n"] += 1: {md["n"]} of {2 * K} '
            f"({lost} updates lost: a get and a set, another process between them)",
            file=out,
        )
        counted = ok_s and sd["n"] == 2 * K
        print(
            f'  shoal.Dict, with d.lock: d["n"] += 1: {sd["n"]} of {2 * K} '
            f"({'exact' if counted else 'PROBLEM'})",
            file=out,
        )

        print('3. a child runs d["a"]["x"] = 1 on d["a"] = {}:', file=out)
        md["a"] = {}
        _in_children(ctx, _nested, (md,), 1)
        print(
            f'  Manager().dict(): d["a"] is {md["a"]!r} (the change went to a copy: lost)', file=out
        )
        sd["a"] = {}
        live = isinstance(sd["a"], Dict)
        if live:
            seen = _in_children(ctx, _nested, (sd,), 1) and sd["a"] == {"x": 1}
            print(f'  shoal.Dict: d["a"] is {dict(sd["a"])!r} (a live shoal.Dict: seen)', file=out)
        else:
            _in_children(ctx, _nested, (sd,), 1)
            copied = sd["a"]
            print(
                f'  shoal.Dict (this build stores a dict value as a copy): d["a"] is {copied!r}',
                file=out,
            )
            seen = _in_children(ctx, _reassign, (sd,), 1) and sd["a"] == {"x": 1}
            print(
                '  shoal.Dict, the child reassigning under the lock (with d.lock: d["a"] = '
                f'{{**d["a"], "x": 1}}): d["a"] is {sd["a"]!r} ({"seen" if seen else "PROBLEM"})',
                file=out,
            )
    ok = bool(ok_m and counted and seen)
    print(
        "shoal.Dict: every process's writes seen, none lost, at a fraction of Manager's cost: "
        f"{'as promised' if ok else 'PROBLEM'}",
        file=out,
    )
    return ok
