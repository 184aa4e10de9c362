"""Sharing a large read-only ndarray (seed 003): every way, side by side, on the same data.

Measures, in one run, interleaved, with medians and spreads over >= 5 repetitions, for a
float64 matrix of 1 GiB (``--quick``: 64 MiB; size knob: ``SHOAL_BENCH_ARRAY_BYTES`` or
``SHOAL_BENCH_SCALE``):

1. the time to share it (create + fill, in this process), next to a floor measured in the
   same rounds: the fastest of three ways to get that many fresh shared pages (page faults,
   ``MADV_POPULATE_WRITE``, ``fallocate``) plus one memcpy into populated pages;
2. the time a worker takes to attach (from the handle it received to a usable ndarray),
   timed inside a long-lived worker process (spawn);
3. the worker's ``sum()`` throughput, cold (first pass after attaching) and steady-state,
   next to a local ndarray's;
4. the worker's memory growth (Anonymous/USS/PSS) and the machine's Shmem growth, hence the
   number of copies;
5. what is left in memory and in /dev/shm after the creator is SIGKILLed (and after its
   whole process group is, resource tracker included).

The ways: pickling through a Pipe, ``multiprocessing.shared_memory``, ``RawArray``,
``numpy.memmap`` on /dev/shm, SharedArray and joblib's automatic memmapping (where they
install), and ``shoal.share``. In the same rounds, diagnoses of shoal's time: its attach
split into the broker's ``Segment.attach`` and the Python view (next to a bare round trip to
a sleeping process), and two other ways to fill a segment (``MAP_POPULATE``, ``pwrite``).
The section ends with shoal's targets (met or missed, on this run's medians) and where its
time goes. Run ``python bench/python/arrays.py [--quick]`` to print the section; ``shoal
bench`` calls ``run(quick)``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import mmap
import multiprocessing as mp
import os
import pickle
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from multiprocessing import shared_memory
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

import shoal
from shoal import _shoal
from shoal._tools.harness import (
    Result,
    Way,
    Worker,
    fmt_duration,
    memory_table,
    run_side_by_side,
    section,
    size_from_env,
)
from shoal._tools.measure import ProcMem, diff, fmt_bytes, machine_shmem, proc_mem

try:
    import SharedArray as _sa
except ImportError:  # a peer: measured where it installs
    _sa = None
try:
    import joblib as _joblib
except ImportError:
    _joblib = None

SIZE_ENV = "SHOAL_BENCH_ARRAY_BYTES"
SIZE_DEFAULT = 1 << 30
SIZE_QUICK = 64 << 20
KILL_SIZE_MAX = 256 << 20  # the SIGKILL phase needs >= 64 MiB to read Shmem, not more
COLS = 1024  # the matrix is (rows, 1024) float64: one row is 8 KiB
REPEAT = 5
WARMUP = 1
AGAIN = 8  # attaches per round of each handle way in the repeated-attach phase
SUMS = 5  # the first is the cold pass; the steady state is the fastest of the others
# (the fastest, not the median: this 2-core machine is shared, and the question is what
# the memory system gives a worker, not what the neighbours leave it)
PAGE = mmap.PAGESIZE
DEADLINE = 60.0  # seconds; what must happen "soon" and did not is an error
SETTLE = 1.0  # seconds a SIGKILLed creator's helpers get to clean up after it
QUIESCE = 5.0  # seconds a way's teardown waits for the memory it freed to come back
SHMEM_SLACK = 4 << 20
MADV_POPULATE_WRITE = 23  # linux/mman.h (5.14+); the mmap module may not have it
GB = 1e9

PICKLE = "pickle through a Pipe"
SHM = "shared_memory + ndarray"
RAW = "RawArray + frombuffer"
MEMMAP = "numpy.memmap on /dev/shm"
SA = "SharedArray"
JOBLIB = "joblib auto-memmap"
SHOAL = "shoal.share"
SHOAL_STEPS = "diagnosis: shoal attach, steps timed apart"
LOCAL = "local ndarray (this process)"
D_POPULATE = "diagnosis: shoal Segment.create(populate=True) + copy"
D_PWRITE = "diagnosis: memfd + pwrite of the data (no fallocate, no faults)"
D_UNPICKLE = "floor: pickle.loads of a payload of the same shape (nothing attached)"
P_AGAIN = "repeated attaches"
F_FAULTS = "floor part: page faults"
F_POPULATE = "floor part: MADV_POPULATE_WRITE"
F_FALLOCATE = "floor part: fallocate"
F_MEMCPY = "floor part: memcpy"
FLOOR = "floor"
STEP_NAMES = {  # the steps of SHOAL_STEPS, timed in the worker
    "total": "shoal, by hand: total",
    "segment_attach": "shoal, by hand: Segment.attach (hint: pidfd_getfd, pread, mmap, ring)",
    "view": "shoal, by hand: building the ndarray view (C++)",
}


# --------------------------------------------------------------------------------------
# marks: objects that record, when unpickled, when (and at what memory) the receiver got
# to them. Around a payload in a pickle, they time its unpickling inside the receiver,
# where there is no other hook (a Process argument, a joblib task argument).


def _mark_start() -> tuple[int, ProcMem]:
    mem = proc_mem()  # read first: reading smaps is not part of the timed span
    return time.perf_counter_ns(), mem


def _mark_end() -> int:
    return time.perf_counter_ns()


class _StartMark:
    def __reduce__(self) -> tuple[Any, ...]:
        return (_mark_start, ())


class _EndMark:
    def __reduce__(self) -> tuple[Any, ...]:
        return (_mark_end, ())


# --------------------------------------------------------------------------------------
# the worker side (module level: spawn children import these by name)


def _open(way: str, obj: Any) -> tuple[np.ndarray, Any]:
    """Turn what a worker received into (usable ndarray, what keeps its mapping alive)."""
    if way in (SHOAL, PICKLE):
        return obj, None  # unpickling did all the work
    if way == D_UNPICKLE:
        return np.empty(0), {}  # the unpickling (a slice of the same values) was all
    if way == SHOAL_STEPS:
        handle, offset, shape, strides, descr = obj
        t0 = time.perf_counter_ns()
        seg = _shoal.Segment.attach(handle)
        t1 = time.perf_counter_ns()
        arr = _shoal.array_view(seg, offset, shape, strides, descr)
        t2 = time.perf_counter_ns()
        return arr, {"segment_attach": (t1 - t0) / 1e9, "view": (t2 - t1) / 1e9}
    name, shape, dtype = obj
    if way == SHM:
        shm = shared_memory.SharedMemory(name=name)
        return np.ndarray(shape, dtype, buffer=shm.buf), shm
    if way == MEMMAP:
        return np.memmap(name, dtype=dtype, mode="r", shape=shape), None
    if way == SA:
        import SharedArray

        return SharedArray.attach(name, ro=True), None
    raise ValueError(f"unknown way {way!r}")


def _sums(arr: np.ndarray) -> tuple[list[float], float]:
    times = []
    total = 0.0
    for _ in range(SUMS):
        t0 = time.perf_counter_ns()
        total = float(arr.sum())
        times.append((time.perf_counter_ns() - t0) / 1e9)
    return times, total


def _serve(conn: Connection, arr: Any = None, held: Any = None) -> None:
    """A long-lived worker: serve commands until "exit"; every reply is what it measured."""
    while True:
        cmd, *args = conn.recv()
        if cmd == "attach":  # a small pickled payload: a handle, a name
            way, payload = args
            before = proc_mem()
            t0 = time.perf_counter_ns()
            arr, held = _open(way, pickle.loads(payload))
            conn.send(
                {
                    "attach": (time.perf_counter_ns() - t0) / 1e9,
                    "before": before,
                    "steps": held if way in (SHOAL_STEPS, D_UNPICKLE) else None,
                }
            )
        elif cmd == "receive":  # the pickle way: the array itself comes next on this Pipe
            before = proc_mem()
            t0 = time.perf_counter_ns()
            arr = conn.recv()
            conn.send({"attach": (time.perf_counter_ns() - t0) / 1e9, "before": before})
        elif cmd == "sum":
            times, total = _sums(arr)
            conn.send(
                {"sums": times, "total": total, "after": proc_mem(), "shmem": machine_shmem()}
            )
        elif cmd == "release":
            arr = None
            if held is not None and hasattr(held, "close"):
                held.close()
            held = None
            gc.collect()
            conn.send(None)
        else:
            return


def _worker(conn: Connection) -> None:
    _serve(conn)


def _raw_worker(
    conn: Connection, start: tuple[int, ProcMem], raw: Any, end: int, shape: Any, dtype: str
) -> None:
    """A RawArray travels only as a Process argument: this worker starts with it, and its
    attach is the unpickling of that argument (timed by the marks around it) plus the view."""
    arr = np.frombuffer(raw, dtype).reshape(shape)
    usable = time.perf_counter_ns()
    conn.send(
        {
            "attach": (usable - start[0]) / 1e9,
            "before": start[1],
            "unpickle": (end - start[0]) / 1e9,
        }
    )
    conn.recv()  # "sum", as every worker gets next
    times, total = _sums(arr)
    conn.send({"sums": times, "total": total, "after": proc_mem(), "shmem": machine_shmem()})
    conn.recv()  # "release"
    conn.send(None)


def _joblib_task(start: tuple[int, ProcMem], arr: np.ndarray, end: int) -> dict[str, Any]:
    """Runs in a loky worker; `arr` arrives as joblib's memmap (unpickled between marks)."""
    times, total = _sums(arr)
    return {
        "arrived": start[0],
        "attach": (end - start[0]) / 1e9,
        "before": start[1],
        "sums": times,
        "total": total,
        "after": proc_mem(),
        "shmem": machine_shmem(),
        "kind": type(arr).__name__,
        "filename": str(getattr(arr, "filename", "") or ""),
    }


