"""Who may reach a session: the runtime directory and socket are the owner's only (0700/0600),
another uid cannot attach, and the broker itself refuses another uid (SO_PEERCRED) even when
the file permissions would let it in. Files that shoal.save writes are the user's: read-only,
and never more readable than the umask allows.

CI runs as root, so the other user is uid/gid 65534, which a forked child drops to with
os.setresgid/os.setresuid. The object always lives in a separate creator process: the forked
child must not inherit a mapping or a broker connection that the parent made as root.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import pathlib
import shutil
import socket
import stat
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
import pytest
from conftest import DEADLINE, describe_here

import shoal
from shoal import _shoal

OTHER = 65534  # nobody / nogroup

needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="dropping to another uid needs root (CI runs as root)"
)

# The broker's reply to a refused connection (src/layout/protocol_layout.hpp, WireMsg).
WIRE_SIZE = 256
WIRE_MAGIC = 0x4B424853
OP_HELLO = 1
ERRC_PERMISSION = 12  # shoal::Errc::kPermission
TEXT_OFFSET = 64


# --- a creator in its own process -------------------------------------------------------------

_CREATOR = r"""
import sys
from shoal import _shoal
seg = _shoal.Segment.create(4096)
with memoryview(seg) as mv:
    mv[:6] = b"secret"
print(seg.handle(), seg.session, flush=True)
sys.stdin.read()  # hold the object until the test closes our stdin
"""


class Creator:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _CREATOR],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.handle, self.session = self.proc.stdout.readline().split()

    def stop(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        self.proc.wait(DEADLINE)
        self.proc.stdout.close()


@pytest.fixture
def creator() -> Iterator[Creator]:
    c = Creator()
    yield c
    c.stop()


# --- children that drop to another uid --------------------------------------------------------


def _become_other_user() -> None:
    os.setgroups([])
    os.setresgid(OTHER, OTHER, OTHER)
    os.setresuid(OTHER, OTHER, OTHER)


def _outcome(fn: Callable[[], Any]) -> tuple[str, str]:
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - the test checks type and message
        return type(e).__name__, str(e)
    return "ok", ""


def _connect(sock_path: str) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
        s.connect(sock_path)


def _child_attach(conn: Connection, handle: str, sock_path: str) -> None:
    _become_other_user()
    conn.send(
        {
            "uid": os.getuid(),
            "attach": _outcome(lambda: _shoal.Segment.attach(handle)),
            "connect": _outcome(lambda: _connect(sock_path)),
        }
    )


def _child_raw_hello(conn: Connection, sock_path: str) -> None:
    """Connect to the broker as another uid without shoal's client, and read its answer."""
    _become_other_user()
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
        s.settimeout(DEADLINE)
        s.connect(sock_path)
        # A kHello (magic "SHBK", version 1, op 1; the rest zero): the broker answers another
        # uid's first message with its refusal, then closes.
        s.send(struct.pack("<IHH", 0x4B424853, 1, 1) + bytes(248))
        reply = s.recv(4096)
        after = s.recv(4096)  # the broker has closed the connection: EOF
    conn.send((reply, after))


def _child_client_via_own_dir(
    conn: Connection, handle: str, sock_path: str, session: str, cpu: int, attempts: int
) -> None:
    """shoal's client as another uid: a runtime directory of its own (its client refuses one
    that belongs to someone else) whose socket entry leads to the real broker. Each attempt
    is a new connection (a refused one is never kept); sends the distinct outcomes.

    It runs as SCHED_IDLE on the broker's CPU, so the broker, once woken by the connect,
    runs to the end of its refusal before the client goes on: the order is always the same."""
    os.sched_setaffinity(0, {cpu})
    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    _become_other_user()
    d = tempfile.mkdtemp(prefix="shoal-other-", dir="/tmp")
    try:
        os.symlink(sock_path, os.path.join(d, f"{session}.sock"))
        os.environ["SHOAL_RUNTIME_DIR"] = d
        outcomes = {_outcome(lambda: _shoal.Segment.attach(handle)) for _ in range(attempts)}
        conn.send(sorted(outcomes))
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _run_as_other_user(target: Callable[..., None], *args: Any) -> Any:
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe()
    p = ctx.Process(target=target, args=(child, *args))
    p.start()
    child.close()
    try:
        assert parent.poll(DEADLINE), "the child did not answer"
        return parent.recv()
    finally:
        p.join(DEADLINE)
        assert p.exitcode == 0


