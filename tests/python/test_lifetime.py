"""Crash and lifetime scenarios with real processes and real SIGKILL.

Every scenario runs under fork, spawn and forkserver (the `ctx` fixture) and once more with
unrelated processes started by subprocess, which get handles as strings on their command line.

"Nothing is left" means: the machine's Shmem is back within 4 MiB of its
baseline (objects of 64 MiB), no shoal socket or file remains in the runtime directory, and
no broker process remains. Tests that read Shmem are marked serial.

Child processes run "roles" (module-level functions, so that spawn and the subprocess can
import them) and talk to the test over a multiprocessing Connection: a Pipe for multiprocessing
children, a socketpair for subprocesses.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from functools import lru_cache
from multiprocessing.connection import Connection
from typing import Any

import pytest
from conftest import DEADLINE, describe_here, session_info, shmem_baseline, wait_until

import shoal
from shoal import _shoal
from shoal._tools.measure import machine_shmem

KIB = 1024
MIB = 1024 * KIB
BIG = 64 * MIB  # big enough to see in Shmem (a smaller one drowns in other processes' pages)
SMALL = 256 * KIB
SLACK = 4 * MIB  # how far above its baseline Shmem may stay
HERE = os.path.dirname(os.path.abspath(__file__))

Launcher = Any  # a multiprocessing context, or the string "subprocess"


# --- data ------------------------------------------------------------------------------------


@lru_cache(maxsize=4)
def _pattern(size: int, seed: int) -> bytes:
    assert size % 256 == 0
    return bytes((i * 131 + seed * 17 + 1) & 0xFF for i in range(256)) * (size // 256)


@lru_cache(maxsize=4)
def _crc(size: int, seed: int) -> int:
    return zlib.crc32(_pattern(size, seed))


def _fill(seg: _shoal.Segment, seed: int) -> None:
    with memoryview(seg) as mv:
        mv[:] = _pattern(len(mv), seed)


def _holds(seg: _shoal.Segment, seed: int) -> bool:
    with memoryview(seg) as mv:
        return zlib.crc32(mv) == _crc(len(mv), seed)


def _attach(seg_or_handle: _shoal.Segment | str) -> _shoal.Segment:
    if isinstance(seg_or_handle, str):
        return _shoal.Segment.attach(seg_or_handle)
    return seg_or_handle  # inherited over fork, or unpickled (attached) by multiprocessing


# --- roles: what a child process does ----------------------------------------------------------


def _serve(conn: Connection, segs: dict[str, _shoal.Segment]) -> None:
    """Answer the test's commands until told to exit (or the test goes away)."""
    while True:
        try:
            cmd, *args = conn.recv()
        except EOFError:
            return
        if cmd == "check":
            conn.send(_holds(segs[args[0]], args[1]))
        elif cmd == "write":
            _fill(segs[args[0]], args[1])
            conn.send("written")
        elif cmd == "sessions":  # the broker's view, through this child's own connection
            conn.send(_shoal.list_sessions())
        elif cmd == "exit":
            for s in segs.values():
                s.close()
            conn.send("bye")
            return


def _role_creator(conn: Connection, size: int, seed: int, n_handles: int) -> None:
    seg = _shoal.Segment.create(size)
    _fill(seg, seed)
    conn.send(
        {
            "pid": os.getpid(),
            "session": seg.session,
            "id": seg.id,
            "handles": [seg.handle() for _ in range(n_handles)],
        }
    )
    _serve(conn, {"a": seg})


def _role_reader(conn: Connection, seg_or_handle: _shoal.Segment | str, seed: int) -> None:
    seg = _attach(seg_or_handle)
    conn.send({"pid": os.getpid(), "ok": _holds(seg, seed)})
    _serve(conn, {"a": seg})