def _new_worker() -> Worker:
    return Worker(_worker, DEADLINE)


# --------------------------------------------------------------------------------------
# the ways, creator side


@dataclass
class _Samples:
    """What each round of one way measured (warm-up rounds included; dropped later)."""

    share: list[float] = field(default_factory=list)
    attach: list[float] = field(default_factory=list)
    cold: list[float] = field(default_factory=list)  # GB/s
    steady: list[float] = field(default_factory=list)  # GB/s
    again: list[list[float]] = field(default_factory=list)  # per round: the repeated attaches
    growth: list[ProcMem] = field(default_factory=list)  # the worker's, attach to after sums
    shmem: list[int] = field(default_factory=list)  # the machine's, while attached
    extra: dict[str, list[float]] = field(default_factory=dict)
    notes: set[str] = field(default_factory=set)


class _Bench:
    """State shared by the ways of one run."""

    def __init__(self, nbytes: int) -> None:
        rows = max(1, nbytes // (COLS * 8))
        # The data every way shares: distinct values, so a wrong page would change the sum.
        self.data = np.arange(rows * COLS, dtype=np.float64).reshape(rows, COLS)
        self.data *= 1.0 / 3.0
        self.nbytes = self.data.nbytes
        self.expect = float(self.data.sum())
        self.samples: dict[str, _Samples] = {}
        self.workers: dict[str, Worker] = {}
        self.base_shmem = 0
        self.tag = f"shoal-bench-{os.getpid()}"
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        self.libc.madvise.restype = ctypes.c_int
        # The memcpy floor copies into populated shared pages, kept for the whole run.
        self.dst_fd = os.memfd_create("shoal-bench-dst")
        os.ftruncate(self.dst_fd, self.nbytes)
        self.dst_map = mmap.mmap(self.dst_fd, self.nbytes)
        self.dst = np.frombuffer(self.dst_map, np.float64).reshape(self.data.shape)
        self.dst.fill(0.0)

    def close(self) -> None:
        for w in self.workers.values():
            w.stop()
        del self.dst
        self.dst_map.close()
        os.close(self.dst_fd)

    def rec(self, way: str) -> _Samples:
        return self.samples.setdefault(way, _Samples())

    def worker(self, way: str) -> Worker:
        if way not in self.workers:
            self.workers[way] = _new_worker()
        return self.workers[way]

    # -- the bookkeeping every way shares ---------------------------------------------

    def setup(self) -> None:
        self.base_shmem = machine_shmem()

    def teardown(self) -> None:
        """Wait (untimed) until the memory a way freed, possibly in another process (the
        broker, a resource tracker), is back: the next way must not pay for it."""
        gc.collect()
        # Until Shmem is back, or has not fallen for 0.5 s: Shmem is machine-wide, and
        # other processes on a shared machine may hold some of it for a long time. (The
        # broker frees a segment's pages in its event loop, in time that grows with the
        # segment's size, and an attach that arrives meanwhile waits behind it: the next way
        # must not.)
        end = time.monotonic() + QUIESCE
        low, low_at = machine_shmem(), time.monotonic()
        while low > self.base_shmem + SHMEM_SLACK and time.monotonic() < end:
            time.sleep(0.005)
            now = machine_shmem()
            if now < low - SHMEM_SLACK // 4:
                low, low_at = now, time.monotonic()
            elif time.monotonic() - low_at > 0.5:
                break

    def record_worker(self, way: str, att: dict[str, Any], summed: dict[str, Any]) -> None:
        s = self.rec(way)
        s.attach.append(att["attach"])
        s.cold.append(self.nbytes / GB / summed["sums"][0])
        s.steady.append(self.nbytes / GB / min(summed["sums"][1:]))
        s.growth.append(diff(summed["after"], att["before"]))
        s.shmem.append(summed["shmem"] - self.base_shmem)
        if not np.isclose(summed["total"], self.expect, rtol=1e-12, atol=0.0):
            s.notes.add(f"WRONG SUM: {summed['total']!r}, expected {self.expect!r}")

    def through_worker(self, way: str, payload: Any) -> None:
        """Send a small payload; the worker attaches (timing itself), sums, releases."""
        w = self.worker(way)
        att = w.ask("attach", way, pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL))
        if att.get("steps") is not None:  # a diagnosis: only the attach's steps
            for k, v in {"total": att["attach"], **att["steps"]}.items():
                self.rec(way).extra.setdefault(k, []).append(v)
        else:
            self.record_worker(way, att, w.ask("sum"))
        w.ask("release")

    # -- the ways ----------------------------------------------------------------------

    def way_pickle(self) -> None:
        w = self.worker(PICKLE)
        w.conn.send(("receive",))
        t0 = time.perf_counter_ns()
        w.conn.send(self.data)  # pickles, then writes; returns once the worker has read it
        self.rec(PICKLE).share.append((time.perf_counter_ns() - t0) / 1e9)
        att = w.answer("receive")
        self.record_worker(PICKLE, att, w.ask("sum"))
        w.ask("release")

    def way_shm(self) -> None:
        t0 = time.perf_counter_ns()
        shm = shared_memory.SharedMemory(create=True, size=self.nbytes)
        a = np.ndarray(self.data.shape, self.data.dtype, buffer=shm.buf)
        np.copyto(a, self.data)
        self.rec(SHM).share.append((time.perf_counter_ns() - t0) / 1e9)
        try:
            self.through_worker(SHM, (shm.name, self.data.shape, self.data.dtype.str))
        finally:
            del a
            shm.close()
            shm.unlink()

    def way_raw(self) -> None:
        t0 = time.perf_counter_ns()
        raw = mp.RawArray("d", self.data.size)  # zero-filled by ctypes.memset
        a = np.frombuffer(raw, np.float64).reshape(self.data.shape)
        np.copyto(a, self.data)
        self.rec(RAW).share.append((time.perf_counter_ns() - t0) / 1e9)
        ctx = mp.get_context("spawn")
        conn, child = ctx.Pipe()
        args = (child, _StartMark(), raw, _EndMark(), self.data.shape, self.data.dtype.str)
        proc = ctx.Process(target=_raw_worker, args=args, daemon=True)
        proc.start()
        child.close()
        try:
            if not conn.poll(DEADLINE):
                raise RuntimeError("the RawArray worker did not start")
            att = conn.recv()
            self.rec(RAW).extra.setdefault("unpickle", []).append(att["unpickle"])
            conn.send("sum")
            self.record_worker(RAW, att, conn.recv())
            conn.send("release")
            conn.recv()
        finally:
            proc.join(DEADLINE)
            conn.close()
            del a, raw

    def way_memmap(self) -> None:
        path = f"/dev/shm/{self.tag}.dat"
        t0 = time.perf_counter_ns()
        m = np.memmap(path, dtype=self.data.dtype, mode="w+", shape=self.data.shape)
        np.copyto(m, self.data)
        m.flush()
        self.rec(MEMMAP).share.append((time.perf_counter_ns() - t0) / 1e9)
        try:
            self.through_worker(MEMMAP, (path, self.data.shape, self.data.dtype.str))
        finally:
            del m
            os.unlink(path)

    def way_sharedarray(self) -> None:
        assert _sa is not None
        name = f"shm://{self.tag}-sa"
        t0 = time.perf_counter_ns()
        a = _sa.create(name, self.data.shape, self.data.dtype)
        np.copyto(a, self.data)
        self.rec(SA).share.append((time.perf_counter_ns() - t0) / 1e9)
        try:
            self.through_worker(SA, (name, self.data.shape, self.data.dtype.str))
        finally:
            del a
            _sa.delete(name)

    def way_shoal(self) -> None:
        t0 = time.perf_counter_ns()
        a = shoal.share(self.data)
        self.rec(SHOAL).share.append((time.perf_counter_ns() - t0) / 1e9)
        self.through_worker(SHOAL, a)  # pickles to a handle
        del a

    def diag_shoal_steps(self) -> None:
        """Where shoal's attach time goes. What unpickling an Array calls
        (_glue.rebuild_array), done by hand to time its two steps apart: the broker's
        Segment.attach, then building the ndarray view. The array is the same size, not
        filled (an attach maps pages, it touches none)."""
        a = shoal.zeros(self.data.shape, self.data.dtype)
        self.through_worker(SHOAL_STEPS, a.__reduce__()[1])
        del a

    def phase_again(self) -> None:
        """More attach samples: a median of five on this VM moves by tens of µs from one run
        to the next. Each way that hands a worker a small payload gets an object of the same
        size, made here and not filled (an attach touches no element page), and its own
        worker attaches it AGAIN times, the ways interleaved (no worker attaches twice in a
        row: each sleeps while the others run, as in the rounds), releasing in between."""
        shape, dt = self.data.shape, self.data.dtype
        made: list[tuple[str, Any]] = []
        keep: list[Any] = []
        shm = shared_memory.SharedMemory(create=True, size=self.nbytes)
        made.append((SHM, (shm.name, shape, dt.str)))
        path = f"/dev/shm/{self.tag}-again.dat"
        with open(path, "wb") as f:
            f.truncate(self.nbytes)
        made.append((MEMMAP, (path, shape, dt.str)))
        name = f"shm://{self.tag}-sa-again"
        if _sa is not None:
            keep.append(_sa.create(name, shape, dt))
            made.append((SA, (name, shape, dt.str)))
        # Sealed read-only, as shoal.share's: the same kind of handle, the same mapping.
        seg = _shoal.array_create(shoal._array._descr_of(dt), dt.itemsize, list(shape))
        seg.seal()
        arr = _shoal.array_view(seg)
        made.append((SHOAL, arr))
        made.append((D_UNPICKLE, self.unpickle_floor_payload()))
        payloads = [(way, pickle.dumps(p, protocol=pickle.HIGHEST_PROTOCOL)) for way, p in made]
        got: dict[str, list[float]] = {way: [] for way, _ in made}
        try:
            for k in range(AGAIN):
                for way, payload in payloads[k % len(payloads) :] + payloads[: k % len(payloads)]:
                    w = self.worker(way)
                    got[way].append(w.ask("attach", way, payload)["attach"])
                    w.ask("release")
        finally:
            del arr, keep
            shm.close()
            shm.unlink()
            os.unlink(path)
            if _sa is not None:
                _sa.delete(name)
        for way, times in got.items():
            self.rec(way).again.append(times)

    def way_joblib(self) -> None:
        assert _joblib is not None
        t0 = time.perf_counter_ns()
        out = _joblib.Parallel(n_jobs=2, max_nbytes="1M", mmap_mode="r")(
            [_joblib.delayed(_joblib_task)(_StartMark(), self.data, _EndMark())]
        )[0]
        s = self.rec(JOBLIB)
        # From the call until the worker starts unpickling the task: joblib's dispatch
        # and its dump of the array into a file (perf_counter is CLOCK_MONOTONIC, one
        # clock for every process).
        s.share.append((out["arrived"] - t0) / 1e9)
        self.record_worker(JOBLIB, out, out)
        if out["kind"] != "memmap" or not out["filename"].startswith("/dev/shm/"):
            s.notes.add(f"the worker got a {out['kind']} ({out['filename'] or 'no file'})")

    def diag_populate(self) -> None:
        """Would MAP_POPULATE at creation help? The creator's mapping pre-faulted, then
        the same copy."""
        t0 = time.perf_counter_ns()
        seg = _shoal.Segment.create(self.nbytes, populate=True)
        with memoryview(seg) as buf:
            dst = np.frombuffer(buf, np.float64, count=self.data.size)
            np.copyto(dst, self.data.reshape(-1))
            self.rec(D_POPULATE).share.append((time.perf_counter_ns() - t0) / 1e9)
            del dst
        seg.close()

    def unpickle_floor_payload(self) -> slice:
        """A slice of the same values a shoal.Array pickles to (a 163-character str, an int,
        the shape and strides tuples, the dtype text), rebuilt by a builtin (slice) as the
        Array is by shoal's: its pickle.loads attaches nothing."""
        rows = self.data.shape[0]
        return slice("h" * 163, 0, ((rows, COLS), (COLS * 8, 8), "'<f8'"))

    def diag_unpickle(self) -> None:
        """What pickle.loads costs a worker woken by the payload, with no attach."""
        self.through_worker(D_UNPICKLE, self.unpickle_floor_payload())

    def diag_pwrite(self) -> None:
        """What writing the data into the memfd with pwrite (pages allocated and filled in
        one pass: no zeroing, no page faults in the creator) would cost."""
        t0 = time.perf_counter_ns()
        fd = os.memfd_create("shoal-bench-pwrite")
        try:
            os.ftruncate(fd, self.nbytes)
            src = memoryview(self.data).cast("B")
            done = 0
            while done < self.nbytes:
                done += os.pwrite(fd, src[done : done + (1 << 30)], done)
            m = mmap.mmap(fd, self.nbytes, prot=mmap.PROT_READ)
            self.rec(D_PWRITE).share.append((time.perf_counter_ns() - t0) / 1e9)
            m.close()
        finally:
            os.close(fd)

    def way_local(self) -> None:
        times, _total = _sums(self.data)
        s = self.rec(LOCAL)
        s.cold.append(self.nbytes / GB / times[0])
        s.steady.append(self.nbytes / GB / min(times[1:]))

    # -- the floor's parts: fresh shared pages, then one memcpy --------------------------

    def _fresh(self, populate: Callable[[int, mmap.mmap], None]) -> Callable[[], None]:
        def fn() -> None:
            fd = os.memfd_create("shoal-bench-floor")
            try:
                os.ftruncate(fd, self.nbytes)
                m = mmap.mmap(fd, self.nbytes)
                populate(fd, m)
                m.close()
            finally:
                os.close(fd)

        return fn

    @staticmethod
    def _touch(fd: int, m: mmap.mmap) -> None:
        np.frombuffer(m, np.uint8)[::PAGE] = 1  # one write per page: fault it in

    def _populate(self, fd: int, m: mmap.mmap) -> None:
        anchor = ctypes.c_char.from_buffer(m)
        try:
            if self.libc.madvise(ctypes.addressof(anchor), self.nbytes, MADV_POPULATE_WRITE):
                err = ctypes.get_errno()
                raise OSError(err, f"madvise(MADV_POPULATE_WRITE): {os.strerror(err)}")
        finally:
            del anchor

    @staticmethod
    def _fallocate(fd: int, m: mmap.mmap) -> None:
        os.posix_fallocate(fd, 0, m.size())

    def memcpy(self) -> None:
        np.copyto(self.dst, self.data)

    def populate_supported(self) -> bool:
        try:
            self._fresh(self._populate)()
        except OSError:
            return False
        return True


