"""The scenes of ``shoal demo``: what shoal does, shown next to the stdlib way.

Each scene is a ``Scene`` in ``SCENES``: a name, a title and a function that runs it,
prints a short narrative with measured figures, and returns whether everything shoal
promises held. A new scene is one more entry in ``SCENES``. Every scene has a
size knob (``--size-mb``) and finishes in well under a minute at the default size.

Scene ``killed-creator`` (the foundation's): a creator process makes a segment, fills
it and hands it to two readers (one started by multiprocessing's spawn, one a plain
``python`` subprocess given the handle string on its command line), then is SIGKILLed.
The readers still read correct data; once they exit nothing is left. The same story
with ``multiprocessing.shared_memory`` leaves the segment in /dev/shm.

The helpers here also run as ``python -m shoal._tools.demo reader WAY REF`` (the plain
subprocess reader); that entry point is not an API.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, TextIO

from .. import _shoal
from .harness import fmt_duration
from .measure import MIB, SHMEM_SLACK, fmt_bytes, fmt_signed, machine_shmem, proc_mem

__all__ = ["SCENES", "Scene", "run"]

_DEADLINE = 30.0  # seconds to wait for something that must happen soon (never expected)
# "Back to baseline" means at most SHMEM_SLACK above it. One-sided: Shmem is machine-wide,
# and other processes freeing theirs meanwhile is no leak of ours.


@dataclass(frozen=True)
class Scene:
    """One demo scene: ``fn(size_bytes, out)`` prints its story, returns True if all held."""

    name: str
    title: str
    fn: Callable[[int, TextIO], bool]


# --------------------------------------------------------------------------------------
# small helpers


def _alive(pid: int) -> bool:
    """True if ``pid`` runs (a zombie, dead but not yet reaped, counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return False


def _wait_until(pred: Callable[[], bool], timeout: float = _DEADLINE) -> tuple[bool, float]:
    """Poll ``pred`` until true or ``timeout``; returns (result, seconds waited)."""
    start = time.monotonic()
    while True:
        if pred():
            return True, time.monotonic() - start
        if time.monotonic() - start > timeout:
            return False, time.monotonic() - start
        time.sleep(0.005)


def _fill(buf: memoryview) -> int:
    """Write a pattern into every page of ``buf``; return its CRC-32.

    1 MiB of random bytes, repeated with each copy stamped with its index, so a page
    mapped at the wrong place or lost would change the checksum.
    """
    block = bytearray(os.urandom(MIB))
    n = len(buf)
    for off in range(0, n, MIB):
        block[:8] = (off // MIB).to_bytes(8, "little")
        end = min(n, off + MIB)
        buf[off:end] = block[: end - off]
    return zlib.crc32(buf)


def _buf_of(shm: Any) -> memoryview:
    """``SharedMemory.buf``, which is typed as optional (it is None once closed)."""
    buf = shm.buf
    assert isinstance(buf, memoryview)
    return buf


@contextmanager
def _private_runtime_dir() -> Iterator[str]:
    """A fresh runtime directory for this scene's session, in this process's environment
    (and so in every child it starts) while the block runs; removed afterwards."""
    d = tempfile.mkdtemp(prefix="shoal-demo-", dir="/tmp")
    saved = {k: os.environ.get(k) for k in ("SHOAL_RUNTIME_DIR", "SHOAL_SESSION")}
    os.environ["SHOAL_RUNTIME_DIR"] = d
    os.environ.pop("SHOAL_SESSION", None)
    try:
        yield d
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(d, ignore_errors=True)


# --------------------------------------------------------------------------------------
# the processes of scene 1 (module-level: spawn children import them by name)


def _creator(conn: Connection, way: str, size: int, readers: int) -> None:
    """Create a segment of ``size`` bytes, fill it, send what readers need, then wait
    (forever: the demo SIGKILLs this process)."""
    start = time.perf_counter()
    if way == "shoal":
        try:
            seg = _shoal.Segment.create(size, populate=True)
        except _shoal.ShoalError as exc:  # e.g. OutOfSpaceError: say why, do not hang
            conn.send({"error": f"{type(exc).__name__}: {exc}"})
            return
        with memoryview(seg) as buf:
            crc = _fill(buf)
        # One handle per reader: each pins the object until its reader attaches.
        refs = [seg.handle(pin=True) for _ in range(readers)]
        extra = {"session": seg.session}
    else:
        from multiprocessing import shared_memory

        shm = shared_memory.SharedMemory(create=True, size=size)
        crc = _fill(_buf_of(shm))
        refs = [shm.name] * readers
        extra = {"path": f"/dev/shm/{shm.name}"}
    conn.send(
        {"pid": os.getpid(), "refs": refs, "crc": crc, "seconds": time.perf_counter() - start}
        | extra
    )
    conn.recv()  # never comes


def _reader(
    way: str,
    ref: str,
    untrack: bool,
    send: Callable[[dict[str, Any]], None],
    recv: Callable[[], str],
) -> None:
    """Attach, then on "read" checksum the whole segment, then on "exit" let go."""
    from multiprocessing import resource_tracker, shared_memory

    start = time.perf_counter()
    if way == "shoal":
        seg = _shoal.Segment.attach(ref)
        buf = memoryview(seg)
        close: Callable[[], None] = seg.close
    else:
        if sys.version_info >= (3, 13):
            shm = shared_memory.SharedMemory(name=ref, track=False)  # type: ignore[call-arg]
        else:
            shm = shared_memory.SharedMemory(name=ref)
            if untrack:
                # Before 3.13 attaching registers the segment with this process's own
                # resource tracker, which unlinks it when this process exits, under
                # everyone else (CPython issue 82300). The usual workaround:
                resource_tracker.unregister(shm._name, "shared_memory")  # type: ignore[attr-defined]
        buf = _buf_of(shm)
        close = shm.close
    send({"event": "attached", "pid": os.getpid(), "seconds": time.perf_counter() - start})
    while True:
        cmd = recv()
        if cmd == "read":
            t = time.perf_counter()
            crc = zlib.crc32(buf)
            send({"event": "read", "crc": crc, "seconds": time.perf_counter() - t})
        else:
            break
    buf.release()
    close()


def _spawn_reader(conn: Connection, way: str, ref: str) -> None:
    """The multiprocessing (spawn) reader: shares this demo's resource tracker."""
    _reader(way, ref, False, conn.send, conn.recv)


def _subprocess_main(way: str, ref: str) -> None:
    """The plain-subprocess reader: JSON lines on stdout, commands on stdin."""

    def send(msg: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(msg) + "\n")
        sys.stdout.flush()

    def recv() -> str:
        return sys.stdin.readline().strip()

    _reader(way, ref, True, send, recv)


class _SubprocessReader:
    """A reader started as ``python -m shoal._tools.demo reader WAY REF``."""

    def __init__(self, way: str, ref: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "shoal._tools.demo", "reader", way, ref],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def send(self, cmd: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()

    def recv(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"reader pid {self.proc.pid} exited ({self.proc.wait()})")
        msg: dict[str, Any] = json.loads(line)
        return msg

    def finish(self) -> None:
        self.send("exit")
        self.proc.wait(timeout=_DEADLINE)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


class _SpawnReader:
    """A reader started with multiprocessing's spawn method."""

    def __init__(self, way: str, ref: str) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_spawn_reader, args=(child, way, ref), daemon=True)
        self.proc.start()
        child.close()

    def send(self, cmd: str) -> None:
        self.conn.send(cmd)

    def recv(self) -> dict[str, Any]:
        if not self.conn.poll(_DEADLINE):
            raise RuntimeError(f"reader pid {self.proc.pid} did not answer")
        msg: dict[str, Any] = self.conn.recv()
        return msg

    def finish(self) -> None:
        self.send("exit")
        self.proc.join(_DEADLINE)
        self.conn.close()


# --------------------------------------------------------------------------------------
# scene 1: a killed creator


@dataclass
class _Outcome:
    """What one way's run of scene 1 showed (for the side-by-side summary)."""

    crc_ok: bool = False
    leftover: str = ""
    shmem_after: int = 0
    cleanup: str = ""
    notes: list[str] = field(default_factory=list)


class DemoError(Exception):
    """A scene could not run (not a broken promise: the scene reports those itself)."""


def _await_report(conn: Connection, proc: BaseProcess) -> dict[str, Any]:
    """The creator's report, or DemoError if it failed or died first."""
    end = time.monotonic() + _DEADLINE
    while time.monotonic() < end:
        if conn.poll(0.02):
            msg: dict[str, Any] = conn.recv()
            if "error" in msg:
                raise DemoError(f"the creator failed: {msg['error']}")
            return msg
        if not proc.is_alive():
            code = proc.exitcode or 0
            how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
            raise DemoError(f"the creator (pid {proc.pid}) died before reporting ({how})")
    raise DemoError(f"the creator did not report within {_DEADLINE:.0f} s")


def _ls_json() -> dict[str, Any]:
    """``shoal ls --json`` in a short-lived process: asking the broker from this process
    would connect to it and keep it running for as long as the demo runs."""
    out = subprocess.run(
        [sys.executable, "-m", "shoal.cli", "ls", "--json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    data: dict[str, Any] = json.loads(out)
    return data


def _holders(session: str) -> list[int] | None:
    for s in _ls_json()["sessions"]:
        if s["id"] == session and s["describe"]:
            objs = s["describe"]["objects"]
            return sorted(p for o in objs for p in o["holders"]) if objs else []
    return None


def _run_killed_creator(way: str, size: int, out: TextIO) -> _Outcome:
    o = _Outcome()
    label = "shoal" if way == "shoal" else "multiprocessing.shared_memory"

    def say(text: str) -> None:
        print(textwrap.fill(text, 100, initial_indent="  ", subsequent_indent="     "), file=out)
        out.flush()

    print(f"\n[{label}]", file=out)
    baseline = machine_shmem()
    ctx = mp.get_context("spawn")
    conn, child = ctx.Pipe()
    creator = ctx.Process(target=_creator, args=(child, way, size, 2), daemon=True)
    creator.start()
    child.close()
    made = _await_report(conn, creator)
    grown = machine_shmem() - baseline
    if way == "shoal":
        what = f"a {fmt_bytes(size)} segment (pages reserved at creation)"
    else:
        what = f"SharedMemory({made['refs'][0]!r}) of {fmt_bytes(size)}"
    say(
        f"1. creator pid {made['pid']} (spawn) made {what}, filled it "
        f"(crc32 {made['crc']:#010x}) in {fmt_duration(made['seconds'])}; "
        f"machine Shmem {fmt_signed(grown)}"
    )

    readers: list[_SpawnReader | _SubprocessReader] = [
        _SpawnReader(way, made["refs"][0]),
        _SubprocessReader(way, made["refs"][1]),
    ]
    hello = [r.recv() for r in readers]
    attached = [proc_mem(h["pid"]) for h in hello]
    how = "its handle" if way == "shoal" else "the name"
    say(
        f"2. readers attached: pid {hello[0]['pid']} (multiprocessing spawn, {how} as an "
        f"argument) in {fmt_duration(hello[0]['seconds'])}, pid {hello[1]['pid']} (plain "
        f"`python -m shoal._tools.demo reader`, {how} on its command line) in "
        f"{fmt_duration(hello[1]['seconds'])}"
    )
    if way != "shoal":
        say(
            "   (the plain reader stops its own resource tracker from tracking the "
            "segment, or that tracker would unlink it when the reader exits)"
        )

    broker_pid = 0
    if way == "shoal":
        lock = os.path.join(os.environ["SHOAL_RUNTIME_DIR"], f"{made['session']}.lock")
        with open(lock, encoding="ascii") as f:
            broker_pid = int(f.read().strip() or 0)
    os.kill(made["pid"], signal.SIGKILL)
    creator.join(_DEADLINE)
    conn.close()
    if way == "shoal":
        holders: list[int] | None = None

        def creator_dropped() -> bool:
            nonlocal holders
            holders = _holders(made["session"])
            return holders is not None and made["pid"] not in holders

        ok, _ = _wait_until(creator_dropped)
        say(
            f"3. SIGKILL the creator (pid {made['pid']}). Asked with `shoal ls`, the broker "
            f"(pid {broker_pid}) now lists the holders {holders}: the creator's reference "
            "died with it; the readers' keep the segment alive"
        )
        if not ok:
            o.notes.append("the broker still counted the dead creator's reference")
    else:
        there = "is still there" if os.path.exists(made["path"]) else "is gone"
        say(
            f"3. SIGKILL the creator (pid {made['pid']}): its close() and unlink() never run; "
            f"{made['path']} {there}"
        )

    crcs = []
    for r in readers:
        r.send("read")
        crcs.append(r.recv())
    o.crc_ok = all(c["crc"] == made["crc"] for c in crcs)
    grew = [
        proc_mem(h["pid"]).anonymous - m.anonymous for h, m in zip(hello, attached, strict=True)
    ]
    mems = [proc_mem(h["pid"]) for h in hello]
    sums = ", ".join(f"{c['crc']:#010x}" for c in crcs)
    took = ", ".join(fmt_duration(c["seconds"]) for c in crcs)
    pss = ", ".join(fmt_bytes(m.pss_shmem) for m in mems)
    anon = ", ".join(fmt_signed(g) for g in grew)
    say(
        f"4. both readers read all {fmt_bytes(size)} (in {took}): crc32 {sums} -> "
        + ("correct" if o.crc_ok else "WRONG")
        + f". Each maps the one copy: PSS of shared memory {pss} (the pages are split "
        f"between the processes that map them); their private memory (Anonymous) grew by "
        f"{anon} while reading" + (": no private copy" if max(grew) < size // 8 else "")
    )

    for r in readers:
        r.finish()
    if way == "shoal":
        runtime = os.environ["SHOAL_RUNTIME_DIR"]
        ok, waited = _wait_until(
            lambda: (
                machine_shmem() - baseline <= SHMEM_SLACK
                and not os.listdir(runtime)
                and not _alive(broker_pid)
            )
        )
        o.shmem_after = machine_shmem() - baseline
        left = os.listdir(runtime)
        broker = "still running" if _alive(broker_pid) else "gone"
        say(
            f"5. the readers exited; {fmt_duration(waited)} after they were reaped: machine Shmem "
            f"{fmt_signed(o.shmem_after)} vs the start, runtime dir "
            f"{'empty' if not left else 'holds ' + ', '.join(left)}, broker pid {broker_pid} "
            f"{broker}. Nothing to clean up."
        )
        o.leftover = "nothing" if ok else f"files {left}, broker {broker}"
        o.cleanup = "none"
        if not ok:
            o.notes.append("something was left behind (see step 5)")
    else:
        path = made["path"]
        # The kernel frees nothing: wait a moment to be sure (nothing could free it).
        time.sleep(0.2)
        o.shmem_after = machine_shmem() - baseline
        exists = os.path.exists(path)
        size_on_disk = os.stat(path).st_size if exists else 0
        o.leftover = f"{path} ({fmt_bytes(size_on_disk)})" if exists else "nothing"
        say(
            f"5. the readers exited. {path} "
            + (f"still exists ({fmt_bytes(size_on_disk)})" if exists else "is gone")
            + f", machine Shmem {fmt_signed(o.shmem_after)} vs the start: "
            + ("leaked. " if exists else "")
            + "Only an unlink() frees it: this demo's multiprocessing resource tracker "
            "would call it when the demo exits (warning about 'leaked shared_memory "
            "objects'); had the tracker been killed as well (kill -9 of the process "
            "group, a container stop), nobody would, until reboot."
        )
        if exists:
            from multiprocessing import shared_memory

            shared_memory.SharedMemory(name=made["refs"][0]).unlink()
            ok, waited = _wait_until(lambda: machine_shmem() - baseline <= SHMEM_SLACK, timeout=5)
            say(
                f"6. cleaning up by hand: SharedMemory({made['refs'][0]!r}).unlink(); "
                f"machine Shmem now {fmt_signed(machine_shmem() - baseline)} vs the start"
            )
            o.cleanup = "unlink() by hand"
        else:
            o.cleanup = "none"
    return o


def _scene_killed_creator(size: int, out: TextIO) -> bool:
    print(
        f"A creator process fills {fmt_bytes(size)} of shared memory, hands it to two "
        "readers, and is killed with SIGKILL (no cleanup code runs). Do the readers "
        "still see the data, and what is left once they exit?",
        file=out,
    )
    with _private_runtime_dir() as d:
        print(f"(shoal's runtime directory for this scene: {d})", file=out)
        shoal = _run_killed_creator("shoal", size, out)
    free = _shoal.memory_info()["dev_shm_free"]
    if size + MIB > free:
        print(
            f"\n[multiprocessing.shared_memory]\n  skipped: /dev/shm has {fmt_bytes(free)} free; "
            f"the stdlib would create the {fmt_bytes(size)} segment there and its creator "
            "would die of SIGBUS while filling it (shoal's memfds do not live in /dev/shm)",
            file=out,
        )
        return shoal.crc_ok and not shoal.notes
    stdlib = _run_killed_creator("stdlib", size, out)

    rows = [
        ("", "shoal", "multiprocessing.shared_memory"),
        (
            "readers' data after the kill",
            "correct" if shoal.crc_ok else "WRONG",
            "correct" if stdlib.crc_ok else "WRONG",
        ),
        ("left after the readers exit", shoal.leftover, stdlib.leftover),
        ("machine Shmem then", fmt_signed(shoal.shmem_after), fmt_signed(stdlib.shmem_after)),
        ("cleanup needed", shoal.cleanup, stdlib.cleanup),
    ]
    print("\nside by side:", file=out)
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        line = "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True))
        print("  " + line.rstrip(), file=out)
    for note in shoal.notes:
        print(f"  PROBLEM: {note}", file=out)
    return shoal.crc_ok and not shoal.notes


def _scene_shared_matrix(size: int, out: TextIO) -> bool:
    from .scene_arrays import run_scene

    return run_scene(size, out)


def _scene_frozen_list(size: int, out: TextIO) -> bool:
    from .scene_frozen import run_list_scene

    return run_list_scene(size, out)


def _scene_frozen_dict(size: int, out: TextIO) -> bool:
    from .scene_frozen import run_dict_scene

    return run_dict_scene(size, out)


def _scene_killed_holder(size: int, out: TextIO) -> bool:
    from .scene_locks import run_scene

    return run_scene(size, out)


def _scene_shared_dict(size: int, out: TextIO) -> bool:
    from .scene_dict import run_scene

    return run_scene(size, out)


def _scene_pipe_vs_queue(size: int, out: TextIO) -> bool:
    from .scene_channels import run_scene

    return run_scene(size, out)


def _scene_pool_initret(size: int, out: TextIO) -> bool:
    from .scene_pool import run_scene

    return run_scene(size, out)


SCENES: list[Scene] = [
    Scene(
        "killed-creator",
        "A creator is SIGKILLed: readers keep correct data, nothing leaks",
        _scene_killed_creator,
    ),
    Scene(
        "shared-matrix",
        "Seed 003: workers read one big matrix: pickled per worker vs shared_memory vs shoal",
        _scene_shared_matrix,
    ),
    Scene(
        "frozen-list",
        "Seed 000: forked children iterate a big list: plain list vs shoal.freeze",
        _scene_frozen_list,
    ),
    Scene(
        "frozen-dict",
        "Seed 001: Pool.map with a dict cache: partial vs initializer + global vs FrozenDict",
        _scene_frozen_dict,
    ),
    Scene(
        "killed-holder",
        "A lock's holder is SIGKILLed: multiprocessing.Lock stays locked, shoal.Lock comes back",
        _scene_killed_holder,
    ),
    Scene(
        "shared-dict",
        "Seed 002: a dict shared by processes: Manager().dict() vs shoal.Dict",
        _scene_shared_dict,
    ),
    Scene(
        "pipe-vs-queue",
        "Seed 003: Pipe or Queue, which is faster? multiprocessing's next to shoal's",
        _scene_pipe_vs_queue,
    ),
    Scene(
        "pool-initret",
        "Seed 001 on shoal.Pool: the cache pickled per chunk vs frozen once and passed as initret",
        _scene_pool_initret,
    ),
]


def run(size_mb: int = 256, scenes: list[str] | None = None, out: TextIO | None = None) -> int:
    """Run the named scenes (all by default); returns 0 if every one held, else 1."""
    stream = sys.stdout if out is None else out
    if size_mb < 1:
        print("shoal demo: --size-mb must be at least 1", file=sys.stderr)
        return 1
    chosen = SCENES
    if scenes:
        known = {s.name: s for s in SCENES}
        unknown = [n for n in scenes if n not in known]
        if unknown:
            print(
                f"shoal demo: unknown scene(s) {unknown}; known: {sorted(known)}",
                file=sys.stderr,
            )
            return 1
        chosen = [known[n] for n in scenes]
    all_ok = True
    for i, scene in enumerate(chosen, 1):
        print(f"=== scene {i}: {scene.title} ===", file=stream)
        start = time.monotonic()
        try:
            ok = scene.fn(size_mb * MIB, stream)
        except DemoError as exc:
            print(f"shoal demo: scene {scene.name!r} could not run: {exc}", file=sys.stderr)
            ok = False
        all_ok = all_ok and ok
        print(
            f"(scene {i} {'held' if ok else 'FAILED'}; {time.monotonic() - start:.1f} s)\n",
            file=stream,
            flush=True,
        )
    return 0 if all_ok else 1


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "reader":
        _subprocess_main(sys.argv[2], sys.argv[3])
    else:
        sys.exit(run())
