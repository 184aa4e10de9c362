"""A C++ process and a Python process at the two ends of one shoal.Queue, both ways
(tests/cpp/programs/queue_peer.cpp: shoal::Queue of byte messages, the handle on argv).

C++ messages are bytes: what C++ puts, Python gets as `bytes`; what Python puts as `bytes`,
C++ gets byte for byte. Some messages are large enough to travel out of band. The program
comes from the dev build (`make dev`); this file builds nothing and skips, saying so, when
the program is absent.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from conftest import DEADLINE, cpp_env

import shoal
from shoal import _shoal

N = 200
_PEER = Path(__file__).resolve().parents[2] / "build" / "dev" / "tests" / "cpp" / "queue_peer"


def message(i: int) -> bytes:
    """queue_peer.cpp's message(i)."""
    extra = (300 << 10) if i % 16 == 15 else (i * 37) % 500
    return f"m{i}:".encode() + bytes((i * 31 + j * 7) & 0xFF for j in range(extra))


def peer(mode: str, handle: str, *, session: bool = True) -> subprocess.Popen[str]:
    """queue_peer MODE HANDLE N. With `session`, it is told this process's session
    (SHOAL_SESSION), as a process multiprocessing starts inherits it: the blocks its out-of-band
    messages need are created there, with the queue."""
    if not os.access(_PEER, os.X_OK):
        pytest.skip(f"{_PEER} is not built: run `make dev` first")
    env = cpp_env()
    current = _shoal.current_session()
    if session and current:
        env["SHOAL_SESSION"] = current
    else:
        env.pop("SHOAL_SESSION", None)
    return subprocess.Popen(
        [str(_PEER), mode, handle, str(N)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def finish(p: subprocess.Popen[str]) -> tuple[int, str, str]:
    try:
        out, err = p.communicate(timeout=DEADLINE)
    finally:
        p.kill()
        p.wait()
    return p.returncode, out, err


def test_cpp_producer_python_consumer_gets_bytes() -> None:
    q = shoal.Queue()
    p = peer("produce", q.handle())
    try:
        got = [q.get(timeout=DEADLINE) for _ in range(N)]
    finally:
        code, out, err = finish(p)
    assert code == 0, err
    assert out.split() == ["done", str(N)]
    assert all(type(m) is bytes for m in got)
    assert got == [message(i) for i in range(N)]
    assert q.empty()


def test_python_producer_cpp_consumer_gets_the_same_bytes() -> None:
    q = shoal.Queue()
    p = peer("consume", q.handle())
    for i in range(N):  # at the same time as the C++ consumer takes them
        q.put(message(i))
    code, out, err = finish(p)
    assert code == 0, err
    assert out.split() == ["ok", str(N)]
    assert q.empty()


def test_many_from_python_one_by_one_in_cpp() -> None:
    q = shoal.Queue()
    p = peer("consume", q.handle())
    q.put_many([message(i) for i in range(N)])
    code, out, err = finish(p)
    assert code == 0, err
    assert out.split() == ["ok", str(N)]


def test_cpp_producer_outside_the_session_puts_out_of_band_messages() -> None:
    # A process that did not inherit SHOAL_SESSION is in a session of its own; the queue's heap
    # must still grow (out-of-band blocks) in the queue's session, where its root lives.
    q = shoal.Queue()
    p = peer("produce", q.handle(), session=False)
    try:
        got = [q.get(timeout=10) for _ in range(N)]
    finally:
        code, _, err = finish(p)
    assert code == 0, err
    assert got == [message(i) for i in range(N)]