def _role_holder(conn: Connection, seg_or_handle: _shoal.Segment | str, seed: int) -> None:
    """Holds the test's object and one of its own, and forks a child that holds both too."""
    a = _attach(seg_or_handle)
    b = _shoal.Segment.create(SMALL)
    _fill(b, seed + 1)
    r, w = os.pipe()
    pid = os.fork()  # shoal's at-fork hook re-registers both mappings for the child
    if pid == 0:
        try:
            os.close(r)
            conn.close()
            os.write(w, b"1" if _holds(a, seed) and _holds(b, seed + 1) else b"0")
            os.close(w)
            time.sleep(10 * DEADLINE)  # until the test kills it
        finally:
            os._exit(0)
    os.close(w)
    child_ok = os.read(r, 1) == b"1"
    os.close(r)
    conn.send(
        {
            "pid": os.getpid(),
            "grandchild": pid,
            "b": b.id,
            "b_session": b.session,
            "ok": child_ok and _holds(a, seed),
        }
    )
    _serve(conn, {"a": a, "b": b})


def _role_try_attach(conn: Connection, handle: str) -> None:
    try:
        seg = _shoal.Segment.attach(handle)
    except shoal.ShoalError as e:
        conn.send((type(e).__name__, str(e)))
    else:
        conn.send(("attached", seg.id))
        seg.close()


def _role_create_and_list(conn: Connection, runtime_dir: str) -> None:
    """A new shoal process: starts a session, reports what the runtime directory holds."""
    seg = _shoal.Segment.create(4096)
    conn.send({"session": seg.session, "files": sorted(os.listdir(runtime_dir))})
    seg.close()


def _role_create_and_exit(conn: Connection, size: int, seed: int) -> None:
    """Creates an object, sends a pinned handle and exits at once."""
    seg = _shoal.Segment.create(size)
    _fill(seg, seed)
    conn.send({"pid": os.getpid(), "handle": seg.handle()})


def _role_connected_reader(conn: Connection, warm_handle: str) -> None:
    """Attaches `warm_handle` first (which connects this process to that session's broker, so
    handles with a hint take the fast path), then attaches what it is sent: a handle string,
    or a pickle (bytes) of a shoal.Array."""
    warm = _shoal.Segment.attach(warm_handle)
    conn.send({"pid": os.getpid()})
    segs = {"warm": warm}
    cmd, what, seed = conn.recv()
    assert cmd == "attach", cmd
    try:
        if isinstance(what, bytes):
            arr = pickle.loads(what)  # kept (with its mapping) until this process ends
            conn.send(("attached", bool((arr == seed).all())))
        else:
            segs["a"] = _shoal.Segment.attach(what)
            conn.send(("attached", _holds(segs["a"], seed)))
    except shoal.ShoalError as e:
        conn.send((type(e).__name__, str(e)))
    _serve(conn, segs)


ROLES: dict[str, Callable[..., None]] = {
    "creator": _role_creator,
    "reader": _role_reader,
    "holder": _role_holder,
    "try_attach": _role_try_attach,
    "create_and_list": _role_create_and_list,
    "create_and_exit": _role_create_and_exit,
    "connected_reader": _role_connected_reader,
}


def _mp_entry(conn: Connection, role: str, args: tuple[Any, ...]) -> None:
    ROLES[role](conn, *args)
    conn.close()


def _subprocess_entry() -> None:
    """`python -c` entry of an unrelated process: argv is role, descriptor, JSON arguments."""
    role, fd, args = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
    conn = Connection(fd)
    ROLES[role](conn, *args)
    conn.close()


# --- the test side of a child --------------------------------------------------------------------


