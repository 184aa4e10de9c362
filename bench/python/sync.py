"""Locks, events and shared values between processes: shoal's against multiprocessing's.

Measures, in one run, interleaved, with medians and spreads over 7 repetitions:

1. uncontended ``acquire(); release()`` and ``with lock:`` N times (N = 100000;
   ``SHOAL_BENCH_SYNC_N``) for shoal.Lock and shoal.RLock, multiprocessing.Lock and RLock, and
   threading.Lock;
2. contended: 2 spawned processes each incrementing a shared counter K times under the lock
   (K = N / 5): shoal.Lock + shoal.Value(lock=False) against multiprocessing.Lock +
   multiprocessing.Value(lock=False); timed from the first start to the last end, the two
   processes' intervals checked to overlap and the counter checked to be 2K;
3. Event ping-pong between 2 processes, M round trips (M = N / 50): a pair of shoal.Events
   against a pair of multiprocessing.Events;
4. Value increments N times: ``with v.get_lock(): v.value += 1`` (shoal and multiprocessing),
   shoal's ``v.add(1)``, and a no-op Python method call on a shoal.Value as the reference.

It ends with a Targets table (issue 14), each target marked met or missed. Run
``python bench/python/sync.py [--quick]`` to print the section; ``shoal bench`` calls
``run(quick)``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import threading
import time
from collections.abc import Callable
from typing import Any

import shoal
from shoal._tools.harness import Result, Way, fmt_duration, run_side_by_side, section, size_from_env

N_ENV = "SHOAL_BENCH_SYNC_N"
N_DEFAULT = 100_000
N_QUICK = 20_000
REPEAT = 7
WARMUP = 1
DEADLINE = 120.0

SH_LOCK = "shoal.Lock"
SH_RLOCK = "shoal.RLock"
MP_LOCK = "multiprocessing.Lock"
MP_RLOCK = "multiprocessing.RLock"
TH_LOCK = "threading.Lock"

SH_PAIR = "shoal.Lock + shoal.Value(lock=False)"
MP_PAIR = "multiprocessing.Lock + multiprocessing.Value(lock=False)"

SH_EVENT = "shoal.Event pair"
MP_EVENT = "multiprocessing.Event pair"

SH_WITH = "shoal.Value: with v.get_lock(): v.value += 1"
MP_WITH = "multiprocessing.Value: with v.get_lock(): v.value += 1"
SH_ADD = "shoal.Value: v.add(1)"
NOOP = "no-op method call on a shoal.Value (reference)"


# --- uncontended -------------------------------------------------------------------------


def _acq_rel(lock: Any, n: int) -> Callable[[], None]:
    def fn() -> None:
        acquire, release = lock.acquire, lock.release
        for _ in range(n):
            acquire()
            release()

    return fn


def _with(lock: Any, n: int) -> Callable[[], None]:
    def fn() -> None:
        for _ in range(n):
            with lock:
                pass

    return fn


def _uncontended_ways(n: int) -> tuple[list[Way], list[tuple[str, str]]]:
    locks = [
        (SH_LOCK, shoal.Lock()),
        (SH_RLOCK, shoal.RLock()),
        (MP_LOCK, mp.Lock()),
        (MP_RLOCK, mp.RLock()),
        (TH_LOCK, threading.Lock()),
    ]
    ways: list[Way] = []
    for name, lock in locks:
        ways.append(Way(f"{name}: acquire(); release()", _acq_rel(lock, n)))
        ways.append(Way(f"{name}: with lock", _with(lock, n)))
    # (shoal way, its multiprocessing counterpart) for the targets
    pairs = [
        (f"{sh}: {form}", f"{mpn}: {form}")
        for sh, mpn in ((SH_LOCK, MP_LOCK), (SH_RLOCK, MP_RLOCK))
        for form in ("acquire(); release()", "with lock")
    ]
    return ways, pairs


# --- contended ---------------------------------------------------------------------------


def _increment_child(lock: Any, value: Any, k: int, ready: Any, go: Any, conn: Any) -> None:
    ready.set()
    go.wait()
    start = time.monotonic()
    for _ in range(k):
        with lock:
            value.value += 1
    end = time.monotonic()
    conn.send((start, end))
    conn.close()


class _Contended:
    """One contended way: per call, 2 spawned children increment a counter k times each."""

    def __init__(self, ctx: Any, make: Callable[[], tuple[Any, Any]], k: int) -> None:
        self.ctx = ctx
        self.make = make
        self.k = k
        self.overlaps: list[bool] = []
        self.procs: list[Any] = []
        self.conns: list[Any] = []

    def setup(self) -> None:
        self.lock, self.value = self.make()
        self.go = self.ctx.Event()
        self.procs, self.conns, readies = [], [], []
        for _ in range(2):
            ready = self.ctx.Event()
            parent, child = self.ctx.Pipe()
            p = self.ctx.Process(
                target=_increment_child,
                args=(self.lock, self.value, self.k, ready, self.go, child),
                daemon=True,
            )
            p.start()
            child.close()
            self.procs.append(p)
            self.conns.append(parent)
            readies.append(ready)
        for ready in readies:
            if not ready.wait(DEADLINE):
                raise RuntimeError("a contended child did not start")

    def fn(self) -> float:
        self.go.set()
        spans = []
        for c in self.conns:
            if not c.poll(DEADLINE):
                raise RuntimeError("a contended child did not finish")
            spans.append(c.recv())
        if self.value.value != 2 * self.k:
            raise AssertionError(f"counter is {self.value.value}, expected {2 * self.k}")
        (s0, e0), (s1, e1) = spans
        self.overlaps.append(max(s0, s1) < min(e0, e1))
        return max(e0, e1) - min(s0, s1)

    def teardown(self) -> None:
        for p in self.procs:
            p.join(DEADLINE)
        for c in self.conns:
            c.close()


def _make_shoal() -> tuple[Any, Any]:
    return shoal.Lock(), shoal.Value("q", 0, lock=False)


# --- Event ping-pong ---------------------------------------------------------------------


def _pong_child(ping: Any, pong: Any, m: int, ready: Any) -> None:
    ready.set()
    for _ in range(m):
        ping.wait()
        ping.clear()
        pong.set()


class _PingPong:
    def __init__(self, ctx: Any, make: Callable[[], Any], m: int) -> None:
        self.ctx = ctx
        self.make = make
        self.m = m
        self.proc: Any = None

    def setup(self) -> None:
        self.ping, self.pong = self.make(), self.make()
        ready = self.ctx.Event()
        self.proc = self.ctx.Process(
            target=_pong_child, args=(self.ping, self.pong, self.m, ready), daemon=True
        )
        self.proc.start()
        if not ready.wait(DEADLINE):
            raise RuntimeError("the ping-pong child did not start")

    def fn(self) -> None:
        ping, pong = self.ping, self.pong
        for _ in range(self.m):
            ping.set()
            if not pong.wait(DEADLINE):
                raise RuntimeError("no pong")
            pong.clear()

    def teardown(self) -> None:
        self.proc.join(DEADLINE)


# --- Value increments --------------------------------------------------------------------


class _NoopValue(shoal.Value):
    __slots__ = ()

    def noop(self, d: Any) -> Any:
        return d


def _value_ways(n: int) -> list[Way]:
    sv = shoal.Value("q", 0)
    mv = mp.Value("q", 0)
    nv = _NoopValue("q", 0)

    def with_lock(v: Any) -> Callable[[], None]:
        def fn() -> None:
            for _ in range(n):
                with v.get_lock():
                    v.value += 1

        return fn

    def add() -> None:
        a = sv.add
        for _ in range(n):
            a(1)

    def noop() -> None:
        f = nv.noop
        for _ in range(n):
            f(1)

    return [
        Way(MP_WITH, with_lock(mv)),
        Way(SH_WITH, with_lock(sv)),
        Way(SH_ADD, add),
        Way(NOOP, noop),
    ]


# --- report ------------------------------------------------------------------------------


def _per_op(res: Result, n: int, what: str = "per operation") -> str:
    return "\n".join(f"- {name}: {fmt_duration(res.median(name) / n)} {what}" for name in res.names)


def _mark(ok: bool) -> str:
    return "met" if ok else "**missed**"


def run(quick: bool) -> str:
    """Run every measurement; return the markdown section."""
    n = N_QUICK if quick else size_from_env(N_ENV, N_DEFAULT, minimum=100)
    k = max(n // 5, 100)
    m = max(n // 50, 100)
    started = time.monotonic()
    ctx = mp.get_context("spawn")

    ways, pairs = _uncontended_ways(n)
    unc = run_side_by_side(ways, REPEAT, WARMUP, baseline=f"{MP_LOCK}: acquire(); release()")

    sh = _Contended(ctx, _make_shoal, k)
    mpc = _Contended(ctx, lambda: (ctx.Lock(), ctx.Value("q", 0, lock=False)), k)
    con = run_side_by_side(
        [
            Way(SH_PAIR, sh.fn, sh.setup, sh.teardown, self_timed=True),
            Way(MP_PAIR, mpc.fn, mpc.setup, mpc.teardown, self_timed=True),
        ],
        REPEAT,
        WARMUP,
        baseline=MP_PAIR,
    )

    spp = _PingPong(ctx, shoal.Event, m)
    mpp = _PingPong(ctx, ctx.Event, m)
    pp = run_side_by_side(
        [
            Way(SH_EVENT, spp.fn, spp.setup, spp.teardown),
            Way(MP_EVENT, mpp.fn, mpp.setup, mpp.teardown),
        ],
        REPEAT,
        WARMUP,
        baseline=MP_EVENT,
    )

    val = run_side_by_side(_value_ways(n), REPEAT, WARMUP, baseline=MP_WITH)
    elapsed = time.monotonic() - started

    # Targets
    rows = []
    for shw, mpw in pairs:
        r = unc.ratio(shw, mpw)
        rows.append((f"uncontended {shw} within 1.5x of {mpw}", f"{r:.2f}x the time", r <= 1.5))
    speed = con.median(MP_PAIR) / con.median(SH_PAIR)
    rows.append(
        (
            "contended: shoal.Lock at least 0.8x multiprocessing.Lock's speed",
            f"{speed:.2f}x the speed",
            speed >= 0.8,
        )
    )
    faster = val.median(MP_WITH) / val.median(SH_ADD)
    rows.append(
        (
            "Value.add at least 5x faster than multiprocessing.Value under its lock",
            f"{faster:.1f}x faster",
            faster >= 5,
        )
    )
    r_noop = val.ratio(SH_ADD, NOOP)
    rows.append(
        (
            "Value.add within 1.5x of a no-op method call on a shoal object",
            f"{r_noop:.2f}x the time",
            r_noop <= 1.5,
        )
    )
    targets = ["| target | measured (medians) | |", "| --- | ---: | --- |"]
    targets += [f"| {t} | {got} | {_mark(ok)} |" for t, got, ok in rows]

    overlap = (
        f"Run intervals of the two processes overlapped in "
        f"{sum(sh.overlaps[WARMUP:])}/{len(sh.overlaps[WARMUP:])} shoal repetitions and "
        f"{sum(mpc.overlaps[WARMUP:])}/{len(mpc.overlaps[WARMUP:])} multiprocessing ones "
        "(warm-up excluded); the counter was 2K every time."
    )
    parts = [
        (
            f"N = {n} operations per repetition (K = {k} increments per process contended, "
            f"M = {m} Event round trips)."
        ),
        "",
        unc.to_markdown(f"Uncontended lock, {n} times"),
        _per_op(unc, n),
        "",
        con.to_markdown(
            f"Contended: 2 spawned processes, {k} increments each under the lock, first start "
            "to last end"
        ),
        _per_op(con, 2 * k, "per increment"),
        "",
        overlap,
        "",
        pp.to_markdown(f"Event ping-pong between 2 processes, {m} round trips"),
        _per_op(pp, m, "per round trip"),
        "",
        val.to_markdown(f"Value increments, {n} times"),
        _per_op(val, n),
        "",
        "**Targets** (issue 14)",
        "",
        "\n".join(targets),
        "",
        f"Whole script: {fmt_duration(elapsed)}" + (" (`--quick`)." if quick else "."),
    ]
    return section("Synchronisation: locks, events and shared values", "\n".join(parts))


def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--quick", action="store_true", help=f"N = {N_QUICK} instead of {N_DEFAULT}"
    )
    print(run(parser.parse_args().quick))


if __name__ == "__main__":
    _main()