def _ways(b: _Bench) -> list[Way]:
    def way(name: str, fn: Callable[[], object]) -> Way:
        return Way(name, fn, setup=b.setup, teardown=b.teardown)

    def floor(name: str, fn: Callable[[], object]) -> Way:
        def timed() -> None:
            t0 = time.perf_counter_ns()
            fn()
            b.rec(name).share.append((time.perf_counter_ns() - t0) / 1e9)

        return way(name, timed)

    ways = [
        way(PICKLE, b.way_pickle),
        way(SHM, b.way_shm),
        way(RAW, b.way_raw),
        way(MEMMAP, b.way_memmap),
    ]
    if _sa is not None:
        ways.append(way(SA, b.way_sharedarray))
    if _joblib is not None:
        ways.append(way(JOBLIB, b.way_joblib))
    ways += [
        way(SHOAL, b.way_shoal),
        way(SHOAL_STEPS, b.diag_shoal_steps),
        way(D_UNPICKLE, b.diag_unpickle),
        way(P_AGAIN, b.phase_again),
        way(D_POPULATE, b.diag_populate),
        way(D_PWRITE, b.diag_pwrite),
        way(LOCAL, b.way_local),
        floor(F_FAULTS, b._fresh(b._touch)),
        floor(F_FALLOCATE, b._fresh(b._fallocate)),
        floor(F_MEMCPY, b.memcpy),
    ]
    if b.populate_supported():
        ways.append(floor(F_POPULATE, b._fresh(b._populate)))
    return ways