class Child:
    """A child process running a role, started by a multiprocessing context or subprocess."""

    def __init__(self, launcher: Launcher, role: str, *args: Any) -> None:
        self.proc: Any
        if launcher == "subprocess":
            assert all(isinstance(a, (str, int)) for a in args), "subprocesses get strings"
            mine, theirs = socket.socketpair()
            env = dict(os.environ, PYTHONPATH=HERE)
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    "import test_lifetime as t; t._subprocess_entry()",
                    role,
                    str(theirs.fileno()),
                    json.dumps(args),
                ],
                pass_fds=(theirs.fileno(),),
                env=env,
            )
            theirs.close()
            self.conn = Connection(mine.detach())
        else:
            self.conn, theirs = launcher.Pipe()
            self.proc = launcher.Process(target=_mp_entry, args=(theirs, role, args), daemon=True)
            self.proc.start()
            theirs.close()
        self.pid: int = self.proc.pid

    def recv(self) -> Any:
        if not self.conn.poll(DEADLINE):
            raise AssertionError(f"child {self.pid} did not answer within {DEADLINE} s")
        try:
            return self.conn.recv()
        except EOFError:
            raise AssertionError(f"child {self.pid} died (exit code {self.join(0)})") from None

    def ask(self, *cmd: Any) -> Any:
        self.conn.send(cmd)
        return self.recv()

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)

    def join(self, timeout: float = DEADLINE) -> int | None:
        """The exit code (-signal when killed), or None if it is still running."""
        if isinstance(self.proc, subprocess.Popen):
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                return None
        # Not Process.join(): it waits for the sentinel pipe, which a grandchild forked by the
        # child keeps open after the child's death. waitpid (exitcode) sees the death itself.
        wait_until(lambda: self.proc.exitcode is not None, timeout)
        return self.proc.exitcode

    def stop(self) -> None:
        """Cleanup: kill it if it still runs, and reap it."""
        if self.join(0) is None:
            self.kill()
            self.join()
        self.conn.close()


@pytest.fixture
def children() -> Iterator[list[Child]]:
    """Children (and stray grandchildren, by pid) that the test started; all killed at the end."""
    started: list[Child] = []
    yield started
    for c in started:
        c.stop()


def _start(children: list[Child], launcher: Launcher, role: str, *args: Any) -> Child:
    c = Child(launcher, role, *args)
    children.append(c)
    return c


def _share(launcher: Launcher, seg: _shoal.Segment) -> _shoal.Segment | str:
    """How the test hands an object it maps to a child: the Segment itself for multiprocessing
    (inherited over fork, pickled as a pinned handle otherwise), a handle string for the
    unrelated process."""
    return seg.handle() if launcher == "subprocess" else seg


# --- observing processes, the broker and the machine ---------------------------------------------


def _alive(pid: int) -> bool:
    """True while `pid` runs; a zombie (dead, not yet reaped) counts as gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _kill_pid(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _broker_pid(runtime_dir: str, session: str) -> int:
    with open(os.path.join(runtime_dir, f"{session}.lock")) as f:
        return int(f.read().strip())


def _brokers_of(runtime_dir: str) -> list[int]:
    """Live shoal-broker processes serving `runtime_dir`, found in /proc (not in the lock
    files, which a killed broker cannot remove)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if (
            argv[0].endswith(b"shoal-broker")
            and runtime_dir.encode() in argv
            and _alive(int(entry))
        ):
            found.append(int(entry))
    return found


def _assert_shmem_sees(baseline: int) -> None:
    """The object's reserved pages show in Shmem (else "Shmem is back" would prove nothing)."""
    assert wait_until(lambda: machine_shmem() - baseline >= BIG - SLACK), (
        f"Shmem grew by {(machine_shmem() - baseline) / MIB:.1f} MiB only"
    )


def _leftovers(runtime_dir: str) -> list[str]:
    """Files and brokers left of the test's sessions."""
    left = []
    files = sorted(os.listdir(runtime_dir))
    if files:
        left.append(f"the runtime directory holds {files}")
    brokers = _brokers_of(runtime_dir)
    if brokers:
        left.append(f"broker processes still run: {brokers}")
    return left


