"""Shared containers (seed 002): shoal.Dict and shoal.List against a local dict/list,
Manager().dict()/list(), UltraDict and shared-memory-dict.

Measures, in one run, interleaved, with medians and spreads over 5 repetitions:

1. ``d[k]`` (get) and ``d[k] = v`` (set) on a dict of 1000 int keys with short str values, keys
   drawn at random, from 1 process and from 2 processes at once (2 forked children on the same
   container, first start to last end; time per operation is the span over both children's
   operations). Ways: a local dict (1 process only: it is not shared), shoal.Dict,
   Manager().dict(), UltraDict (its default lock, which only serialises this process's
   threads, and ``shared_lock=True``, its lock across processes) and shared-memory-dict's
   SharedMemoryDict. Each way runs a number of operations calibrated to take about 0.1 s, so
   the slow ones do not take the whole run; the tables are per operation.
2. p50 and p99 latency of one operation: a second loop timing each operation alone (perf
   counter around it; the timer's own cost, measured as the "floor" row, is included).
3. ``lst[i]`` (index) and ``lst.append(v)`` on a list of 1000 short strs, the same way, against
   a local list and Manager().list() (when this build of shoal has shoal.List).
4. Memory (issue 15, item 5): a shoal.Dict of 10**4 live keys whose values are bytes of
   log-uniform sizes from 8 B to 1 MiB, through 10**5 random set/delete operations
   (``SHOAL_BENCH_CONTAINERS_MEM_OPS``, e.g. 1e6): the heap's reserved and live bytes against
   the bound 2 x encoded live data + 64 B per entry + 1 MiB, checked every 1000 operations, and
   the machine's Shmem growth; then per-process memory (private Anonymous, USS, PSS).

It ends with a Targets table (issue 15), each target marked met or missed. Run
``python bench/python/containers.py [--quick]`` to print the section; ``shoal bench`` calls
``run(quick)``. A peer that is not installed is skipped and named (requirements-dev.txt pins
them: ``make setup-bench``).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import itertools
import math
import multiprocessing as mp
import os
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import wait as mp_wait
from typing import Any

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
from shoal._tools.measure import (
    MIB,
    diff,
    fmt_bytes,
    fmt_signed,
    machine_shmem,
    proc_mem,
    settled_shmem,
)

try:
    from UltraDict import UltraDict
except ImportError:  # pragma: no cover - depends on the environment
    UltraDict = None
try:
    from shared_memory_dict import SharedMemoryDict
except ImportError:  # pragma: no cover - depends on the environment
    SharedMemoryDict = None
try:
    import atomics  # noqa: F401  (UltraDict's shared_lock=True needs it)

    HAVE_ATOMICS = True
except ImportError:  # pragma: no cover - depends on the environment
    HAVE_ATOMICS = False

HAVE_LIST = hasattr(shoal, "List")
_SMD_NAMES = itertools.count()

REPEAT = 5
WARMUP = 1
KEYS = 1000
MASK = 4095  # the key/value sequences are 4096 long
TARGET_SECONDS = 0.1  # each way's operations per repetition are calibrated to about this
TARGET_QUICK = 0.02
MAX_OPS = 400_000
LAT_OPS = 20_000  # operations timed one by one per repetition (at most)
DEADLINE = 300.0

MEM_KEYS_ENV = "SHOAL_BENCH_CONTAINERS_MEM_KEYS"
MEM_OPS_ENV = "SHOAL_BENCH_CONTAINERS_MEM_OPS"
MEM_KEYS = 10_000
MEM_OPS = 100_000
MEM_MIN_SIZE = 8
MEM_MAX_SIZE = 1 << 20
ENTRY_OVERHEAD = 64
SLACK = MIB

DICT = "dict (local, reference)"
SH_DICT = "shoal.Dict"
MP_DICT = "Manager().dict()"
ULTRA = "UltraDict"
ULTRA_LOCK = "UltraDict(shared_lock=True)"
SMD = "SharedMemoryDict"
LIST = "list (local, reference)"
SH_LIST = "shoal.List"
MP_LIST = "Manager().list()"
FLOOR = "floor: empty loop + timer"


# --- the operations ----------------------------------------------------------------------
# Each runs n operations on c; k is 4096 random keys (or indexes), v 4096 short strs.


def _get(c: Any, k: list[int], v: list[str], n: int) -> None:
    for i in range(n):
        c[k[i & MASK]]


def _set(c: Any, k: list[int], v: list[str], n: int) -> None:
    for i in range(n):
        c[k[i & MASK]] = v[i & MASK]


def _append(c: Any, k: list[int], v: list[str], n: int) -> None:
    a = c.append
    for i in range(n):
        a(v[i & MASK])


def _noop(c: Any, k: list[int], v: list[str], n: int) -> None:
    for i in range(n):
        k[i & MASK]


def _latencies(op: Callable[..., None], c: Any, k: list[int], v: list[str], m: int) -> list[int]:
    """m operations, each timed alone (ns)."""
    out = []
    clock = time.perf_counter_ns
    for i in range(m):
        j = i & MASK
        kk, vv = [k[j]], [v[j]]
        t0 = clock()
        op(c, kk, vv, 1)
        out.append(clock() - t0)
    return out


OPS: dict[str, Callable[..., None]] = {
    "get": _get,
    "set": _set,
    "index": _get,
    "append": _append,
    "floor": _noop,
}


def _sequences(seed: int) -> tuple[list[int], list[str]]:
    rng = random.Random(seed)
    return [rng.randrange(KEYS) for _ in range(MASK + 1)], [
        f"value{rng.randrange(10**6)}" for _ in range(MASK + 1)
    ]


# --- the containers ----------------------------------------------------------------------


@dataclass
class Subject:
    """One container of one way: made once, used by every repetition, closed at the end."""

    name: str
    obj: Any
    close: Callable[[], None] = lambda: None
    lat: list[int] = field(default_factory=list)  # latency samples (ns), all repetitions


def _fill_dict(d: Any, v: list[str]) -> Any:
    for i in range(KEYS):
        d[i] = v[i]
    return d


def _dict_subjects(manager: Any, two: bool) -> tuple[list[Subject], list[str]]:
    _, v = _sequences(1)
    subs: list[Subject] = []
    skipped: list[str] = []
    if not two:
        subs.append(Subject(DICT, _fill_dict({}, v)))
    subs.append(Subject(SH_DICT, _fill_dict(shoal.Dict(), v)))
    subs.append(Subject(MP_DICT, _fill_dict(manager.dict(), v)))
    if UltraDict is None:
        skipped.append("UltraDict (not installed)")
    else:
        u = UltraDict()
        subs.append(Subject(ULTRA, _fill_dict(u, v), _ultra_closer(u)))
        if HAVE_ATOMICS:
            ul = UltraDict(shared_lock=True)
            subs.append(Subject(ULTRA_LOCK, _fill_dict(ul, v), _ultra_closer(ul)))
        else:
            skipped.append("UltraDict(shared_lock=True) (the atomics package is not installed)")
    if SharedMemoryDict is None:
        skipped.append("shared-memory-dict (not installed)")
    else:
        s = SharedMemoryDict(name=f"shoalbench{os.getpid()}_{next(_SMD_NAMES)}", size=1 << 20)
        subs.append(Subject(SMD, _fill_dict(s, v), _smd_closer(s)))
    return subs, skipped


def _ultra_closer(u: Any) -> Callable[[], None]:
    def close() -> None:
        with contextlib.suppress(Exception):  # best effort at the end of a run
            u.unlink()

    return close


def _smd_closer(s: Any) -> Callable[[], None]:
    def close() -> None:
        with contextlib.suppress(Exception):  # best effort at the end of a run
            s.shm.close()
            s.shm.unlink()

    return close


def _list_subjects(manager: Any, two: bool) -> list[Subject]:
    _, v = _sequences(1)
    subs: list[Subject] = []
    if not two:
        subs.append(Subject(LIST, list(v[:KEYS])))
    if HAVE_LIST:
        subs.append(Subject(SH_LIST, shoal.List(v[:KEYS])))
    subs.append(Subject(MP_LIST, manager.list(v[:KEYS])))
    return subs


def _calibrate(op: Callable[..., None], c: Any, k: list[int], v: list[str], target: float) -> int:
    n = 64
    while True:
        t0 = time.perf_counter()
        op(c, k, v, n)
        dt = time.perf_counter() - t0
        if dt > target / 10 or n >= MAX_OPS:
            return max(64, min(MAX_OPS, int(n * target / max(dt, 1e-9))))
        n *= 4


# --- 1 process ---------------------------------------------------------------------------


def _one_process_way(sub: Subject, opname: str, target: float) -> Way:
    op = OPS[opname]
    k, v = _sequences(2)
    n = _calibrate(op, sub.obj, k, v, target)

    def fn() -> float:
        t0 = time.perf_counter()
        op(sub.obj, k, v, n)
        dt = time.perf_counter() - t0
        sub.lat += _latencies(op, sub.obj, k, v, min(n, LAT_OPS))
        return dt / n

    return Way(sub.name, fn, self_timed=True)


# --- 2 processes -------------------------------------------------------------------------


def _child(opname: str, c: Any, n: int, seed: int, ready: Any, go: Any, conn: Any) -> None:
    try:
        op = OPS[opname]
        k, v = _sequences(seed)
        ready.set()
        go.wait()
        t0 = time.perf_counter()
        op(c, k, v, n)
        t1 = time.perf_counter()
        lat = _latencies(op, c, k, v, min(n, LAT_OPS))
        conn.send((t0, t1, lat))
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which raises
        conn.send(("error", repr(e), []))
    conn.close()


class PeerFailed(RuntimeError):
    """A way failed in a child (a peer whose concurrent writers corrupt it, or crash it): it is
    left out of its table and named."""

    def __init__(self, way: str, why: str) -> None:
        super().__init__(f"{way}: {why}")
        self.way = way


class _TwoProcesses:
    """Per repetition: 2 forked children, each doing n operations on the same container."""

    def __init__(self, ctx: Any, sub: Subject, opname: str, target: float) -> None:
        self.ctx, self.sub, self.opname = ctx, sub, opname
        k, v = _sequences(3)
        # Calibrated alone, then halved: the two children together take about the target.
        self.n = max(64, _calibrate(OPS[opname], sub.obj, k, v, target) // 2)
        self.procs: list[Any] = []
        self.conns: list[Any] = []
        self.overlaps: list[bool] = []

    def setup(self) -> None:
        self.go = self.ctx.Event()
        self.procs, self.conns, readies = [], [], []
        for i in range(2):
            ready = self.ctx.Event()
            parent, child = self.ctx.Pipe()
            p = self.ctx.Process(
                target=_child,
                args=(self.opname, self.sub.obj, self.n, 10 + i, ready, self.go, child),
                daemon=True,
            )
            p.start()
            child.close()
            self.procs.append(p)
            self.conns.append(parent)
            readies.append(ready)
        for ready in readies:
            if not ready.wait(DEADLINE):
                raise RuntimeError(f"{self.sub.name}: a child did not start")

    def fn(self) -> float:
        self.go.set()
        spans = []
        failure = ""
        # Read whichever child is ready first (a child blocks sending its latencies until it is
        # read), and notice a child that dies without a result (a peer crashing under
        # concurrent writers).
        pending = list(zip(self.conns, self.procs, strict=True))
        end = time.monotonic() + DEADLINE
        while pending:
            left = end - time.monotonic()
            if left <= 0:
                for _, p in pending:  # e.g. waiting for a lock its dead sibling held
                    p.kill()
                if failure:
                    raise PeerFailed(self.sub.name, failure + "; the other child hung")
                raise RuntimeError(f"{self.sub.name}: a child did not finish")
            ready = mp_wait([c for c, _ in pending] + [p.sentinel for _, p in pending], left)
            for c, p in list(pending):
                if c not in ready and p.sentinel not in ready:
                    continue
                msg = None
                if c.poll(0.5):
                    try:
                        msg = c.recv()
                    except EOFError:
                        msg = None
                elif c not in ready and p.is_alive():
                    continue
                pending.remove((c, p))
                if msg is None:
                    p.join(5)
                    failure = failure or f"a child ended without a result (exit code {p.exitcode})"
                    end = min(end, time.monotonic() + 10)
                elif msg[0] == "error":
                    failure = failure or str(msg[1])[:160]
                    end = min(end, time.monotonic() + 10)
                else:
                    spans.append((msg[0], msg[1]))
                    self.sub.lat += msg[2]
        if failure:
            raise PeerFailed(self.sub.name, failure)
        (s0, e0), (s1, e1) = spans
        self.overlaps.append(max(s0, s1) < min(e0, e1))
        return (max(e0, e1) - min(s0, s1)) / (2 * self.n)

    def teardown(self) -> None:
        for p in self.procs:
            p.join(DEADLINE)
        for c in self.conns:
            c.close()


# --- a table of one operation ------------------------------------------------------------


@dataclass
class Table:
    title: str
    result: Result
    subjects: list[Subject]
    note: str = ""

    def markdown(self) -> str:
        lines = [self.result.to_markdown(self.title + " (time per operation)")]
        lines += [
            "| way | operations/s (median) | p50 latency | p99 latency |",
            "| --- | ---: | ---: | ---: |",
        ]
        for s in self.subjects:
            med = self.result.median(s.name)
            p50, p99 = _percentiles(s.lat)
            lines.append(f"| {s.name} | {_rate(med)} | {p50} | {p99} |")
        if self.note:
            lines += ["", self.note]
        return "\n".join(lines) + "\n"


def _percentiles(lat: list[int]) -> tuple[str, str]:
    if not lat:
        return "-", "-"
    qs = statistics.quantiles(lat, n=100, method="inclusive")
    return fmt_duration(qs[49] / 1e9), fmt_duration(qs[98] / 1e9)


def _rate(per_op: float) -> str:
    r = 1.0 / per_op if per_op > 0 else math.inf
    if r >= 1e6:
        return f"{r / 1e6:.2f} M"
    if r >= 1e3:
        return f"{r / 1e3:.1f} k"
    return f"{r:.0f}"


def _measure(
    ctx: Any, subs: list[Subject], opname: str, two: bool, target: float, title: str
) -> Table:
    ways: list[Way] = []
    overlap: list[_TwoProcesses] = []
    failed: list[str] = []
    kept: list[Subject] = []
    for sub in subs:
        if two:
            t = _TwoProcesses(ctx, sub, opname, target)
            # One probe run: a way whose children fail is left out (and named), not timed.
            try:
                t.setup()
                try:
                    t.fn()
                finally:
                    t.teardown()
            except PeerFailed as e:
                failed.append(str(e))
                sub.close()
                continue
            t.overlaps.clear()
            sub.lat.clear()
            kept.append(sub)
            overlap.append(t)
            ways.append(Way(sub.name, t.fn, t.setup, t.teardown, self_timed=True))
        else:
            kept.append(sub)
            ways.append(_one_process_way(sub, opname, target))
    subs = kept
    floor = None
    if not two:
        f = Subject(FLOOR, {})
        subs = [*subs, f]
        ways.append(_one_process_way(f, "floor", target))
        floor = FLOOR
    baseline = next(s.name for s in subs if s.name.startswith("Manager"))
    while True:
        try:
            res = run_side_by_side(ways, REPEAT, WARMUP, baseline=baseline, floor=floor)
            break
        except PeerFailed as e:  # failed in a later repetition: the table again, without it
            failed.append(str(e))
            ways = [w for w in ways if w.name != e.way]
            subs = [x for x in subs if x.name != e.way]
            overlap = [t for t in overlap if t.sub.name != e.way]
            for x in subs:
                x.lat.clear()
            for t in overlap:
                t.overlaps.clear()
    note = ""
    if overlap:
        ov = sum(sum(t.overlaps[WARMUP:]) for t in overlap)
        tot = sum(len(t.overlaps[WARMUP:]) for t in overlap)
        note = f"The two children's run intervals overlapped in {ov}/{tot} repetitions."
    for f in failed:
        note += f" Left out, its children failed: {f}."
    return Table(title, res, subs, note)


# --- memory ------------------------------------------------------------------------------


@dataclass
class MemoryRun:
    keys: int
    ops: int
    size: int = 0
    encoded: int = 0
    live: int = 0
    reserved: int = 0
    bound: int = 0
    worst_ratio: float = 0.0  # max over checkpoints of reserved / bound
    worst_at: int = 0
    shmem_growth: int = 0
    seconds: float = 0.0
    checkpoints: int = 0


def memory_run(keys: int, ops: int, seed: int, max_size: int = MEM_MAX_SIZE) -> MemoryRun:
    """The item 5 workload on a new shoal.Dict; tests/python/test_containers_memory.py runs a
    smaller one. Encoded live data: each live value's bytes plus 8 B for its int key."""
    rng = random.Random(seed)
    lo, hi = math.log(MEM_MIN_SIZE), math.log(max_size)
    blob = rng.randbytes(max_size)
    base = settled_shmem(2.0)
    d = shoal.Dict()
    sizes: dict[int, int] = {}
    live_keys: list[int] = []
    where: dict[int, int] = {}  # key -> index in live_keys (O(1) random delete)
    next_key = 0
    encoded = 0
    out = MemoryRun(keys, ops)

    def size() -> int:
        return int(math.exp(rng.uniform(lo, hi)))

    def put(k: int) -> None:
        nonlocal encoded
        s = size()
        d[k] = blob[:s]
        if k in sizes:
            encoded -= sizes[k] + 8
        else:
            where[k] = len(live_keys)
            live_keys.append(k)
        sizes[k] = s
        encoded += s + 8

    def drop() -> None:
        nonlocal encoded
        i = rng.randrange(len(live_keys))
        k = live_keys[i]
        last = live_keys.pop()
        if last != k:
            live_keys[i] = last
            where[last] = i
        del where[k]
        del d[k]
        encoded -= sizes.pop(k) + 8

    def checkpoint(at: int) -> None:
        st = d._stats()
        bound = 2 * encoded + ENTRY_OVERHEAD * len(live_keys) + SLACK
        r = st["heap_reserved_bytes"] / bound
        out.checkpoints += 1
        if r > out.worst_ratio:
            out.worst_ratio, out.worst_at = r, at

    t0 = time.monotonic()
    for _ in range(keys):
        put(next_key)
        next_key += 1
    checkpoint(0)
    for i in range(1, ops + 1):
        x = rng.random()
        n = len(live_keys)
        if n >= keys * 1.1 or (x < 1 / 3 and n > keys * 0.9):
            drop()
        elif n <= keys * 0.9 or x < 2 / 3:
            put(next_key)
            next_key += 1
        else:
            put(live_keys[rng.randrange(n)])
        if i % 1000 == 0:
            checkpoint(i)
    out.seconds = time.monotonic() - t0
    checkpoint(ops)
    st = d._stats()
    out.size = len(d)
    out.encoded = encoded
    out.live = st["heap_live_bytes"]
    out.reserved = st["heap_reserved_bytes"]
    out.bound = 2 * encoded + ENTRY_OVERHEAD * out.size + SLACK
    out.shmem_growth = machine_shmem() - base
    d._check()
    return out