# --------------------------------------------------------------------------------------
# indexing: what a shoal.Array costs per element or row, next to an ndarray's


INDEX_ROWS = 8192  # 64 MiB of the matrix: indexing does not depend on the array's size


def _bench_indexing(data: np.ndarray) -> Result:
    """Per-operation time of `a[i]` (a row view) and `a[i, j]` (a scalar) over every row,
    on a local ndarray and on a shoal.Array of the same rows, interleaved. Every view of a
    shoal.Array runs its __array_finalize__ (C) and stays a shoal.Array."""
    local = np.ascontiguousarray(data[:INDEX_ROWS])
    shared = shoal.share(local)
    n = local.shape[0]

    def rows(arr: np.ndarray) -> Callable[[], float]:
        def fn() -> float:
            t0 = time.perf_counter_ns()
            for i in range(n):
                arr[i]
            return (time.perf_counter_ns() - t0) / 1e9 / n

        return fn

    def scalars(arr: np.ndarray) -> Callable[[], float]:
        def fn() -> float:
            t0 = time.perf_counter_ns()
            for i in range(n):
                arr[i, 7]
            return (time.perf_counter_ns() - t0) / 1e9 / n

        return fn

    try:
        return run_side_by_side(
            [
                Way("ndarray: a[i] (a row view)", rows(local), self_timed=True),
                Way("shoal.Array: a[i] (a row view)", rows(shared), self_timed=True),
                Way("ndarray: a[i, j] (a scalar)", scalars(local), self_timed=True),
                Way("shoal.Array: a[i, j] (a scalar)", scalars(shared), self_timed=True),
            ],
            repeat=REPEAT,
            warmup=WARMUP,
        )
    finally:
        del shared