def _assert_nothing_left(runtime_dir: str, shmem_baseline: int | None) -> None:
    """The "nothing is left" of this module's docstring: no file, no broker, and Shmem back
    within 4 MiB of its baseline (when one is given)."""
    assert wait_until(lambda: not _leftovers(runtime_dir)), _leftovers(runtime_dir)
    if shmem_baseline is not None:
        # Other processes on the machine (other test runs, benchmarks) may hold Shmem for a
        # while: the wait is longer, never a limit on how soon shoal must free its pages.
        assert wait_until(lambda: machine_shmem() - shmem_baseline <= SLACK, 3 * DEADLINE), (
            f"Shmem is {(machine_shmem() - shmem_baseline) / MIB:.1f} MiB above its baseline"
        )


def _holders(info: dict[str, Any], object_id: str) -> list[int] | None:
    """Pids that hold `object_id`, sorted; None once the broker has freed it."""
    for o in info["objects"]:
        if o["id"] == object_id:
            return sorted(o["holders"])
    return None


# --- scenario: the creator is killed while two readers map the object --------------------------


def _creator_killed_while_two_readers_map(
    launcher: Launcher, runtime_dir: str, children: list[Child]
) -> None:
    # The test only orchestrates: it never maps the object, so once the readers are gone no
    # process of the session is left.
    baseline = shmem_baseline()
    creator = _start(children, launcher, "creator", BIG, 1, 2)
    made = creator.recv()
    _assert_shmem_sees(baseline)
    readers = [_start(children, launcher, "reader", h, 1) for h in made["handles"]]
    for r in readers:
        assert r.recv()["ok"]
    info = session_info(readers[0].ask("sessions"), made["session"])
    assert _holders(info, made["id"]) == sorted([made["pid"], *(r.pid for r in readers)])

    creator.kill()
    assert creator.join() == -signal.SIGKILL
    for r in readers:
        assert r.ask("check", "a", 1) is True  # every byte still correct
    assert readers[0].ask("write", "a", 2) == "written"  # and still one copy between them
    assert readers[1].ask("check", "a", 2) is True
    assert wait_until(
        lambda: (
            _holders(session_info(readers[0].ask("sessions"), made["session"]), made["id"])
            == sorted(r.pid for r in readers)
        )
    )

    for r in readers:
        assert r.ask("exit") == "bye"
        assert r.join() == 0
    _assert_nothing_left(runtime_dir, baseline)


@pytest.mark.serial
def test_creator_killed_while_two_readers_map(
    ctx: mp.context.BaseContext, runtime_dir: str, children: list[Child]
) -> None:
    _creator_killed_while_two_readers_map(ctx, runtime_dir, children)


@pytest.mark.serial
def test_creator_killed_while_two_readers_map_unrelated_processes(
    runtime_dir: str, children: list[Child]
) -> None:
    _creator_killed_while_two_readers_map("subprocess", runtime_dir, children)


# --- scenario: a process that holds references is killed, and so is its forked child ---------


def _holder_and_its_forked_child_killed(launcher: Launcher, children: list[Child]) -> None:
    a = _shoal.Segment.create(SMALL)
    _fill(a, 1)
    me = os.getpid()
    holder = _start(children, launcher, "holder", _share(launcher, a), 1)
    got = holder.recv()
    grandchild, b_session = got["grandchild"], got["b_session"]

    # `b` lives in the holder's session: the test's own for multiprocessing children (they
    # inherit SHOAL_SESSION), a session of its own for the unrelated process.
    def b_holders() -> list[int] | None:
        for s in _shoal.list_sessions():
            if s["id"] == b_session and s["alive"] and s["describe_json"]:
                return _holders(json.loads(s["describe_json"]), got["b"])
        return None  # that session has ended: nothing holds `b` any more

    grandchild_killed = False
    try:
        assert got["ok"]
        assert _holders(describe_here(a.session), a.id) == sorted([me, holder.pid, grandchild])
        assert b_holders() == sorted([holder.pid, grandchild])

        # Kill the parent: its references go, its forked child's stay (its own connection).
        holder.kill()
        assert holder.join() == -signal.SIGKILL
        assert wait_until(
            lambda: _holders(describe_here(a.session), a.id) == sorted([me, grandchild])
        )
        assert b_holders() == [grandchild]
        connected = [c["pid"] for c in describe_here(a.session)["connections"]]
        assert holder.pid not in connected and grandchild in connected

        # Kill the forked child: the object it alone held is freed.
        _kill_pid(grandchild)
        grandchild_killed = True
        assert wait_until(lambda: _holders(describe_here(a.session), a.id) == [me])
        assert [c["pid"] for c in describe_here(a.session)["connections"]] == [me]
        assert wait_until(lambda: b_holders() is None)
        assert _holds(a, 1)
    finally:
        if not grandchild_killed:
            _kill_pid(grandchild)
    a.close()


