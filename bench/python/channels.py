"""Channels between processes (seed 003: Pipe or Queue, which is faster?): shoal's Queue,
SimpleQueue and Pipe against multiprocessing's and faster-fifo's, side by side.

Measures, in one run, interleaved, with medians and spreads over 5 repetitions (after one
warm-up round), every producer and consumer a forked process:

1. small messages (a 100-byte ``bytes``, a small tuple), 1 producer -> 1 consumer and 2 -> 2,
   in messages/s over N messages (N = 2*10**5; ``SHOAL_BENCH_CHANNELS_N``): from the first
   producer's first ``put`` to the last consumer's end. Consumers use ``get`` or, where the
   channel has one, ``get_many`` (faster-fifo's API);
2. one-way latency of the 100-byte message, p50 and p99: half of each round trip of a
   ping-pong between two processes over M round trips (M = 2000), next to the floors a futex
   wake and a spin hand-off between two processes (``bench/cpp/channel_floors.cpp``);
3. 8 MiB and 64 MiB float64 ndarrays, 1 -> 1, in GB/s: the steady state over 16 arrays after a
   first one (reported separately, from its ``put`` to its arrival), the consumer touching one
   byte per page of each; next to the floor of one memcpy of the payload into populated memory
   (``numpy.copyto``), and the memory of both processes (private Anonymous growth, USS, PSS,
   from /proc/PID/smaps_rollup) with the machine's Shmem growth, while the consumer holds the
   last array;
4. a ``shoal.Array`` of 1 MiB, 64 MiB and 1 GiB sent by handle, from ``put`` to the consumer
   holding it and reading its first element.

The ways: ``multiprocessing.Queue``, ``SimpleQueue`` and ``Pipe``, faster-fifo's Queue (with
and without ``get_many``, where it installs), and ``shoal.Queue``, ``SimpleQueue`` and
``Pipe`` (where this build has them). A Pipe is one writer and one reader (its Connections
have no lock), so it is measured 1 -> 1 only. The section ends with the targets of issue 16,
each checked on this run's medians. Run ``python bench/python/channels.py [--quick]`` to
print the section; ``shoal bench`` calls ``run(quick)``. The floors need the release build
of ``channel_floors`` (``make bench`` builds it); without it they are left out, saying so.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import os
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

import shoal
from shoal._tools.harness import (
    Result,
    Way,
    fmt_duration,
    memory_table,
    run_side_by_side,
    section,
    size_from_env,
)
from shoal._tools.measure import MIB, ProcMem, diff, fmt_bytes, machine_shmem, proc_mem

try:
    import faster_fifo as _ff
except ImportError:  # a peer: measured where it installs
    _ff = None

N_ENV = "SHOAL_BENCH_CHANNELS_N"
N_DEFAULT = 2 * 10**5
N_QUICK = 20_000
ROUNDS = 2000  # ping-pong round trips per repetition
REPEAT = 5
WARMUP = 1
STEADY = 16  # arrays timed in steady state, after the first
MANY = 1000  # get_many's max_messages_to_get
DEADLINE = 120.0
PAGE = 4096

ROOT = Path(__file__).resolve().parents[2]
FLOORS = ROOT / "build" / "release" / "bench" / "cpp" / "channel_floors"

SMALL_BYTES = b"x" * 100
SMALL_TUPLE = (42, 3.25, "hello", b"ab")

HAVE_SHOAL_QUEUE = hasattr(shoal, "Queue")
HAVE_SHOAL_SIMPLE = hasattr(shoal, "SimpleQueue")
HAVE_SHOAL_PIPE = hasattr(shoal, "Pipe")

_ctx = mp.get_context("fork")


# --- the channels ------------------------------------------------------------------------


@dataclass(frozen=True)
class Chan:
    """One kind of channel: how to make it and how each end sends and receives."""

    name: str
    pipe: bool  # a (receiver, sender) pair of Connections rather than one queue
    make: Callable[[int], Any]  # biggest message -> the channel (a pair for a pipe)
    many: bool = False  # consumers call get_many


def _ff_queue(biggest: int) -> Any:
    assert _ff is not None
    # faster-fifo's buffer is fixed at creation and must hold a whole message (pickled).
    return _ff.Queue(max_size_bytes=max(1 << 20, 2 * biggest + MIB))


def _channels(pipes: bool) -> list[Chan]:
    chans = [
        Chan("multiprocessing.Queue", False, lambda _b: _ctx.Queue()),
        Chan("multiprocessing.SimpleQueue", False, lambda _b: _ctx.SimpleQueue()),
    ]
    if pipes:
        chans.append(Chan("multiprocessing.Pipe", True, lambda _b: _ctx.Pipe(duplex=False)))
    if _ff is not None:
        chans.append(Chan("faster_fifo.Queue", False, _ff_queue))
        chans.append(Chan("faster_fifo.Queue get_many", False, _ff_queue, many=True))
    if HAVE_SHOAL_QUEUE:
        chans.append(Chan("shoal.Queue", False, lambda _b: shoal.Queue()))
        chans.append(Chan("shoal.Queue get_many", False, lambda _b: shoal.Queue(), many=True))
    if HAVE_SHOAL_SIMPLE:
        chans.append(Chan("shoal.SimpleQueue", False, lambda _b: shoal.SimpleQueue()))
    if HAVE_SHOAL_PIPE and pipes:
        chans.append(Chan("shoal.Pipe", True, lambda _b: shoal.Pipe(duplex=False)))
    return chans


def _put_fn(chan: Chan, end: Any) -> Callable[[Any], Any]:
    return end.send if chan.pipe else end.put


def _get_fn(chan: Chan, end: Any) -> Callable[[], Any]:
    if chan.pipe:
        return end.recv  # type: ignore[no-any-return]
    if chan.name.startswith("faster_fifo"):
        return lambda: end.get(timeout=DEADLINE)
    return end.get  # type: ignore[no-any-return]


def _get_many_fn(end: Any) -> Callable[[], list[Any]]:
    return lambda: end.get_many(max_messages_to_get=MANY, timeout=DEADLINE)


def _ends(chan: Chan, made: Any) -> tuple[Any, Any]:
    """(sending end, receiving end)."""
    if chan.pipe:
        receiver, sender = made
        return sender, receiver
    return made, made


def _close(chan: Chan, made: Any) -> None:
    ends = made if chan.pipe else (made,)
    for e in ends:
        with contextlib.suppress(Exception):
            e.close()
        if hasattr(e, "join_thread"):
            with contextlib.suppress(Exception):
                e.join_thread()


# --- children ----------------------------------------------------------------------------


def _producer(
    chan: Chan, end: Any, n: int, msg: Any, ready: Any, go: Any, report: Connection
) -> None:
    put = _put_fn(chan, end)
    ready.set()
    go.wait()
    start = time.monotonic()
    for _ in range(n):
        put(msg)
    put(None)  # one stop per producer; there are as many consumers as producers
    report.send(start)


def _consumer(chan: Chan, end: Any, report: Connection, ready: Any) -> None:
    count = 0
    ready.set()
    if chan.many:
        get_many, put = _get_many_fn(end), _put_fn(chan, end)
        while True:
            batch = get_many()
            stops = batch.count(None)  # a producer's stop comes after its own messages only
            count += len(batch) - stops
            if stops:
                for _ in range(stops - 1):  # another consumer's stop: give it back
                    put(None)
                break
    else:
        get = _get_fn(chan, end)
        while get() is not None:
            count += 1
    report.send((time.monotonic(), count))


def _echo(chan: Chan, rx: Any, tx: Any, ready: Any) -> None:
    get, put = _get_fn(chan, rx), _put_fn(chan, tx)
    ready.set()
    while True:
        m = get()
        put(m)
        if m is None:
            return


def _big_producer(
    chan: Chan, end: Any, nbytes: int, count: int, ready: Any, go: Any, report: Connection
) -> None:
    put = _put_fn(chan, end)
    arr = np.ones(nbytes // 8)  # written: populated before anything is timed
    before = proc_mem()
    ready.set()
    go.wait()
    start = time.monotonic()
    for _ in range(count):
        put(arr)
    put(None)
    report.send((start, diff(proc_mem(), before)))


def _big_consumer(
    chan: Chan, end: Any, count: int, base_shmem: int, report: Connection, ready: Any
) -> None:
    get = _get_fn(chan, end)
    before = proc_mem()
    ready.set()
    arrived: list[float] = []
    touched = 0
    mem: ProcMem | None = None
    shmem = 0
    for i in range(count):
        a = get()
        touched += int(a.view(np.uint8)[::PAGE].sum())  # one byte per page
        arrived.append(time.monotonic())
        if i == count - 1:  # holding the last one: what a consumer costs
            mem, shmem = diff(proc_mem(), before), machine_shmem() - base_shmem
        del a
    if get() is not None:
        raise AssertionError("expected the stop message")
    report.send((arrived, touched, mem, shmem))


def _array_consumer(chan: Chan, end: Any, report: Connection, ready: Any) -> None:
    get = _get_fn(chan, end)
    ready.set()
    while True:
        a = get()
        if a is None:
            return
        first = float(a[0])
        report.send((time.monotonic(), first))
        del a


# --- runs --------------------------------------------------------------------------------


def _start(target: Callable[..., None], *args: Any) -> tuple[Any, Any]:
    ready = _ctx.Event()
    p = _ctx.Process(target=target, args=(*args, ready), daemon=True)
    p.start()
    return p, ready


def _wait_ready(readies: list[Any]) -> None:
    for r in readies:
        if not r.wait(DEADLINE):
            raise RuntimeError("a child did not start")


def _recv(conn: Connection) -> Any:
    if not conn.poll(DEADLINE):
        raise RuntimeError("a child did not report")
    return conn.recv()


def _reap(procs: list[Any]) -> None:
    for p in procs:
        p.join(DEADLINE)
        if p.exitcode is None:
            p.kill()
            p.join()
        elif p.exitcode != 0:
            raise RuntimeError(f"a child exited with status {p.exitcode}")


class _Throughput:
    """Small messages, `pairs` producers -> `pairs` consumers: messages/s of n messages."""

    def __init__(self, chan: Chan, pairs: int, n: int, msg: Any) -> None:
        self.chan, self.pairs, self.n, self.msg = chan, pairs, n, msg

    def fn(self) -> float:
        made = self.chan.make(len(SMALL_BYTES))
        tx, rx = _ends(self.chan, made)
        go = _ctx.Event()
        procs, readies, reports = [], [], []
        per = self.n // self.pairs
        try:
            for _ in range(self.pairs):
                mine, theirs = _ctx.Pipe(duplex=False)
                p, r = _start(_consumer, self.chan, rx, theirs)
                procs.append(p)
                readies.append(r)
                reports.append(("c", mine))
            for _ in range(self.pairs):
                mine, theirs = _ctx.Pipe(duplex=False)
                ready = _ctx.Event()
                p = _ctx.Process(
                    target=_producer,
                    args=(self.chan, tx, per, self.msg, ready, go, theirs),
                    daemon=True,
                )
                p.start()
                procs.append(p)
                readies.append(ready)
                reports.append(("p", mine))
            _wait_ready(readies)
            go.set()
            starts, ends, total = [], [], 0
            for role, conn in reports:
                got = _recv(conn)
                if role == "p":
                    starts.append(got)
                else:
                    ends.append(got[0])
                    total += got[1]
            _reap(procs)
            if total != per * self.pairs:
                raise AssertionError(f"{self.chan.name}: {total} messages, not {per * self.pairs}")
            return max(ends) - min(starts)
        finally:
            for p in procs:
                if p.is_alive():
                    p.kill()
                    p.join()
            _close(self.chan, made)


class _Latency:
    """One-way latency of SMALL_BYTES: half of each of `rounds` round trips; returns the p50
    and keeps the p99 of each repetition in `p99`."""

    def __init__(self, chan: Chan, rounds: int) -> None:
        self.chan, self.rounds = chan, rounds
        self.p99: list[float] = []

    def fn(self) -> float:
        if self.chan.pipe:
            a, b = _duplex(self.chan)
            there_rx = there_tx = b
            here_rx = here_tx = a
            made: list[tuple[Chan, Any]] = [(self.chan, (a, b))]
        else:
            q1, q2 = self.chan.make(0), self.chan.make(0)
            there_rx, there_tx, here_tx, here_rx = q1, q2, q1, q2
            made = [(self.chan, q1), (self.chan, q2)]
        p, ready = _start(_echo, self.chan, there_rx, there_tx)
        try:
            _wait_ready([ready])
            put, get = _put_fn(self.chan, here_tx), _get_fn(self.chan, here_rx)
            msg, clock = SMALL_BYTES, time.perf_counter_ns
            samples = []
            for _ in range(self.rounds):
                t0 = clock()
                put(msg)
                get()
                samples.append((clock() - t0) / 2e9)
            put(None)
            get()
            _reap([p])
        finally:
            if p.is_alive():
                p.kill()
                p.join()
            for chan, m in made:
                if chan.pipe:
                    for e in m:
                        e.close()
                else:
                    _close(chan, m)
        samples.sort()
        self.p99.append(samples[int(0.99 * (len(samples) - 1))])
        return samples[len(samples) // 2]


def _duplex(chan: Chan) -> tuple[Any, Any]:
    if chan.name.startswith("shoal"):
        return shoal.Pipe(duplex=True)  # type: ignore[no-any-return]
    return _ctx.Pipe(duplex=True)


class _Floor:
    """A latency floor from channel_floors: returns its p50, keeps its p99."""

    def __init__(self, mode: str, rounds: int) -> None:
        self.mode, self.rounds = mode, rounds
        self.p99: list[float] = []

    def fn(self) -> float:
        out = subprocess.run(
            [str(FLOORS), self.mode, str(self.rounds)],
            capture_output=True,
            text=True,
            check=True,
            timeout=DEADLINE,
        ).stdout.split()
        self.p99.append(float(out[1]))
        return float(out[0])


@dataclass
class _BigFigures:
    first: list[float]
    mem: tuple[ProcMem, ProcMem, int] | None = None  # producer, consumer, Shmem growth


class _Big:
    """`count` + 1 ndarrays of `nbytes`, 1 -> 1: returns the seconds per array in steady state
    (the first excluded: its time from put to arrival goes to `figures.first`)."""

    def __init__(self, chan: Chan, nbytes: int, steady: int) -> None:
        self.chan, self.nbytes, self.count = chan, nbytes, steady + 1
        self.figures = _BigFigures(first=[])

    def fn(self) -> float:
        base_shmem = machine_shmem()  # before the channel: its own buffers count too
        made = self.chan.make(self.nbytes)
        tx, rx = _ends(self.chan, made)
        go = _ctx.Event()
        procs = []
        try:
            c_mine, c_theirs = _ctx.Pipe(duplex=False)
            p, c_ready = _start(_big_consumer, self.chan, rx, self.count, base_shmem, c_theirs)
            procs.append(p)
            p_mine, p_theirs = _ctx.Pipe(duplex=False)
            p_ready = _ctx.Event()
            p = _ctx.Process(
                target=_big_producer,
                args=(self.chan, tx, self.nbytes, self.count, p_ready, go, p_theirs),
                daemon=True,
            )
            p.start()
            procs.append(p)
            _wait_ready([c_ready, p_ready])
            go.set()
            start, p_mem = _recv(p_mine)
            arrived, _touched, c_mem, shmem = _recv(c_mine)
            _reap(procs)
            if len(arrived) != self.count:
                raise AssertionError(f"{self.chan.name}: {len(arrived)} arrays arrived")
            self.figures.first.append(arrived[0] - start)
            self.figures.mem = (p_mem, c_mem, shmem)
            return (arrived[-1] - arrived[0]) / (self.count - 1)
        finally:
            for p in procs:
                if p.is_alive():
                    p.kill()
                    p.join()
            _close(self.chan, made)


class _Memcpy:
    """The floor: one copy of the payload into populated memory (numpy.copyto)."""

    def __init__(self, nbytes: int) -> None:
        self.src = np.ones(nbytes // 8)
        self.dst = np.zeros(nbytes // 8)
        self.dst[:] = 2.0  # populated

    def fn(self) -> float:
        t0 = time.perf_counter_ns()
        np.copyto(self.dst, self.src)
        return (time.perf_counter_ns() - t0) / 1e9


class _ByHandle:
    """A shoal.Array of `nbytes` through `chan`: seconds from put to the consumer reading
    its first element."""

    def __init__(self, chan: Chan, nbytes: int) -> None:
        self.chan, self.nbytes = chan, nbytes
        self.arr: Any = None
        self.made: Any = None
        self.proc: Any = None

    def setup(self) -> None:
        if self.arr is None:
            self.arr = shoal.zeros(self.nbytes // 8)
            self.arr[0] = 7.0
        self.made = self.chan.make(0)
        tx, rx = _ends(self.chan, self.made)
        self.report, theirs = _ctx.Pipe(duplex=False)
        self.proc, ready = _start(_array_consumer, self.chan, rx, theirs)
        _wait_ready([ready])
        self.put = _put_fn(self.chan, tx)

    def fn(self) -> float:
        t0 = time.monotonic()
        self.put(self.arr)
        arrived, first = _recv(self.report)
        if first != 7.0:
            raise AssertionError(f"{self.chan.name}: read {first}, not 7.0")
        return float(arrived - t0)

    def teardown(self) -> None:
        self.put(None)
        _reap([self.proc])
        _close(self.chan, self.made)
        self.report.close()


# --- report ------------------------------------------------------------------------------


def _rate(res: Result, amount: float, unit: str) -> Result:
    """The same samples as `amount / seconds` (messages/s, GB/s)."""
    return Result(
        {k: [amount / s for s in v] for k, v in res.samples.items()},
        baseline=res.baseline,
        floor=res.floor,
        unit=unit,
    )


def _mark(ok: bool) -> str:
    return "met" if ok else "**missed**"


def _fmt_rate(v: float) -> str:
    return f"{v / 1e6:.2f} M msg/s" if v >= 1e6 else f"{v / 1e3:.0f} k msg/s"


def run(quick: bool) -> str:
    """Run every measurement; return the markdown section."""
    n = N_QUICK if quick else size_from_env(N_ENV, N_DEFAULT, minimum=1000)
    rounds = ROUNDS // 4 if quick else ROUNDS
    big_sizes = [MIB, 8 * MIB] if quick else [8 * MIB, 64 * MIB]
    handle_sizes = [MIB, 64 * MIB] if quick else [MIB, 64 * MIB, 1 << 30]
    started = time.monotonic()
    have_floors = os.access(FLOORS, os.X_OK)
    notes: list[str] = []
    if not have_floors:
        notes.append(
            f"The futex and spin floors are missing: {FLOORS.relative_to(ROOT)} is not built "
            "(`make bench` builds it)."
        )
    if _ff is None:
        notes.append("faster-fifo is not installed here: its rows are missing.")
    if not HAVE_SHOAL_QUEUE:
        notes.append("This build has no shoal.Queue: its rows and targets are missing.")
    if not HAVE_SHOAL_PIPE:
        notes.append("This build has no shoal.Pipe: its rows are missing.")

    # 1. small messages
    small: dict[tuple[int, str], Result] = {}
    for pairs in (1, 2):
        for label, msg in (("100-byte bytes", SMALL_BYTES), ("small tuple", SMALL_TUPLE)):
            ways = [
                Way(c.name, _Throughput(c, pairs, n, msg).fn, self_timed=True)
                for c in _channels(pipes=pairs == 1)
            ]
            res = run_side_by_side(ways, REPEAT, WARMUP, baseline="multiprocessing.Queue")
            small[(pairs, label)] = _rate(res, (n // pairs) * pairs, "msg/s")

    # 2. latency
    lat_runs: dict[str, Any] = {c.name: _Latency(c, rounds) for c in _channels(pipes=True)}
    lat_ways = [Way(name, r.fn, self_timed=True) for name, r in lat_runs.items()]
    if have_floors:
        for mode, name in (("futex", "floor: futex wake"), ("spin", "floor: spin hand-off")):
            lat_runs[name] = _Floor(mode, rounds)
            lat_ways.append(Way(name, lat_runs[name].fn, self_timed=True))
    lat = run_side_by_side(lat_ways, REPEAT, WARMUP, baseline="multiprocessing.Pipe")
    lat99 = Result(
        {k: r.p99[WARMUP:] for k, r in lat_runs.items()}, baseline="multiprocessing.Pipe"
    )

    # 3. big arrays
    big: dict[int, tuple[Result, dict[str, _Big]]] = {}
    for nbytes in big_sizes:
        runs = {c.name: _Big(c, nbytes, STEADY) for c in _channels(pipes=True) if not c.many}
        ways = [Way(name, r.fn, self_timed=True) for name, r in runs.items()]
        ways.append(Way("floor: one memcpy", _Memcpy(nbytes).fn, self_timed=True))
        res = run_side_by_side(
            ways, REPEAT, WARMUP, baseline="multiprocessing.Queue", floor="floor: one memcpy"
        )
        big[nbytes] = (_rate(res, nbytes / 1e9, "GB/s"), runs)

    # 4. shoal.Array by handle
    handle: Result | None = None
    handle_chans = [c for c in _channels(pipes=False) if c.name in ("shoal.Queue",)]
    handle_chans.append(Chan("multiprocessing.Queue", False, lambda _b: _ctx.Queue()))
    hw = []
    for c in handle_chans:
        for nbytes in handle_sizes:
            h = _ByHandle(c, nbytes)
            hw.append(Way(f"{c.name}, {fmt_bytes(nbytes)}", h.fn, h.setup, h.teardown, True))
    handle = run_side_by_side(hw, REPEAT, WARMUP)
    elapsed = time.monotonic() - started

    return section(
        "Channels: Queue, SimpleQueue and Pipe between processes",
        _report(
            quick,
            n,
            rounds,
            small,
            lat,
            lat99,
            big,
            handle,
            handle_sizes,
            notes,
            elapsed,
        ),
    )


def _report(
    quick: bool,
    n: int,
    rounds: int,
    small: dict[tuple[int, str], Result],
    lat: Result,
    lat99: Result,
    big: dict[int, tuple[Result, dict[str, _Big]]],
    handle: Result,
    handle_sizes: list[int],
    notes: list[str],
    elapsed: float,
) -> str:
    parts = [
        (
            f"N = {n} messages per repetition; {rounds} ping-pong round trips; every producer "
            "and consumer a forked process. Throughput tables are in messages/s or GB/s (higher "
            "is better there: a ratio above 1 is faster than the baseline)."
        ),
        "",
    ]
    parts += [f"- {note}" for note in notes]
    parts.append("")
    for (pairs, label), res in small.items():
        parts.append(res.to_markdown(f"{pairs} -> {pairs} processes, {label}, messages/s"))
    parts.append(lat.to_markdown("One-way latency p50 (half a round trip), 100-byte bytes"))
    parts.append(lat99.to_markdown("One-way latency p99, same runs"))
    for nbytes, (res, runs) in big.items():
        parts.append(
            res.to_markdown(
                f"{fmt_bytes(nbytes)} float64 ndarrays, 1 -> 1, steady state over {STEADY} "
                "arrays after the first, consumer touching one byte per page"
            )
        )
        firsts = [
            f"{name} {fmt_duration(statistics.median(r.figures.first[WARMUP:]))}"
            for name, r in runs.items()
        ]
        parts.append(
            f"First {fmt_bytes(nbytes)} array, put to arrival (median): " + "; ".join(firsts) + "."
        )
        parts.append("")
        mem_rows: dict[str, ProcMem] = {}
        shm = []
        for name, r in runs.items():
            if r.figures.mem is None:
                continue
            p_mem, c_mem, shmem = r.figures.mem
            mem_rows[f"{name}: producer"] = p_mem
            mem_rows[f"{name}: consumer"] = c_mem
            shm.append(f"{name} {fmt_bytes(shmem)}")
        parts.append(
            f"Memory growth with {fmt_bytes(nbytes)} arrays (last repetition, the consumer "
            "holding the last array; producer at its end):"
        )
        parts.append("")
        parts.append(memory_table(mem_rows))
        parts.append("Machine Shmem growth at that moment: " + "; ".join(shm) + ".")
        parts.append("")
    parts.append(
        handle.to_markdown(
            "A shoal.Array sent by handle: put to the consumer reading its first element"
        )
    )
    parts.append("**Targets** (issue 16)")
    parts.append("")
    parts.append(_targets(small, lat, big, handle, handle_sizes))
    parts.append("")
    parts.append(f"Whole script: {fmt_duration(elapsed)}" + (" (`--quick`)." if quick else "."))
    return "\n".join(parts)


def _targets(
    small: dict[tuple[int, str], Result],
    lat: Result,
    big: dict[int, tuple[Result, dict[str, _Big]]],
    handle: Result,
    handle_sizes: list[int],
) -> str:
    rows: list[tuple[str, str, bool]] = []
    if not HAVE_SHOAL_QUEUE:
        return "No shoal.Queue in this build: no target can be checked."
    for (pairs, label), res in small.items():
        where = f"{pairs} -> {pairs}, {label}"
        best = max(res.median("shoal.Queue"), res.median("shoal.Queue get_many"))
        if _ff is not None:
            ff = max(res.median("faster_fifo.Queue"), res.median("faster_fifo.Queue get_many"))
            rows.append(
                (
                    f"{where}: shoal.Queue above faster-fifo (best of get / get_many each)",
                    f"{_fmt_rate(best)} vs {_fmt_rate(ff)}",
                    best > ff,
                )
            )
            for form in ("", " get_many"):
                s, f = res.median("shoal.Queue" + form), res.median("faster_fifo.Queue" + form)
                rows.append(
                    (
                        f"{where}: shoal.Queue{form} above faster_fifo.Queue{form}",
                        f"{_fmt_rate(s)} vs {_fmt_rate(f)}",
                        s > f,
                    )
                )
        need = min(5 * res.median("multiprocessing.Queue"), 1e6)
        rows.append(
            (
                f"{where}: shoal.Queue >= min(5x multiprocessing.Queue, 10^6 msg/s)",
                f"{_fmt_rate(best)} vs {_fmt_rate(need)} needed",
                best >= need,
            )
        )
    pipe = lat.median("multiprocessing.Pipe")
    for name in ("shoal.Queue", "shoal.SimpleQueue", "shoal.Pipe"):
        if name in lat.samples:
            got = lat.median(name)
            rows.append(
                (
                    f"p50 one-way latency: {name} below multiprocessing.Pipe",
                    f"{fmt_duration(got)} vs {fmt_duration(pipe)}",
                    got < pipe,
                )
            )
    for nbytes, (res, _runs) in big.items():
        if nbytes < 64 * MIB:
            continue
        got, floor = res.median("shoal.Queue"), res.median("floor: one memcpy")
        rows.append(
            (
                f"{fmt_bytes(nbytes)} ndarrays, steady state: shoal.Queue >= half of one memcpy",
                f"{got:.2f} vs {floor / 2:.2f} GB/s needed",
                got >= floor / 2,
            )
        )
    small_t = handle.median(f"shoal.Queue, {fmt_bytes(handle_sizes[0])}")
    large_t = handle.median(f"shoal.Queue, {fmt_bytes(handle_sizes[-1])}")
    rows.append(
        (
            (
                f"shoal.Array by handle: {fmt_bytes(handle_sizes[-1])} within 2x of "
                f"{fmt_bytes(handle_sizes[0])} (time independent of size)"
            ),
            f"{fmt_duration(large_t)} vs {fmt_duration(small_t)}",
            large_t <= 2 * small_t,
        )
    )
    lines = ["| target | measured (medians) | |", "| --- | ---: | --- |"]
    lines += [f"| {t} | {got} | {_mark(ok)} |" for t, got, ok in rows]
    return "\n".join(lines)


def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--quick", action="store_true", help=f"N = {N_QUICK} instead of {N_DEFAULT}, smaller arrays"
    )
    print(run(parser.parse_args().quick))


if __name__ == "__main__":
    _main()
