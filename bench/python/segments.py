"""Shared-memory segments: shoal vs multiprocessing.shared_memory, side by side.

Measures, in one run, interleaved, with medians and spreads over >= 5 repetitions:

1. the life of one segment, for 4 KiB and for a large size (1 GiB; ``--quick``: 64 MiB;
   size knob: ``SHOAL_BENCH_SEGMENT_BYTES`` or ``SHOAL_BENCH_SCALE``): create it with
   every page reserved, send its handle (shoal) or name (stdlib) over a Pipe to a
   long-lived worker process, which attaches and times the attach itself, then release
   it in the worker and in the creator. A floor (an anonymous shared mapping populated
   by the kernel, ``MAP_SHARED | MAP_POPULATE``) bounds the creation;
2. the broker's start-up: the first create in a fresh process with a fresh runtime
   directory vs the second create (and the stdlib's first create, which starts
   multiprocessing's resource tracker, vs its second);
3. how soon the references of a SIGKILLed process are dropped by the broker (polling
   its description), next to how soon ``waitpid`` sees the death (the floor);
4. the memory of a process that reads a whole large segment, shoal vs stdlib, and the
   machine's Shmem.

Run ``python bench/python/segments.py [--quick]`` to print the section; ``shoal bench``
calls ``run(quick)``.
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing import shared_memory
from multiprocessing.connection import Connection
from typing import Any

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

SMALL = 4096
LARGE_DEFAULT = 1 << 30
LARGE_QUICK = 64 << 20
SIZE_ENV = "SHOAL_BENCH_SEGMENT_BYTES"
REPEAT = 5
WARMUP = 1
PAGE = mmap.PAGESIZE
DEADLINE = 60.0  # seconds; something that must happen "soon" and did not is an error

FLOOR = "anonymous shared mmap, populated (floor)"
STDLIB_TOUCH = "shared_memory + touch every page"
STDLIB_FALLOCATE = "shared_memory + posix_fallocate"
SHOAL = "shoal create"
SHOAL_POPULATE = "shoal create(populate=True)"


# --------------------------------------------------------------------------------------
# the worker: a long-lived process that attaches, reads and releases, timing itself


def _worker(conn: Connection) -> None:
    """Serve commands until "exit"; every reply is what the command measured."""
    held: Any = None
    view: memoryview | None = None
    while True:
        cmd, *args = conn.recv()
        if cmd == "attach":
            # warm: a small segment of the same kind to attach and release first, so
            # the timed attach runs with its code path and the process already awake.
            kind, ref, warm = args
            if warm:
                _attach(kind, warm).close()
            start = time.perf_counter_ns()
            held = _attach(kind, ref)
            conn.send((time.perf_counter_ns() - start) / 1e9)
        elif cmd == "read":
            # Attach and read every byte; report this process's memory before and after.
            kind, ref = args
            before = proc_mem()
            held = _attach(kind, ref)
            view = memoryview(held) if kind == "shoal" else held.buf
            crc = zlib.crc32(view)
            conn.send((before, proc_mem(), crc))
        elif cmd == "close":
            if view is not None:
                view.release()
                view = None
            start = time.perf_counter_ns()
            held.close()
            conn.send((time.perf_counter_ns() - start) / 1e9)
            held = None
        else:
            return


def _attach(kind: str, ref: str) -> Any:
    return _shoal.Segment.attach(ref) if kind == "shoal" else _attach_stdlib(ref)


def _attach_stdlib(name: str) -> shared_memory.SharedMemory:
    # The stdlib's default. Before 3.13 it also registers the name with the resource
    # tracker (a write to a pipe), which this spawned worker shares with its parent.
    return shared_memory.SharedMemory(name=name)


# --------------------------------------------------------------------------------------
# 1. the life of a segment


@dataclass
class _Kind:
    """One way of making a segment: create -> (object, ref for the worker), release."""

    name: str
    shares: str  # "shoal", "stdlib" or "" (the floor: nothing to attach)
    create: Callable[[int], tuple[Any, str]]
    release: Callable[[Any], None]


def _stdlib_touch(size: int) -> tuple[Any, str]:
    shm = shared_memory.SharedMemory(create=True, size=size)
    # Write one byte per page: the kernel allocates and maps every page (what shoal's
    # populate=True gets from fallocate + MAP_POPULATE).
    assert shm.buf is not None
    view = shm.buf[::PAGE]
    view[:] = b"\1" * len(view)
    view.release()
    return shm, shm.name


def _stdlib_fallocate(size: int) -> tuple[Any, str]:
    shm = shared_memory.SharedMemory(create=True, size=size)
    # The reservation shoal makes: every page allocated, none mapped in this process yet.
    os.posix_fallocate(shm._fd, 0, size)  # type: ignore[attr-defined]
    return shm, shm.name


def _stdlib_release(shm: Any) -> None:
    shm.close()
    shm.unlink()


def _shoal_create(populate: bool) -> Callable[[int], tuple[Any, str]]:
    def create(size: int) -> tuple[Any, str]:
        seg = _shoal.Segment.create(size, populate=populate)
        return seg, ""

    return create


def _floor_create(size: int) -> tuple[Any, str]:
    return mmap.mmap(-1, size, flags=mmap.MAP_SHARED | mmap.MAP_POPULATE), ""


KINDS: list[_Kind] = [
    _Kind(STDLIB_TOUCH, "stdlib", _stdlib_touch, _stdlib_release),
    _Kind(STDLIB_FALLOCATE, "stdlib", _stdlib_fallocate, _stdlib_release),
    _Kind(SHOAL, "shoal", _shoal_create(False), lambda s: s.close()),
    _Kind(SHOAL_POPULATE, "shoal", _shoal_create(True), lambda s: s.close()),
    _Kind(FLOOR, "", _floor_create, lambda m: m.close()),
]

PHASES = {
    "create": "create, pages reserved (in this process)",
    "attach": "attach in another process (timed there), the first thing it does on waking",
    "attach_warm": "attach in another process, warm (just after attaching another 4 KiB one)",
    "reader_release": "release in the other process (timed there)",
    "creator_release": "release in the creator (stdlib: close + unlink; floor: munmap)",
    "cycle": "whole life seen from the creator: create, send, attach, both releases",
}


def _wait_freed(session: str, object_id: str) -> None:
    """Wait (untimed) until the broker has let go of an object: it frees the pages in
    its own process after the last release, and the next way must not pay for that.
    (The stdlib's unlink() and munmap() free synchronously, on the caller's clock.)"""
    end = time.monotonic() + DEADLINE
    while time.monotonic() < end:
        listed = [
            o["id"]
            for s in _shoal.list_sessions()
            if s["id"] == session and s["describe_json"]
            for o in json.loads(s["describe_json"])["objects"]
        ]
        if object_id not in listed:
            return
        time.sleep(0.001)
    raise RuntimeError(f"the broker still holds object {object_id} after {DEADLINE} s")


class _WarmRefs:
    """Small segments the worker attaches just before a warm timed attach."""

    def __init__(self) -> None:
        self.seg = _shoal.Segment.create(SMALL)
        self.shm = shared_memory.SharedMemory(create=True, size=SMALL)

    def ref(self, kind: str) -> str:
        return self.seg.handle() if kind == "shoal" else self.shm.name

    def close(self) -> None:
        self.seg.close()
        self.shm.close()
        self.shm.unlink()


def _bench_lifecycle(size: int, worker: Worker, warm: _WarmRefs) -> dict[str, Result]:
    samples: dict[str, dict[str, list[float]]] = {p: {} for p in PHASES}

    def record(phase: str, way: str, value: float) -> None:
        samples[phase].setdefault(way, []).append(value)

    def make_way(kind: _Kind) -> Way:
        held: list[tuple[str, str]] = []  # (session, id) of a shoal segment to wait for

        def fn() -> None:
            t0 = time.perf_counter_ns()
            obj, ref = kind.create(size)
            t1 = time.perf_counter_ns()
            record("create", kind.name, (t1 - t0) / 1e9)
            aside = 0
            if kind.shares:
                if kind.shares == "shoal":
                    held.append((obj.session, obj.id))
                    ref = obj.handle()  # what pickling a segment sends
                record("attach", kind.name, worker.ask("attach", kind.shares, ref, ""))
                record("reader_release", kind.name, worker.ask("close"))
                # Not part of the life: attach once more, warm (see PHASES).
                t_aside = time.perf_counter_ns()
                if kind.shares == "shoal":
                    ref = obj.handle()
                record(
                    "attach_warm",
                    kind.name,
                    worker.ask("attach", kind.shares, ref, warm.ref(kind.shares)),
                )
                worker.ask("close")
                aside = time.perf_counter_ns() - t_aside
            t2 = time.perf_counter_ns()
            kind.release(obj)
            t3 = time.perf_counter_ns()
            record("creator_release", kind.name, (t3 - t2) / 1e9)
            if kind.shares:
                record("cycle", kind.name, (t3 - t0 - aside) / 1e9)

        def teardown() -> None:
            while held:
                _wait_freed(*held.pop())

        return Way(kind.name, fn, teardown=teardown)

    run_side_by_side(
        [make_way(k) for k in KINDS], repeat=REPEAT, warmup=WARMUP, baseline=STDLIB_TOUCH
    )
    results: dict[str, Result] = {}
    for phase, per_way in samples.items():
        kept = {name: values[WARMUP:] for name, values in per_way.items()}
        floor = FLOOR if FLOOR in kept else None
        results[phase] = Result(kept, baseline=STDLIB_TOUCH, floor=floor)
    return results


# --------------------------------------------------------------------------------------
# 2. broker start-up

_STARTUP_CHILD = """\
import json, sys, time
if sys.argv[1] == "shoal":
    from shoal import _shoal
    make = lambda: _shoal.Segment.create(4096)
    done = lambda s: s.close()