def test_holder_and_its_forked_child_killed(
    ctx: mp.context.BaseContext, children: list[Child]
) -> None:
    _holder_and_its_forked_child_killed(ctx, children)


def test_holder_and_its_forked_child_killed_unrelated_process(children: list[Child]) -> None:
    _holder_and_its_forked_child_killed("subprocess", children)


# --- scenario: every process of the session is killed at once, broker included ----------------


def _everything_killed_at_once(
    launcher: Launcher, runtime_dir: str, children: list[Child], cleanup: str
) -> None:
    baseline = shmem_baseline()
    creator = _start(children, launcher, "creator", BIG, 1, 1)
    made = creator.recv()
    _assert_shmem_sees(baseline)
    reader = _start(children, launcher, "reader", made["handles"][0], 1)
    assert reader.recv()["ok"]
    broker = _broker_pid(runtime_dir, made["session"])
    assert _brokers_of(runtime_dir) == [broker]

    for pid in (creator.pid, reader.pid, broker):
        os.kill(pid, signal.SIGKILL)
    assert creator.join() == -signal.SIGKILL and reader.join() == -signal.SIGKILL
    assert wait_until(lambda: not _alive(broker))
    # The memory goes with the processes; the broker had no chance to remove its files.
    stale = [f"{made['session']}.lock", f"{made['session']}.sock"]
    assert sorted(os.listdir(runtime_dir)) == stale

    if cleanup == "gc":
        assert _shoal.gc() == 1
        assert _shoal.gc() == 0
    else:  # the next shoal process to start a session cleans up first
        nxt = _start(children, launcher, "create_and_list", runtime_dir)
        report = nxt.recv()
        assert report["session"] != made["session"]
        assert report["files"] == [f"{report['session']}.lock", f"{report['session']}.sock"]
        assert nxt.join() == 0
    _assert_nothing_left(runtime_dir, baseline)


@pytest.mark.serial
@pytest.mark.parametrize("cleanup", ["gc", "next_process"])
def test_everything_killed_at_once(
    ctx: mp.context.BaseContext, runtime_dir: str, children: list[Child], cleanup: str
) -> None:
    _everything_killed_at_once(ctx, runtime_dir, children, cleanup)


@pytest.mark.serial
@pytest.mark.parametrize("cleanup", ["gc", "next_process"])
def test_everything_killed_at_once_unrelated_processes(
    runtime_dir: str, children: list[Child], cleanup: str
) -> None:
    _everything_killed_at_once("subprocess", runtime_dir, children, cleanup)


# --- scenario: the broker alone is killed ---------------------------------------------------------