def _memory_section(quick: bool) -> tuple[str, MemoryRun]:
    keys = 1000 if quick else size_from_env(MEM_KEYS_ENV, MEM_KEYS, minimum=10)
    ops = 10_000 if quick else size_from_env(MEM_OPS_ENV, MEM_OPS, minimum=10)
    before = proc_mem()
    m = memory_run(keys, ops, seed=15)
    after = proc_mem()
    text = "\n".join(
        [
            (
                f"**Memory** (issue 15, item 5): a shoal.Dict of {keys} live keys (int), values bytes "
                f"of log-uniform sizes {MEM_MIN_SIZE} B to {fmt_bytes(MEM_MAX_SIZE)}, after {ops} "
                f"random set/delete operations (seed 15; {fmt_duration(m.seconds)}). Bound: 2 x "
                "encoded live data (each value's bytes + 8 B per int key) + 64 B per entry + 1 MiB, "
                f"checked at {m.checkpoints} checkpoints (every 1000 operations)."
            ),
            "",
            "| figure | bytes |",
            "| --- | ---: |",
            f"| live entries | {m.size} |",
            f"| encoded live data | {fmt_bytes(m.encoded)} |",
            f"| heap live bytes (blocks in use) | {fmt_bytes(m.live)} |",
            f"| heap reserved bytes (extents: the memory in use) | {fmt_bytes(m.reserved)} |",
            f"| bound | {fmt_bytes(m.bound)} |",
            f"| reserved / bound, at the end | {m.reserved / m.bound:.2f} |",
            f"| reserved / bound, worst checkpoint (after {m.worst_at} ops) | {m.worst_ratio:.2f} |",
            f"| machine Shmem growth (the dict still alive) | {fmt_signed(m.shmem_growth)} |",
            "",
            (
                "This process's memory across the run (the dict's pages are shared memory: they "
                "show in PSS shmem while mapped, not in Anonymous):"
            ),
            "",
            memory_table({"growth": diff(after, before)}),
        ]
    )
    return text, m