else:
    from multiprocessing import shared_memory
    make = lambda: shared_memory.SharedMemory(create=True, size=4096)
    done = lambda s: (s.close(), s.unlink())
t0 = time.perf_counter_ns(); a = make()
t1 = time.perf_counter_ns(); b = make()
t2 = time.perf_counter_ns()
done(a); done(b)
print(json.dumps([(t1 - t0) / 1e9, (t2 - t1) / 1e9]))
"""


def _startup_once(kind: str) -> tuple[float, float]:
    """First and second 4 KiB create in a fresh interpreter with a fresh runtime dir."""
    rt = tempfile.mkdtemp(prefix="shb-", dir="/tmp")
    env = {k: v for k, v in os.environ.items() if k != "SHOAL_SESSION"}
    env["SHOAL_RUNTIME_DIR"] = rt
    try:
        out = subprocess.run(
            [sys.executable, "-c", _STARTUP_CHILD, kind],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=DEADLINE,
        ).stdout
        first, second = json.loads(out)
        # The child's broker exits once the child is gone; wait so it costs nobody else.
        end = time.monotonic() + DEADLINE
        while any(n.endswith(".lock") for n in os.listdir(rt)) and time.monotonic() < end:
            time.sleep(0.002)
        return float(first), float(second)
    finally:
        shutil.rmtree(rt, ignore_errors=True)


def _bench_startup() -> Result:
    seconds: dict[str, list[float]] = {}

    def way(kind: str, first: str, second: str) -> Way:
        def fn() -> float:
            a, b = _startup_once(kind)
            seconds.setdefault(first, []).append(a)
            seconds.setdefault(second, []).append(b)
            return a

        return Way(first, fn, self_timed=True)

    shoal_first = "shoal: first create (starts the broker)"
    stdlib_first = "shared_memory: first create (starts the resource tracker)"
    run_side_by_side(
        [
            way("shoal", shoal_first, "shoal: second create"),
            way("stdlib", stdlib_first, "shared_memory: second create"),
        ],
        repeat=REPEAT,
        warmup=WARMUP,
    )
    kept = {name: values[WARMUP:] for name, values in seconds.items()}
    return Result(kept, baseline=stdlib_first)


# --------------------------------------------------------------------------------------
# 3. references of a killed process

_HOLDER_CHILD = """\
import sys
from shoal import _shoal
seg = _shoal.Segment.attach(sys.argv[1])
print("ready", flush=True)
sys.stdin.read()
"""


def _holders(session: str, object_id: str) -> list[int]:
    for s in _shoal.list_sessions():
        if s["id"] == session and s["describe_json"]:
            for o in json.loads(s["describe_json"])["objects"]:
                if o["id"] == object_id:
                    return list(o["holders"])
    raise RuntimeError(f"object {object_id} is not in the broker's description")


def _bench_ref_drop() -> tuple[Result, float, float]:
    seg = _shoal.Segment.create(SMALL)
    polls: list[int] = []
    poll_seconds: list[float] = []
    state: dict[str, Any] = {}

    def setup() -> None:
        child = subprocess.Popen(
            [sys.executable, "-c", _HOLDER_CHILD, seg.handle()],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert child.stdout is not None
        if child.stdout.readline().strip() != b"ready":
            raise RuntimeError("the holder child did not start")
        if child.pid not in _holders(seg.session, seg.id):
            raise RuntimeError("the broker does not list the holder child")
        state["child"] = child

    def teardown() -> None:
        child = state.pop("child")
        child.kill()
        child.wait(DEADLINE)
        for stream in (child.stdin, child.stdout):
            stream.close()

    def kill_and_reap() -> None:
        child = state["child"]
        os.kill(child.pid, signal.SIGKILL)
        os.waitpid(child.pid, 0)
        child.returncode = -signal.SIGKILL

    def kill_and_poll_broker() -> None:
        child = state["child"]
        os.kill(child.pid, signal.SIGKILL)
        n = 0
        end = time.monotonic() + DEADLINE
        while True:
            start = time.perf_counter_ns()
            holders = _holders(seg.session, seg.id)
            poll_seconds.append((time.perf_counter_ns() - start) / 1e9)
            n += 1
            if child.pid not in holders:
                break
            if time.monotonic() > end:
                raise RuntimeError("the broker kept a dead process's reference")
        polls.append(n)

    reaped = "floor: SIGKILL until waitpid returns"
    dropped = "shoal: SIGKILL until the broker has dropped its references"
    result = run_side_by_side(
        [
            Way(reaped, kill_and_reap, setup=setup, teardown=teardown),
            Way(dropped, kill_and_poll_broker, setup=setup, teardown=teardown),
        ],
        repeat=REPEAT,
        warmup=WARMUP,
        baseline=reaped,
    )
    seg.close()
    return result, statistics.median(polls), statistics.median(poll_seconds)


# --------------------------------------------------------------------------------------
# 4. memory of a reader


def _bench_memory(size: int, worker: Worker) -> tuple[dict[str, ProcMem], list[list[str]]]:
    rows: dict[str, ProcMem] = {}
    shmem: list[list[str]] = []
    by_name = {k.name: k for k in KINDS}
    for label, kind in (
        ("shoal", by_name[SHOAL_POPULATE]),
        ("shared_memory", by_name[STDLIB_TOUCH]),
    ):
        base = machine_shmem()
        obj, ref = kind.create(size)
        created = machine_shmem()
        ident = (obj.session, obj.id) if kind.shares == "shoal" else None
        if kind.shares == "shoal":
            ref = obj.handle()
        before, after, _crc = worker.ask("read", kind.shares, ref)
        read = machine_shmem()
        rows[f"{label} reader: growth while it attached and read all {fmt_bytes(size)}"] = diff(
            after, before
        )
        rows[f"{label} reader: total after reading"] = after
        worker.ask("close")
        kind.release(obj)
        if ident is not None:
            _wait_freed(*ident)
        released = machine_shmem()
        shmem.append(
            [
                label,
                fmt_bytes(created - base),
                fmt_bytes(read - base),
                fmt_bytes(released - base),
            ]
        )
    return rows, shmem


# --------------------------------------------------------------------------------------


def run(quick: bool) -> str:
    """Run every measurement; return the markdown section."""
    large = LARGE_QUICK if quick else size_from_env(SIZE_ENV, LARGE_DEFAULT, minimum=PAGE)
    started = time.monotonic()
    worker = Worker(_worker, DEADLINE)
    warm = _WarmRefs()
    try:
        lifecycle = {size: _bench_lifecycle(size, worker, warm) for size in (SMALL, large)}
        mem_rows, shmem_rows = _bench_memory(large, worker)
    finally:
        worker.stop()
        warm.close()
    startup = _bench_startup()
    ref_drop, polls, poll_s = _bench_ref_drop()
    elapsed = time.monotonic() - started

    parts = [
        "Ways (all create a zero-filled segment with every page allocated up front):",
        "",
        (
            f"- **{STDLIB_TOUCH}**: `SharedMemory(create=True, size)`, then one byte written "
            "per page (allocates and maps every page in the creator);"
        ),
        (
            f"- **{STDLIB_FALLOCATE}**: `SharedMemory(create=True, size)`, then "
            "`os.posix_fallocate` on its descriptor: the same reservation shoal makes, no page "
            "mapped yet;"
        ),
        (
            f"- **{SHOAL}**: `Segment.create(size)`: memfd, reservation (fallocate) and "
            "registration with the session broker; no page mapped yet;"
        ),
        (
            f"- **{SHOAL_POPULATE}**: the same, and the creator's mapping pre-faulted "
            "(`MAP_POPULATE`), the equal of touching every page;"
        ),
        (
            f"- **{FLOOR}**: `mmap(-1, size, MAP_SHARED | MAP_POPULATE)`, the kernel "
            "populating anonymous shared memory, nothing named or shared: a lower bound for "
            "creation."
        ),
        "",
        (
            "The other process is one long-lived worker (spawn) that receives a handle "
            "(shoal, from `seg.handle()`, as pickling sends it) or a name (stdlib) over a Pipe "
            "and times the attach itself: map only, no page touched. On Python < 3.13 the "
            "stdlib's attach also registers the name with the resource tracker. Release: the "
            "worker closes, then the creator closes (stdlib: and unlinks). The pages are freed "
            "by whoever drops the last reference: the stdlib's `unlink()`, on the creator's "
            "clock; for shoal, the broker (the creator closes its memfd before releasing, "
            "so the broker's close is the last, on a thread of its own for large objects); "
            "after every shoal way the "
            "runner waits (untimed) until the broker has let go, so no way pays for "
            "another's freeing. The warm attach is measured in the same rounds, after the "
            "reader's release, and is not part of the whole life."
        ),
        "",
    ]
    for size, results in lifecycle.items():
        for phase, title in PHASES.items():
            parts.append(results[phase].to_markdown(f"{fmt_bytes(size)}: {title}"))
    parts += [
        (
            "**Broker start-up.** First and second 4 KiB create in a fresh interpreter with a "
            "fresh runtime directory (the import is not timed). shoal's first create starts the "
            "session broker; the stdlib's first create starts multiprocessing's resource "
            "tracker."
        ),
        "",
        startup.to_markdown("first vs second create in a fresh process"),
        (
            "**A killed process's references.** A child attaches a 4 KiB segment and is "
            "SIGKILLed; the time until the broker no longer lists it as a holder (polling the "
            f"broker's description: median {polls:g} poll(s) per kill, one poll takes "
            f"{fmt_duration(poll_s)}), next to the time until `waitpid` returns for it. "
            "The stdlib has no equivalent: nothing counts who maps a segment."
        ),
        "",
        ref_drop.to_markdown("SIGKILL to references dropped"),
        (
            f"**Memory of a reader of {fmt_bytes(large)}** (one read of every byte, in the "
            "worker process; the creator, this process, maps it too, so PSS splits the pages "
            "in two):"
        ),
        "",
        memory_table(mem_rows),
        (
            "Machine Shmem, relative to before each creation (machine-wide: other processes "
            "on this machine move it too):"
        ),
        "",
        "| way | segment created | reader has read it | after release |",
        "| --- | ---: | ---: | ---: |",
        *("| " + " | ".join(r) + " |" for r in shmem_rows),
        "",
        f"Whole script: {fmt_duration(elapsed)}"
        + (" (`--quick`: large size 64 MiB)." if quick else "."),
    ]
    return section("Segments: create, attach, release", "\n".join(parts))


def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="large size 64 MiB")
    args = parser.parse_args()
    print(run(args.quick))


if __name__ == "__main__":
    _main()