def _broker_killed(launcher: Launcher, runtime_dir: str, children: list[Child]) -> None:
    a = _shoal.Segment.create(SMALL)
    _fill(a, 1)
    session = a.session
    b = _shoal.Segment.create(SMALL)
    hb = b.handle()  # pinned: attachable until the broker goes
    b.close()
    reader = _start(children, launcher, "reader", _share(launcher, a), 1)
    assert reader.recv()["ok"]
    broker = _broker_pid(runtime_dir, session)

    os.kill(broker, signal.SIGKILL)
    assert wait_until(lambda: not _alive(broker))

    # Existing mappings keep working, in both directions.
    assert _holds(a, 1)
    assert reader.ask("check", "a", 1) is True
    _fill(a, 2)
    assert reader.ask("check", "a", 2) is True
    assert reader.ask("write", "a", 3) == "written"
    assert _holds(a, 3)

    # New attaches fail cleanly, here and in a new process.
    gone = r"the broker of session [0-9a-f]{32} is gone \(killed or crashed\)"
    with pytest.raises(shoal.SessionGoneError, match=gone):
        _shoal.Segment.attach(hb)
    late = _start(children, launcher, "try_attach", hb)
    kind, msg = late.recv()
    assert kind == "SessionGoneError" and f"the broker of session {session} is gone" in msg
    assert late.join() == 0
    with pytest.raises(shoal.SessionGoneError, match=gone):
        a.handle()
    with pytest.raises(shoal.SessionGoneError, match=gone):
        pickle.dumps(a)

    # Nothing hangs: the reader lets go and exits, so does this process's copy.
    assert reader.ask("exit") == "bye"
    assert reader.join() == 0
    a.close()

    # New objects go to a new session, whose start removes the dead one's files.
    c = _shoal.Segment.create(4096)
    assert c.session != session and _shoal.current_session() == c.session
    assert sorted(os.listdir(runtime_dir)) == [f"{c.session}.lock", f"{c.session}.sock"]
    c.close()


def test_broker_killed(
    ctx: mp.context.BaseContext, runtime_dir: str, children: list[Child]
) -> None:
    _broker_killed(ctx, runtime_dir, children)


def test_broker_killed_unrelated_process(runtime_dir: str, children: list[Child]) -> None:
    _broker_killed("subprocess", runtime_dir, children)


# --- scenario: a worker creates an object, returns it and exits ----------------------------------


def _pool_make(size: int, seed: int) -> tuple[int, _shoal.Segment]:
    seg = _shoal.Segment.create(size)
    _fill(seg, seed)
    return os.getpid(), seg  # pickled: a pinned handle


def _pool_make_pickled(size: int, seed: int) -> tuple[int, bytes]:
    pid, seg = _pool_make(size, seed)
    return pid, pickle.dumps(seg)