# --- report ------------------------------------------------------------------------------


def _mark(ok: bool) -> str:
    return "met" if ok else "**missed**"


def run(quick: bool) -> str:
    """Run every measurement; return the markdown section."""
    target = TARGET_QUICK if quick else TARGET_SECONDS
    started = time.monotonic()
    ctx = mp.get_context("fork")
    tables: list[Table] = []
    skipped: list[str] = []
    closers: list[Subject] = []
    with mp.Manager() as manager:
        try:
            for two in (False, True):
                who = "2 processes at once" if two else "1 process"
                for opname in ("get", "set"):
                    subs, sk = _dict_subjects(manager, two)
                    closers += subs
                    skipped += [s for s in sk if s not in skipped]
                    tables.append(_measure(ctx, subs, opname, two, target, f"Dict {opname}, {who}"))
            for two in (False, True):
                who = "2 processes at once" if two else "1 process"
                for opname in ("index", "append"):
                    subs = _list_subjects(manager, two)
                    tables.append(_measure(ctx, subs, opname, two, target, f"List {opname}, {who}"))
        finally:
            for s in closers:
                s.close()
    gc.collect()
    mem_text, mem = _memory_section(quick)
    elapsed = time.monotonic() - started

    def t(title: str) -> Result:
        return next(x.result for x in tables if x.title == title)

    rows = []
    for who in ("1 process", "2 processes at once"):
        g, s = t(f"Dict get, {who}"), t(f"Dict set, {who}")
        x = g.median(MP_DICT) / g.median(SH_DICT)
        rows.append((f"Dict get, {who}: at least 50x Manager().dict()", f"{x:.0f}x", x >= 50))
        if ULTRA in g.samples:
            x = g.median(ULTRA) / g.median(SH_DICT)
            rows.append((f"Dict get, {who}: faster than UltraDict's get", f"{x:.2f}x", x > 1))
        x = s.median(MP_DICT) / s.median(SH_DICT)
        rows.append((f"Dict set, {who}: at least 50x Manager().dict()", f"{x:.0f}x", x >= 50))
        if ULTRA in s.samples:
            x = s.median(ULTRA) / s.median(SH_DICT)
            rows.append(
                (
                    f"Dict set, {who}: faster than UltraDict's set without its lock",
                    f"{x:.2f}x",
                    x > 1,
                )
            )
        for opname in ("index", "append"):
            r = t(f"List {opname}, {who}")
            if SH_LIST in r.samples:
                x = r.median(MP_LIST) / r.median(SH_LIST)
                rows.append(
                    (f"List {opname}, {who}: at least 50x Manager().list()", f"{x:.0f}x", x >= 50)
                )
    rows.append(
        (
            "Memory: heap reserved within 2 x encoded live + 64 B/entry + 1 MiB (worst checkpoint)",
            f"{mem.worst_ratio:.2f} of the bound",
            mem.worst_ratio <= 1.0,
        )
    )
    targets = ["| target | measured (ratio of medians) | |", "| --- | ---: | --- |"]
    targets += [f"| {a} | {b} | {_mark(ok)} |" for a, b, ok in rows]

    parts = [
        (
            f"A dict of {KEYS} int keys with short str values (`'value123456'`), keys drawn at "
            f"random; a list of {KEYS} such strs. Each way runs as many operations as take it about "
            f"{fmt_duration(target)} per repetition (calibrated once); the tables give the time per "
            "operation. 2 processes: 2 forked children on the same container at once, first start "
            "to last end, divided by both children's operations. Latencies: each operation timed "
            "alone after the timed loop (the floor row is the loop and timer alone). UltraDict "
            "without shared_lock has no lock across processes (its writers in 2 processes race); "
            "SharedMemoryDict re-reads (unpickles) the whole dict on every get and rewrites it on "
            "every set."
        ),
        "",
    ]
    if skipped:
        parts += ["Skipped: " + "; ".join(skipped) + ".", ""]
    if not HAVE_LIST:
        parts += ["shoal.List is not in this build: the List tables show the peers only.", ""]
    for tab in tables:
        parts += [tab.markdown(), ""]
    parts += [mem_text, "", "**Targets** (issue 15)", "", "\n".join(targets), ""]
    parts.append(f"Whole script: {fmt_duration(elapsed)}" + (" (`--quick`)." if quick else "."))
    return section("Containers: shoal.Dict and shoal.List against their peers", "\n".join(parts))


def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="short loops, a small memory run")
    print(run(parser.parse_args().quick))


if __name__ == "__main__":
    _main()