# --------------------------------------------------------------------------------------
# SIGKILL of the creator: what is left?

_KILL_WAYS = [SHM, RAW, MEMMAP, SA, JOBLIB, SHOAL]


def _joblib_hold(arr: np.ndarray, ready: str) -> None:
    """A loky task that maps the array, says where it lives, and holds it."""
    with open(ready + ".tmp", "w") as f:
        json.dump({"paths": [os.path.dirname(str(arr.filename))], "holder": os.getpid()}, f)
    os.replace(ready + ".tmp", ready)
    time.sleep(600)


def _creator(way: str, nbytes: int, ready: str) -> None:
    """Run as ``arrays.py --creator WAY BYTES READYFILE``: share, say so, wait to be killed."""
    data = np.full(nbytes // 8, 1.0)
    info: dict[str, Any] = {"paths": []}
    keep: Any = None
    tag = f"shoal-bench-kill-{os.getpid()}"
    if way == SHM:
        keep = shared_memory.SharedMemory(create=True, size=nbytes)
        np.frombuffer(keep.buf, np.float64)[:] = data
        info["paths"] = [f"/dev/shm/{keep.name}"]
    elif way == RAW:
        keep = mp.RawArray("d", data.size)
        np.frombuffer(keep, np.float64)[:] = data
    elif way == MEMMAP:
        path = f"/dev/shm/{tag}.dat"
        keep = np.memmap(path, dtype=np.float64, mode="w+", shape=data.shape)
        keep[:] = data
        keep.flush()
        info["paths"] = [path]
    elif way == SA:
        import SharedArray

        keep = SharedArray.create(f"shm://{tag}", data.shape, data.dtype)
        keep[:] = data
        info["paths"] = [f"/dev/shm/{tag}"]
    elif way == JOBLIB:
        import joblib

        # The task tells where the memmap lives (the ready file), then holds it.
        joblib.Parallel(n_jobs=2, max_nbytes="1M", mmap_mode="r")(
            [joblib.delayed(_joblib_hold)(data, ready)]
        )
        return
    elif way == SHOAL:
        keep = shoal.share(data)
        info["session"] = keep.segment.session
    del data
    info["pid"] = os.getpid()
    with open(ready + ".tmp", "w") as f:
        json.dump(info, f)
    os.replace(ready + ".tmp", ready)
    time.sleep(600)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    # Zombies of the group count as gone; only the creator (our child) can be one.
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii") as f:
                rest = f.read().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(rest[2]) == pgid and rest[0] != "Z":
            return True
    return False


def _named_after(pid: int, before: set[str]) -> list[str]:
    """New /dev/shm entries whose name carries ``pid`` (joblib's folders, loky's
    semaphores): what the process and its helpers made there, not its neighbours."""
    token = re.compile(rf"(?<![0-9]){pid}(?![0-9])")
    return sorted(f"/dev/shm/{n}" for n in set(os.listdir("/dev/shm")) - before if token.search(n))


def _bytes_in(path: str) -> int:
    """Bytes of memory a file (or a folder's files) in /dev/shm holds."""
    if os.path.isdir(path):
        return sum(_bytes_in(os.path.join(path, n)) for n in os.listdir(path))
    try:
        return os.stat(path).st_blocks * 512
    except FileNotFoundError:
        return 0


def _broker_alive(runtime: str) -> bool:
    for name in os.listdir(runtime) if os.path.isdir(runtime) else []:
        if name.endswith(".lock") and not name.startswith("."):
            try:
                with open(os.path.join(runtime, name), encoding="ascii") as f:
                    pid = int(f.read().strip() or 0)
            except (OSError, ValueError):
                continue
            if pid > 0 and os.path.exists(f"/proc/{pid}"):
                return True
    return False


@dataclass
class _Left:
    way: str
    scenario: str
    shmem_made: int = 0
    shmem_left: int = 0
    paths_left: list[tuple[str, int]] = field(default_factory=list)  # (path, bytes held)
    procs_left: list[str] = field(default_factory=list)
    settled_s: float | None = None  # when everything was gone, if it went
    shmem_after_cleanup: int = 0
    cleanup: list[str] = field(default_factory=list)
    warned: bool = False


def _kill_one(way: str, nbytes: int, whole_group: bool) -> _Left:
    left = _Left(way, "process group" if whole_group else "creator")
    work = tempfile.mkdtemp(prefix="shb-kill-", dir="/tmp")
    runtime = os.path.join(work, "rt")
    os.mkdir(runtime, 0o700)
    ready = os.path.join(work, "ready.json")
    env = {k: v for k, v in os.environ.items() if k != "SHOAL_SESSION"}
    env["SHOAL_RUNTIME_DIR"] = runtime  # its own session, to see its broker go
    base = machine_shmem()
    listing = set(os.listdir("/dev/shm"))
    err_path = os.path.join(work, "stderr")
    with open(err_path, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--creator", way, str(nbytes), ready],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )
    info: dict[str, Any] = {}
    try:
        end = time.monotonic() + DEADLINE
        while not os.path.exists(ready):
            if proc.poll() is not None or time.monotonic() > end:
                with open(err_path, encoding="utf-8", errors="replace") as f:
                    raise RuntimeError(f"the {way} creator did not start: {f.read()[-2000:]}")
            time.sleep(0.01)
        with open(ready, encoding="utf-8") as f:
            info = json.load(f)
        paths: list[str] = info["paths"]
        # What it shares, precisely (machine Shmem is noisy on a shared machine): its files'
        # pages, or the shared pages mapped by it (and by joblib's worker).
        mapped = 0
        for pid in [proc.pid, *([info["holder"]] if "holder" in info else [])]:
            with contextlib.suppress(ProcessLookupError):
                mapped += proc_mem(pid).pss_shmem
        left.shmem_made = max(sum(_bytes_in(p) for p in paths), mapped)

        def leftovers() -> list[str]:
            found = [p for p in paths if os.path.exists(p)]
            return found + [p for p in _named_after(proc.pid, listing) if p not in found]

        if whole_group:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(DEADLINE)
        t0 = time.monotonic()

        def gone() -> bool:
            return (
                machine_shmem() - base <= SHMEM_SLACK
                and not leftovers()
                and not _group_alive(proc.pid)
                and not _broker_alive(runtime)
            )

        while not gone() and time.monotonic() - t0 < SETTLE:
            time.sleep(0.005)
        if gone():
            left.settled_s = time.monotonic() - t0
        left.shmem_left = machine_shmem() - base
        left.paths_left = [(p, _bytes_in(p)) for p in leftovers()]
        if _group_alive(proc.pid):
            left.procs_left.append("processes of its group (helpers, workers)")
        if _broker_alive(runtime):
            left.procs_left.append("shoal broker")
    finally:
        # Clean up by hand what is left: the group's processes, then the files.
        if left.procs_left and "shoal broker" not in left.procs_left:
            left.cleanup.append("kill its process group")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
        proc.wait(DEADLINE)
        end = time.monotonic() + DEADLINE
        while _group_alive(proc.pid) and time.monotonic() < end:
            time.sleep(0.005)
        stale = [p for p in info.get("paths", []) if os.path.exists(p)] if info else []
        stale += [p for p in _named_after(proc.pid, listing) if p not in stale]
        for p in stale:
            if os.path.isdir(p):
                shutil.rmtree(p, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(p)
        if stale:
            left.cleanup.append(f"rm {len(stale)} /dev/shm entr{'y' if len(stale) == 1 else 'ies'}")
        while _broker_alive(runtime) and time.monotonic() < end:
            time.sleep(0.005)
        while machine_shmem() - base > SHMEM_SLACK and time.monotonic() < end:
            time.sleep(0.01)
        left.shmem_after_cleanup = machine_shmem() - base
        with open(err_path, encoding="utf-8", errors="replace") as f:
            left.warned = "leaked" in f.read()
        shutil.rmtree(work, ignore_errors=True)
    return left


def _bench_kills(nbytes: int) -> list[_Left]:
    results = []
    for whole_group in (False, True):
        for way in _KILL_WAYS:
            if (way == SA and _sa is None) or (way == JOBLIB and _joblib is None):
                continue
            results.append(_kill_one(way, nbytes, whole_group))
    return results


# --------------------------------------------------------------------------------------
# the report


def _median_mem(values: list[ProcMem]) -> ProcMem:
    return ProcMem(
        **{
            f.name: round(statistics.median(getattr(v, f.name) for v in values))
            for f in fields(ProcMem)
        }
    )


def _result(
    per_way: dict[str, list[float]], baseline: str, floor: str | None = None, unit: str = "s"
) -> Result:
    kept = {k: v[WARMUP:] for k, v in per_way.items() if len(v) > WARMUP}
    return Result(kept, baseline=baseline, floor=floor, unit=unit)


def _short(path: str, keep: int = 32) -> str:
    name = os.path.basename(path)
    return name if len(name) <= keep else name[: keep - 1] + "…"


def _verdict(ok: bool) -> str:
    return "**met**" if ok else "**missed**"


def _why(
    share: Result,
    steps: Result,
    every: Result,
    s: dict[str, _Samples],
    fresh: list[str],
    t_share: float,
) -> list[str]:
    """Where shoal's time goes, in this run's figures."""
    d = fmt_duration
    won = [min(fresh, key=lambda n: s[n].share[i]) for i in range(WARMUP, len(s[F_MEMCPY].share))]
    floor_by = ", ".join(f"{n.split(': ')[1]} {won.count(n)}x" for n in fresh if won.count(n))
    out = [
        (
            f"**Where shoal's share time goes** ({d(share.median(SHOAL))}, "
            f"{t_share:.2f}x the floor; the floor's fresh pages came from: {floor_by}): "
            "`shoal.share` writes a contiguous array into its memfd with `pwrite` (the kernel "
            "allocates each page and copies into it in one pass: no zeroing, no page fault; a "
            "shortage of memory is reported at creation, by the write), fallocates only the "
            "holes, and seals the segment before anyone maps it. For comparison, in this run: "
            f"fallocate alone {d(share.median(F_FALLOCATE))}, memcpy into mapped pages "
            f"{d(share.median(F_MEMCPY))}; the old way, fallocate then copy through a "
            f"pre-faulted mapping (`MAP_POPULATE`): {d(share.median(D_POPULATE))}, "
            f"{share.ratio(D_POPULATE, FLOOR):.2f}x the floor; a bare memfd + `pwrite`: "
            f"{d(share.median(D_PWRITE))}, {share.ratio(D_PWRITE, FLOOR):.2f}x the floor."
        ),
    ]
    seg = STEP_NAMES["segment_attach"]
    view = STEP_NAMES["view"]
    out += [
        "",
        f"**Where shoal's attach time goes** ({d(every.median(SHOAL))}, the median of every "
        f"attach through pickle): `pickle.loads` alone, of a payload of the same shape that "
        f"attaches nothing, costs {d(every.median(D_UNPICKLE))} (every sample, in a worker of "
        "its own). In the steps timed apart: `Segment.attach` "
        f"{d(steps.median(seg))} (a worker already connected to the broker takes the memfd "
        "from the handle's hint with `pidfd_getfd`, reads and checks its header (object id) "
        "with `pread`, maps it (read-only as the handle says) without touching it, and records "
        "the hold in the ring it shares with the broker: no message, no round trip), then the "
        f"ndarray view, built in C++, {d(steps.median(view))}. Every step runs cold, in a "
        "process that was asleep until the payload came: on this VM a cold system call costs "
        "tens of microseconds. Over every attach, "
        f"`shared_memory` (which asks nobody) took {d(every.median(SHM))}"
        + (
            f"; SharedArray {d(every.median(SA))} (its worker unpickles a name, then C: open "
            "by name, fstat, mmap, close; no handle to check, no holder to record)"
            if SA in s
            else ""
        )
        + ".",
    ]
    return out


def run(quick: bool) -> str:
    """Run every measurement; return the markdown section."""
    nbytes = SIZE_QUICK if quick else size_from_env(SIZE_ENV, SIZE_DEFAULT, minimum=COLS * 8)
    started = time.monotonic()
    b = _Bench(nbytes)
    try:
        run_side_by_side(_ways(b), repeat=REPEAT, warmup=WARMUP, baseline=PICKLE)
    finally:
        b.close()
        if _joblib is not None:  # stop loky's workers now, not at exit
            from joblib.externals.loky import get_reusable_executor

            get_reusable_executor().shutdown(wait=True)
    indexing = _bench_indexing(b.data)
    kills = _bench_kills(max(64 << 20, min(b.nbytes, KILL_SIZE_MAX)))
    elapsed = time.monotonic() - started
    size = fmt_bytes(b.nbytes)
    s = b.samples
    sharing = [n for n in s if s[n].attach]  # the ways that hand the array to a worker

    # The floor, round by round: the cheapest fresh shared pages, plus one memcpy.
    fresh = [n for n in (F_FAULTS, F_POPULATE, F_FALLOCATE) if n in s]
    floor = [
        min(s[n].share[i] for n in fresh) + s[F_MEMCPY].share[i]
        for i in range(len(s[F_MEMCPY].share))
    ]
    share = {n: s[n].share for n in sharing}
    share |= {n: s[n].share for n in [D_POPULATE, D_PWRITE, *fresh, F_MEMCPY]}
    share[FLOOR] = floor
    share_res = _result(share, baseline=SHM, floor=FLOOR)
    attach_res = _result({n: s[n].attach for n in sharing}, baseline=SHM)
    # The repeated attaches, warm-up round dropped; the targets judge every attach sample.
    again = {n: [t for r in s[n].again[WARMUP:] for t in r] for n in s if s[n].again}
    again_res = Result(again, baseline=SHM)
    every = {n: s[n].attach[WARMUP:] + again.get(n, []) for n in sharing if n in again}
    every[D_UNPICKLE] = s[D_UNPICKLE].extra["total"][WARMUP:] + again.get(D_UNPICKLE, [])
    every_res = Result(every, baseline=SHM)
    steps = {STEP_NAMES[k]: v for k, v in s[SHOAL_STEPS].extra.items()}
    steps |= {f"{RAW}: unpickling the argument": v for v in s[RAW].extra.values()}
    steps[D_UNPICKLE] = s[D_UNPICKLE].extra["total"]
    steps_res = _result(
        {SHM: s[SHM].attach, SA: s[SA].attach, SHOAL: s[SHOAL].attach, **steps}
        if SA in s
        else {SHM: s[SHM].attach, SHOAL: s[SHOAL].attach, **steps},
        baseline=SHM,
    )
    cold_res = _result({n: s[n].cold for n in [*sharing, LOCAL]}, baseline=LOCAL, unit="GB/s")
    steady_res = _result({n: s[n].steady for n in [*sharing, LOCAL]}, baseline=LOCAL, unit="GB/s")

    growth = {n: _median_mem(s[n].growth[WARMUP:]) for n in sharing}
    copy_rows = []
    copies: dict[str, float] = {}
    for n in sharing:
        shm_med = statistics.median(s[n].shmem[WARMUP:])
        anon = growth[n].anonymous
        copies[n] = (max(shm_med, 0) + max(anon, 0)) / b.nbytes
        copy_rows.append(
            f"| {n} | {fmt_bytes(round(shm_med))} | {fmt_bytes(anon)} | {copies[n]:.2f} | "
            f"{max(anon, 0) / b.nbytes:.2f} |"
        )

    # Targets (from the issue), judged on medians.
    t_share = share_res.ratio(SHOAL, FLOOR)
    t_attach = every_res.median(SHOAL)
    t_attach_ratio = every_res.ratio(SHOAL, SHM)
    n_attach = len(every_res.samples[SHOAL])
    t_steady = steady_res.ratio(SHOAL, LOCAL)
    shoal_kills = [k for k in kills if k.way == SHOAL]
    nothing_left = all(k.settled_s is not None for k in shoal_kills)
    anon_limit = max(b.nbytes // 100, 2 << 20)
    one_copy = (
        abs(statistics.median(s[SHOAL].shmem[WARMUP:]) - b.nbytes) <= SHMEM_SLACK
        and growth[SHOAL].anonymous <= anon_limit
    )
    targets = [
        ("sharing within 1.3x of the floor", f"{t_share:.2f}x", t_share <= 1.3),
        (
            f"attach < 100 µs median at {size} (all {n_attach} attaches)",
            fmt_duration(t_attach),
            t_attach < 100e-6,
        ),
        (
            f"attach within 2x of shared_memory's (all {n_attach} attaches)",
            f"{t_attach_ratio:.2f}x",
            t_attach_ratio <= 2,
        ),
        (
            "steady-state sum throughput equal to a local ndarray's (>= 0.9x)",
            f"{t_steady:.2f}x",
            t_steady >= 0.9,
        ),
        (
            (
                "one copy in total (Shmem + one copy, worker's Anonymous growth <= "
                f"{fmt_bytes(anon_limit)})"
            ),
            f"{copies[SHOAL]:.2f} copies",
            one_copy,
        ),
        (
            "nothing left after a SIGKILL of the creator (or of its process group)",
            ", ".join(
                f"{k.scenario}: " + ("nothing" if k.settled_s is not None else "LEFT")
                for k in shoal_kills
            ),
            nothing_left,
        ),
    ]
    missed = [t for t in targets if not t[2]]

    notes = [f"- {n}: {note}" for n in s for note in sorted(s[n].notes)]
    kill_rows = []
    for k in kills:
        if k.settled_s is not None:
            what = f"nothing (all gone {fmt_duration(k.settled_s)} after the kill)"
        else:
            bits = [f"machine Shmem {fmt_bytes(k.shmem_left)}"]
            big = sorted(k.paths_left, key=lambda pn: -pn[1])
            bits += [f"`{_short(p)}` ({fmt_bytes(n)})" for p, n in big[:2]]
            if len(big) > 2:
                rest = sum(n for _, n in big[2:])
                bits.append(f"{len(big) - 2} more /dev/shm entries ({fmt_bytes(rest)})")
            bits += k.procs_left
            what = ", ".join(bits) + f" ({SETTLE:g} s after the kill)"
        cleanup = ", ".join(k.cleanup) or "none"
        kill_rows.append(
            f"| {k.way} | {k.scenario} | {fmt_bytes(k.shmem_made)} | {what} | "
            f"{cleanup} | {fmt_bytes(k.shmem_after_cleanup)} |"
            + (" tracker warned of a leak |" if k.warned else " |")
        )

    parts = [
        (
            f"A float64 matrix of {size} ({b.data.shape[0]} x {COLS}) in this process is shared "
            "with one long-lived worker process (spawn) per way, which attaches, sums it "
            f"{SUMS} times and releases it, every round; {REPEAT} rounds (after {WARMUP} "
            "warm-up), the ways interleaved, each round starting at another way."
        ),
        "",
        (
            f"- **{PICKLE}**: `conn.send(array)`; share = the sender's `send` (pickle, write; "
            "returns once the worker has read all), attach = the worker's `recv` from the moment "
            "it was told the array is coming (so the two overlap)."
        ),
        (
            f"- **{SHM}**: `SharedMemory(create=True)`, `np.ndarray(buffer=shm.buf)`, copy; the "
            "worker gets the name and attaches with `SharedMemory(name)` (on Python < 3.13 that "
            "also registers the name with the resource tracker)."
        ),
        (
            f"- **{RAW}**: `multiprocessing.RawArray('d', n)` (zero-filled), `np.frombuffer`, "
            "copy. A RawArray can only travel as a Process argument, so its worker is a new "
            "spawn process every round; its attach is the unpickling of that argument (timed "
            "between two marks unpickled around it) plus `np.frombuffer`."
        ),
        (
            f"- **{MEMMAP}**: `np.memmap(path, mode='w+')` in /dev/shm, copy, `flush()`; the "
            "worker opens it `mode='r'`."
        ),
        f"- **{SA}**: `SharedArray.create('shm://...')`, copy; the worker "
        "`SharedArray.attach(name, ro=True)`."
        + ("" if _sa is not None else " **Not installed: skipped.**"),
        f"- **{JOBLIB}**: `Parallel(n_jobs=2, max_nbytes='1M', mmap_mode='r')` with one "
        "task taking the array: joblib dumps it to a file in /dev/shm and the loky worker "
        "maps it. Share = from the call until the worker starts unpickling the task (one "
        "monotonic clock); attach = the unpickling of the array argument (between two "
        "marks)." + ("" if _joblib is not None else " **Not installed: skipped.**"),
        (
            f"- **{SHOAL}**: `shoal.share(array)` (a sealed, read-only snapshot); the worker "
            "unpickles the `shoal.Array` (a handle)."
        ),
        (
            "- Diagnoses (in the same rounds): **shoal attach, steps timed apart**: a "
            "`shoal.zeros` array of the same size whose worker calls what unpickling calls by "
            "hand, to time the broker's `Segment.attach` and the building of the ndarray view "
            f"apart; **{D_POPULATE}**: would pre-faulting the creator's mapping "
            f"(`MAP_POPULATE`) help the fill?; **{D_PWRITE}**: a memfd filled with `pwrite` "
            "(the kernel allocates each page and copies into it in one pass: no zeroing, no "
            f"page faults), then mapped; **{D_UNPICKLE}**: a worker of its own unpickles a "
            "`slice` of the same values a `shoal.Array` pickles to (the handle-sized str, "
            "offset, shape, strides, dtype text), which a builtin rebuilds as shoal's does: "
            "what `pickle.loads` alone costs a worker woken by the payload."
        ),
        (
            f"- **{P_AGAIN}** (one more step of every round): {SHM}, {MEMMAP}, {SA} and shoal "
            f"each make an object of {size} (not filled: an attach touches no element page; "
            "shoal's sealed read-only, as `shoal.share`'s is), and each way's own worker "
            f"attaches it {AGAIN} times, the ways interleaved, releasing it in between; the "
            "`pickle.loads` floor's worker takes its payload as often. A median of five first "
            "attaches moves by tens of µs from run to run on this VM, so the attach targets "
            f"judge every attach: the {REPEAT} of the rounds and these."
        ),
        (
            f"- **Floor**: per round, the fastest of three ways to get {size} of fresh shared "
            "pages (a memfd: one write per page, `madvise(MADV_POPULATE_WRITE)`, or "
            "`fallocate`, which allocates and zeroes the pages without mapping them), plus one "
            "memcpy of the data into already-populated shared pages."
        ),
        "",
        share_res.to_markdown(f"time to share {size} (create + fill, in the creator)"),
        attach_res.to_markdown(
            f"time for a worker to attach {size} (handle to usable ndarray, timed in the worker)"
        ),
        again_res.to_markdown(
            f"{P_AGAIN}: time for a worker to attach {size}, {AGAIN} times per round, the ways "
            f"interleaved ({REPEAT} rounds)"
        ),
        every_res.to_markdown(
            f"every attach of {size}: the two tables above together (the targets' samples)"
        ),
    ]
    parts.append(
        steps_res.to_markdown(
            f"attach, broken down (timed in the worker; {SHOAL_STEPS}: a separate array of "
            "the same size, attached by calling what unpickling calls)"
        )
    )
    parts += [
        cold_res.to_markdown(
            f"worker's first sum() of {size} after attaching, GB/s (higher is better)",
        ),
        steady_res.to_markdown(
            f"worker's steady-state sum() of {size}, GB/s (fastest of passes 2-{SUMS}; "
            "higher is better)",
        ),
        indexing.to_markdown(
            f"indexing, per operation, over the {INDEX_ROWS} rows of a 64 MiB matrix (in the "
            "creator; a shoal.Array's row is a view that stays a shoal.Array)"
        ),
        (
            "**Worker memory growth** (median over rounds, from before the attach to after the "
            "sums, still attached). The creator maps the pages too (except joblib's, which "
            "writes a file), so PSS splits them; USS counts a shared page as private once only "
            "one process maps it:"
        ),
        "",
        memory_table({f"{n} worker": growth[n] for n in sharing}),
        (
            f"**Copies** of the {size} (medians): Shmem growth of the machine while the worker "
            "is attached, the worker's private (Anonymous) growth, and the copies they make; "
            "every further worker adds its private growth again:"
        ),
        "",
        (
            "| way | machine Shmem | worker Anonymous | copies with one worker | each further "
            "worker adds |"
        ),
        "| --- | ---: | ---: | ---: | ---: |",
        *copy_rows,
        "",
        (
            "**SIGKILL of the creator.** A creator process (its own session and process group) "
            f"shares {fmt_bytes(kills[0].shmem_made) if kills else '?'} and holds it (no reader, "
            "except joblib's loky worker that maps it); it is SIGKILLed, alone or with its whole "
            f"process group (its resource tracker, loky's workers; shoal's broker runs in a group "
            f"of its own). What is left after {SETTLE:g} s, and what cleaning up took:"
        ),
        "",
        (
            "| way | killed | shared (its files or mapped pages) | left | cleanup by hand | "
            "machine Shmem after "
            "cleanup | |"
        ),
        "| --- | --- | ---: | --- | --- | ---: | --- |",
        *kill_rows,
        "",
        "**Targets for shoal** (medians of this run):",
        "",
        "| target | measured | |",
        "| --- | ---: | --- |",
        *(f"| {t} | {m} | {_verdict(ok)} |" for t, m, ok in targets),
        "",
    ]
    if missed:
        parts.append("shoal misses: " + "; ".join(t for t, _, _ in missed) + ".")
    parts += ["", *_why(share_res, steps_res, every_res, s, fresh, t_share)]
    if notes:
        parts += ["", "Problems seen:", *notes]
    parts += [
        "",
        f"Whole script: {fmt_duration(elapsed)}" + (" (`--quick`)." if quick else "."),
    ]
    return section("Arrays: sharing a large read-only ndarray (seed 003)", "\n".join(parts))


def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="64 MiB instead of 1 GiB")
    parser.add_argument(
        "--creator", nargs=3, metavar=("WAY", "BYTES", "READY"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.creator:
        way, nbytes, ready = args.creator
        _creator(way, int(nbytes), ready)
        return
    print(run(args.quick))


if __name__ == "__main__":
    _main()