@contextlib.contextmanager
def _opened_up(runtime_dir: str, creator: Creator) -> Iterator[str]:
    """The runtime directory searchable (0711) and the socket writable (0666) by everyone, as a
    careless admin might leave them: only the broker's own check is left. Restored after."""
    sock = os.path.join(runtime_dir, f"{creator.session}.sock")
    os.chmod(runtime_dir, 0o711)
    os.chmod(sock, 0o666)
    try:
        yield sock
    finally:
        os.chmod(runtime_dir, 0o700)
        os.chmod(sock, 0o600)


def _mode(path: str) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


# --- tests -------------------------------------------------------------------------------------


def test_runtime_files_are_the_owners_only(
    runtime_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    nested = os.path.join(runtime_dir, "a", "b")
    monkeypatch.setenv("SHOAL_RUNTIME_DIR", nested)
    old = os.umask(0)  # a permissive umask must not matter
    try:
        seg = _shoal.Segment.create(4096)
    finally:
        os.umask(old)
    for d in (os.path.join(runtime_dir, "a"), nested):
        assert _mode(d) == 0o700, d
        assert os.lstat(d).st_uid == os.geteuid()
    sock = os.path.join(nested, f"{seg.session}.sock")
    lock = os.path.join(nested, f"{seg.session}.lock")
    assert stat.S_ISSOCK(os.lstat(sock).st_mode) and _mode(sock) == 0o600
    assert stat.S_ISREG(os.lstat(lock).st_mode) and _mode(lock) == 0o600
    assert sorted(os.listdir(nested)) == sorted([os.path.basename(sock), os.path.basename(lock)])
    seg.close()


@pytest.mark.parametrize(
    ("mask", "mode"), [(0o077, 0o400), (0o027, 0o440), (0o022, 0o444), (0o000, 0o444)]
)
def test_saved_files_are_read_only_within_the_umask(
    tmp_path: pathlib.Path, mask: int, mode: int
) -> None:
    # A saved file is the user's data, not shoal's: under umask 077 nobody else may read it.
    # It is never writable (a careless open(path, "w") must not truncate it under a reader) and
    # never wider than 0444, whatever the umask. The same path writes every root: a tree, an
    # ndarray, a shoal.Array.
    roots = {"tree": {"a": [1, 2]}, "ndarray": np.arange(6.0), "array": shoal.share(np.ones(3))}
    old = os.umask(mask)
    try:
        for name, obj in roots.items():
            shoal.save(obj, tmp_path / name)
    finally:
        os.umask(old)
    for name in roots:
        assert _mode(str(tmp_path / name)) == mode, (name, oct(_mode(str(tmp_path / name))))
    assert sorted(os.listdir(tmp_path)) == sorted(roots)  # no temporary file left behind
    assert shoal.load(tmp_path / "tree") == {"a": [1, 2]}


def test_a_runtime_dir_open_to_others_is_closed_on_create(
    runtime_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = os.path.join(runtime_dir, "open")
    os.mkdir(d)
    os.chmod(d, 0o755)
    monkeypatch.setenv("SHOAL_RUNTIME_DIR", d)
    seg = _shoal.Segment.create(4096)
    assert _mode(d) == 0o700
    seg.close()


_ATTACH_REPORT = r"""
import sys
from shoal import _shoal
try:
    _shoal.Segment.attach(sys.argv[1])
    print("attached")
except Exception as e:
    print(type(e).__name__, e)
"""


def test_attach_refuses_a_runtime_dir_open_to_others(runtime_dir: str, creator: Creator) -> None:
    os.chmod(runtime_dir, 0o755)
    try:
        r = subprocess.run(
            [sys.executable, "-c", _ATTACH_REPORT, creator.handle],
            capture_output=True,
            text=True,
            timeout=DEADLINE,
            check=False,
        )
    finally:
        os.chmod(runtime_dir, 0o700)
    assert r.stdout.strip() == (
        f"AccessDeniedError the directory {runtime_dir} is accessible "
        f"to other users; run `chmod 700 {runtime_dir}`"
    ), r.stderr


@needs_root
def test_another_uid_cannot_attach(runtime_dir: str, creator: Creator) -> None:
    sock = os.path.join(runtime_dir, f"{creator.session}.sock")
    got = _run_as_other_user(_child_attach, creator.handle, sock)
    assert got["uid"] == OTHER
    # shoal's client refuses the directory before it tries the socket...
    assert got["attach"] == (
        "AccessDeniedError",
        (
            f"the directory {runtime_dir} belongs to uid {os.geteuid()}, not to this user "
            f"(uid {OTHER}); set SHOAL_RUNTIME_DIR to a directory of your own"
        ),
    )
    # ...and the kernel would refuse the socket anyway (the directory is 0700).
    assert got["connect"][0] == "PermissionError"
    # The owner is unaffected.
    seg = _shoal.Segment.attach(creator.handle)
    with memoryview(seg) as mv:
        assert mv[:6].tobytes() == b"secret"
    seg.close()


@needs_root
def test_the_broker_refuses_another_uid(runtime_dir: str, creator: Creator) -> None:
    with _opened_up(runtime_dir, creator) as sock:
        reply, after = _run_as_other_user(_child_raw_hello, sock)
    assert len(reply) == WIRE_SIZE and after == b""
    magic, _version, op, status = struct.unpack_from("<IHHI", reply)
    assert (magic, op, status) == (WIRE_MAGIC, OP_HELLO, ERRC_PERMISSION)
    text = reply[TEXT_OFFSET:].split(b"\0", 1)[0].decode()
    assert text == f"the shoal session belongs to uid {os.geteuid()}; uid {OTHER} may not use it"
    # The refused peer never became a connection, and the owner is still served.
    seg = _shoal.Segment.attach(creator.handle)
    info = [s for s in _shoal.list_sessions() if s["id"] == creator.session]
    assert len(info) == 1 and info[0]["alive"]
    assert os.getpid() in [c["pid"] for c in describe_here(creator.session)["connections"]]
    with memoryview(seg) as mv:
        assert mv[:6].tobytes() == b"secret"
    seg.close()


@needs_root
def test_the_broker_refusal_reaches_the_client_as_access_denied(
    runtime_dir: str, creator: Creator
) -> None:
    with open(os.path.join(runtime_dir, f"{creator.session}.lock")) as f:
        broker = int(f.read())
    cpus = os.sched_getaffinity(broker)
    cpu = min(cpus)
    os.sched_setaffinity(broker, {cpu})
    try:
        with _opened_up(runtime_dir, creator) as sock:
            outcomes = _run_as_other_user(
                _child_client_via_own_dir, creator.handle, sock, creator.session, cpu, 20
            )
    finally:
        os.sched_setaffinity(broker, cpus)
    assert outcomes == [
        (
            "AccessDeniedError",
            f"the shoal session belongs to uid {os.geteuid()}; uid {OTHER} may not use it",
        )
    ]


def test_errors_are_shoal_errors() -> None:
    # AccessDeniedError is what `except PermissionError` catches, as users would expect.
    assert issubclass(shoal.AccessDeniedError, shoal.ShoalError)
    assert issubclass(shoal.AccessDeniedError, PermissionError)


@needs_root
@pytest.mark.parametrize("env", ["SHOAL_NAMED_DIR", "SHOAL_RUNTIME_DIR"])
def test_a_directory_of_another_user_is_refused_naming_the_variable_that_chose_it(
    monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest, env: str
) -> None:
    # Under /tmp directly: a runtime directory must be short enough for a socket path.
    top = pathlib.Path(tempfile.mkdtemp(prefix="shoal-sec-"))
    d = top / "theirs"
    d.mkdir(mode=0o700)
    os.chown(d, OTHER, OTHER)
    request.addfinalizer(lambda: shutil.rmtree(top))
    # In a child: a session this process already runs would not look at the directory again.
    monkeypatch.setenv(env, str(d))
    if env == "SHOAL_RUNTIME_DIR":
        monkeypatch.delenv("SHOAL_SESSION", raising=False)
    r = subprocess.run(
        [sys.executable, "-c", _REFUSED_DIR, env],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == (
        f"AccessDeniedError: the directory {d} belongs to uid {OTHER}, not to this user (uid 0); "
        f"set {env} to a directory of your own"
    )


_REFUSED_DIR = r"""
import sys
import shoal
from shoal import _shoal
try:
    if sys.argv[1] == "SHOAL_NAMED_DIR":
        _shoal.Segment.create_named("not-mine", 4096)
    else:
        _shoal.Segment.create(4096)
    print("created")
except shoal.ShoalError as e:
    print(f"{type(e).__name__}: {e}")
"""