@pytest.fixture
def long_pins(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pins that outlast a slow machine: these tests attach only after their creator exited."""
    monkeypatch.setenv("SHOAL_PIN_TTL", "120")


def test_pool_worker_returns_a_segment_and_exits(
    ctx: mp.context.BaseContext, long_pins: None
) -> None:
    with ctx.Pool(1, maxtasksperchild=1) as pool:
        worker, seg = pool.apply(_pool_make, (SMALL, 1))
        pool.close()
        pool.join()
    assert wait_until(lambda: not _alive(worker))
    assert _holds(seg, 1)
    info = describe_here(seg.session)
    assert _holders(info, seg.id) == [os.getpid()]
    assert [o["pins"] for o in info["objects"]] == [0]  # receiving it used the pin
    seg.close()


def test_pool_worker_exits_before_its_segment_is_unpickled(
    ctx: mp.context.BaseContext, runtime_dir: str, long_pins: None
) -> None:
    with ctx.Pool(1, maxtasksperchild=1) as pool:
        worker, blob = pool.apply(_pool_make_pickled, (SMALL, 1))
        pool.close()
        pool.join()
    assert wait_until(lambda: not _alive(worker))
    # The worker started the session and is gone; only the pin keeps the object.
    assert len(_brokers_of(runtime_dir)) == 1
    seg = pickle.loads(blob)
    assert _holds(seg, 1)
    assert _holders(describe_here(seg.session), seg.id) == [os.getpid()]
    seg.close()
    _shoal._reset_for_testing()  # this process leaves the session: the broker may go
    _assert_nothing_left(runtime_dir, None)


def test_unrelated_process_creates_sends_a_handle_and_exits(
    runtime_dir: str, children: list[Child], long_pins: None
) -> None:
    maker = _start(children, "subprocess", "create_and_exit", SMALL, 1)
    made = maker.recv()
    assert maker.join() == 0
    seg = _shoal.Segment.attach(made["handle"])
    assert _holds(seg, 1)
    assert _holders(describe_here(seg.session), seg.id) == [os.getpid()]
    seg.close()
    _shoal._reset_for_testing()
    _assert_nothing_left(runtime_dir, None)


# --- gc ---------------------------------------------------------------------------------------------


def _make_dead_session(runtime_dir: str, session: str) -> None:
    """What a SIGKILLed broker leaves: its socket (bound, nobody listening) and its lock file
    (holding its pid, locked by nobody)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
        s.bind(os.path.join(runtime_dir, f"{session}.sock"))
    with open(os.path.join(runtime_dir, f"{session}.lock"), "w") as f:
        f.write("999999\n")


def test_gc_removes_dead_sessions_and_never_a_live_one(runtime_dir: str) -> None:
    live = _shoal.Segment.create(4096)
    dead = [f"{i:032x}" for i in range(1, 4)]
    for session in dead:
        _make_dead_session(runtime_dir, session)
    assert _shoal.gc() == len(dead)
    assert sorted(os.listdir(runtime_dir)) == [f"{live.session}.lock", f"{live.session}.sock"]
    assert _shoal.gc() == 0
    with memoryview(live) as mv:  # the live session still serves
        mv[:2] = b"ok"
    assert _holders(describe_here(live.session), live.id) == [os.getpid()]
    live.close()


def test_gc_counts_each_dead_session_once(runtime_dir: str) -> None:
    # With 20 sessions, some lock file is listed before its socket whatever the file system's
    # directory order (ext4 hashes names; tmpfs lists the newest, here the lock, first): its
    # socket, removed with the lock, must not be counted a second time when the listing
    # reaches it.
    for i in range(1, 21):
        _make_dead_session(runtime_dir, f"{i:032x}")
    removed = _shoal.gc()
    assert os.listdir(runtime_dir) == []
    assert removed == 20


# --- fast attach: a pinned handle's hint (docs/design/segment.md, "Fast attach") --------------

HINTED_LEN = 163  # a handle with a hint; its first 133 bytes are the handle without it


def _hint_of(handle: str) -> tuple[int, int]:
    assert len(handle) == HINTED_LEN and handle[133:137] == ";h1:", handle
    return int(handle[137:145], 16), int(handle[146:154], 16)


def _with_hint(handle: str, pid: int, fd: int) -> str:
    """`handle` with a well-formed hint of the caller's choosing (a valid checksum)."""
    body = f"{handle[:133]};h1:{pid:08x}:{fd:08x}"
    return f"{body}:{zlib.crc32(body.encode()):08x}"


def _holds_count(session: str) -> int:
    return int(describe_here(session)["holds"])


def _fast_attach_is_counted(launcher: Launcher, runtime_dir: str, children: list[Child]) -> None:
    baseline = shmem_baseline()
    warm = _shoal.Segment.create(4096)
    reader = _start(children, launcher, "connected_reader", warm.handle())
    assert reader.recv()["pid"] == reader.pid
    seg = _shoal.Segment.create(BIG)
    _fill(seg, 3)
    _assert_shmem_sees(baseline)
    h = seg.handle()
    assert _hint_of(h)[0] == _broker_pid(runtime_dir, seg.session)
    session, object_id = seg.session, seg.id
    holds = _holds_count(session)
    assert reader.ask("attach", h, 3) == ("attached", True)
    # The creator releases at once; the reader's kHold may reach the broker after that
    # release, and the handle's pin keeps the object until it does.
    seg.close()
    assert wait_until(
        lambda: (
            _holds_count(session) == holds + 1
            and _holders(describe_here(session), object_id) == [reader.pid]
        )
    ), describe_here(session)
    assert reader.ask("check", "a", 3) is True
    assert machine_shmem() - baseline >= BIG - SLACK  # still there: the reader holds it
    assert reader.ask("exit") == "bye"
    assert reader.join() == 0
    assert wait_until(lambda: _holders(describe_here(session), object_id) is None)
    assert describe_here(session)["hold_misses"] == 0
    # The pages are back (the session lives on: this process keeps its connection).
    assert wait_until(lambda: machine_shmem() - baseline <= SLACK, 3 * DEADLINE), (
        f"Shmem is {(machine_shmem() - baseline) / MIB:.1f} MiB above its baseline"
    )
    warm.close()


@pytest.mark.serial
def test_fast_attach_is_counted_and_freed_with_its_attacher(
    ctx: mp.context.BaseContext, runtime_dir: str, children: list[Child]
) -> None:
    _fast_attach_is_counted(ctx, runtime_dir, children)


@pytest.mark.serial
def test_fast_attach_is_counted_and_freed_with_its_attacher_unrelated_process(
    runtime_dir: str, children: list[Child]
) -> None:
    _fast_attach_is_counted("subprocess", runtime_dir, children)


def test_fast_attach_through_pickle_of_an_array(children: list[Child]) -> None:
    np = pytest.importorskip("numpy")
    warm = _shoal.Segment.create(4096)
    reader = _start(children, "subprocess", "connected_reader", warm.handle())
    reader.recv()
    arr = shoal.share(np.full(1 << 16, 7.0))
    holds = _holds_count(warm.session)
    assert reader.ask("attach", pickle.dumps(arr), 7) == ("attached", True)
    assert wait_until(lambda: _holds_count(warm.session) == holds + 1)
    info = describe_here(warm.session)
    assert _holders(info, arr.segment.id) == sorted([os.getpid(), reader.pid])
    assert all(o["pins"] == 0 for o in info["objects"])


def test_forged_or_stale_hints_fall_back_to_the_round_trip(children: list[Child]) -> None:
    warm = _shoal.Segment.create(4096)
    seg = _shoal.Segment.create(SMALL)
    _fill(seg, 4)
    other = _shoal.Segment.create(SMALL)  # same size, another object
    broker, other_fd = _hint_of(other.handle())
    forgeries = {
        "no such descriptor": lambda h: _with_hint(h, broker, 100000),
        "another object's descriptor": lambda h: _with_hint(h, broker, other_fd),
        "another process": lambda h: _with_hint(h, os.getpid(), _hint_of(h)[1]),
        "no hint": lambda h: h[:133],
    }
    for what, forge in forgeries.items():
        # The warm handle without its hint: connecting by a hinted one would count a hold.
        reader = _start(children, "subprocess", "connected_reader", warm.handle()[:133])
        reader.recv()
        assert reader.ask("attach", forge(seg.handle()), 4) == ("attached", True), what
        assert reader.ask("exit") == "bye"
    info = describe_here(seg.session)
    assert info["holds"] == 0  # every attach took the round trip
    assert [o["pins"] for o in info["objects"] if o["id"] == seg.id] == [0]


def test_a_reused_descriptor_number_raises_stale_handle_error(children: list[Child]) -> None:
    warm = _shoal.Segment.create(4096)
    a = _shoal.Segment.create(SMALL)
    _fill(a, 4)
    ha = a.handle()
    _shoal.Segment.attach(ha).close()  # uses the pin (this process maps it: a cache hit)
    a.close()  # freed: the broker closes its descriptor
    b = _shoal.Segment.create(SMALL)  # the broker's lowest free descriptor number: a's
    _fill(b, 4)  # the same bytes too: only the header's object id tells them apart
    assert _hint_of(b.handle())[1] == _hint_of(ha)[1], "the broker did not reuse the number"
    reader = _start(children, "subprocess", "connected_reader", warm.handle())
    reader.recv()
    kind, message = reader.ask("attach", ha, 4)
    assert kind == "StaleHandleError", message
    assert _holders(describe_here(b.session), b.id) == [os.getpid()]
