"""shoal.Pipe and Connection: multiprocessing.Pipe's API and outcomes over shared memory, with
real processes (fork, spawn, forkserver) and real SIGKILLs. Design note: docs/design/queue.md,
"Ends" and "Pipe"."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import time
from multiprocessing.connection import wait
from typing import Any

import pytest
from conftest import DEADLINE, ctrl_c_until_done, run_python, take_ctrl_c, wait_until

import shoal
from shoal import _shoal

pytestmark = pytest.mark.usefixtures("runtime_dir")

BIG = 8 << 20


def _join(p: Any) -> None:
    p.join(DEADLINE)
    assert p.exitcode is not None, "child did not finish"


def _outcome(f: Any) -> Any:
    try:
        return ("ok", f())
    except Exception as e:  # noqa: BLE001  (the outcome is what is compared)
        return (type(e), str(e))


# ---- the stdlib's outcomes, compared call for call ---------------------------------------


def _scenario(pipe: Any) -> list[Any]:
    out: list[Any] = []
    a, b = pipe()
    out.append((a.readable, a.writable, a.closed))
    a.send({"x": [1, 2.5, "s"]})
    out.append(_outcome(b.recv))
    out.append(_outcome(lambda: b.poll(0)))
    a.send_bytes(b"0123456789", 2, 5)
    out.append(_outcome(b.recv_bytes))
    out.append(_outcome(lambda: a.send_bytes(b"abc", -1)))
    out.append(_outcome(lambda: a.send_bytes(b"abc", 4)))
    out.append(_outcome(lambda: a.send_bytes(b"abc", 1, -1)))
    out.append(_outcome(lambda: a.send_bytes(b"abc", 1, 3)))
    a.send_bytes(memoryview(bytearray(b"xyzw")).cast("B"))
    buf = bytearray(10)
    out.append(_outcome(lambda: b.recv_bytes_into(buf, 3)))
    out.append(bytes(buf))
    out.append(_outcome(lambda: b.recv_bytes_into(buf, 11)))
    out.append(_outcome(lambda: b.recv_bytes_into(buf, -1)))
    a.send_bytes(b"0123456789ab")
    try:
        b.recv_bytes_into(bytearray(4))
    except mp.BufferTooShort as e:
        out.append(("short", e.args[0]))
    a.send_bytes(b"")
    out.append(_outcome(b.recv_bytes))
    out.append(_outcome(lambda: b.recv_bytes(-1)))
    b.send("back")
    out.append(_outcome(a.recv))
    out.append(_outcome(lambda: a.poll(0.01)))
    b.close()
    out.append(_outcome(lambda: a.poll(1)))  # the other end closed: readable
    out.append(_outcome(a.recv))  # EOFError
    out.append(_outcome(lambda: a.send("x")))  # BrokenPipeError
    out.append(_outcome(b.recv))  # closed handle
    out.append(_outcome(b.fileno))
    out.append(b.closed)
    a.close()
    a.close()  # twice is fine
    r, w = pipe(False)
    out.append((r.readable, r.writable, w.readable, w.writable))
    out.append(_outcome(lambda: r.send(1)))
    out.append(_outcome(w.recv))
    with w:
        w.send(5)
    out.append(w.closed)
    out.append(_outcome(r.recv))
    out.append(_outcome(r.recv))  # end of stream
    r.close()
    # A message over maxlength: OSError, and the stdlib stops reading (what is left of the
    # message stays unread in its socket: nothing more is compared on this pair).
    a, b = pipe()
    a.send_bytes(b"toolong")
    out.append(_outcome(lambda: b.recv_bytes(3)))
    out.append((b.readable, b.writable))
    return out


def test_outcomes_are_the_stdlibs() -> None:
    mine = _scenario(shoal.Pipe)
    theirs = _scenario(mp.Pipe)
    for i, (m, t) in enumerate(zip(mine, theirs, strict=True)):
        if isinstance(t, tuple) and t[:1] == (BrokenPipeError,):
            assert m[0] is BrokenPipeError, i
            continue
        assert m == t, (i, m, t)


def test_recv_returns_what_was_sent_in_order() -> None:
    a, b = shoal.Pipe()
    for i in range(1000):
        a.send(i)
    assert [b.recv() for _ in range(1000)] == list(range(1000))
    assert not b.poll()
    a.close()
    b.close()


# ---- across processes: every start method ----------------------------------------------


def _echo(c: Any, delay: float) -> None:
    time.sleep(delay)  # the parent has closed its copy of c by then: c must still be open
    while (m := c.recv_bytes()) != b"stop":
        c.send_bytes(m)
    c.close()  # the parent's recv then raises EOFError


def test_echo_through_a_child_and_end_of_stream(ctx: mp.context.BaseContext) -> None:
    a, b = shoal.Pipe()
    p = ctx.Process(target=_echo, args=(b, 0.2))
    p.start()
    b.close()  # the child's copy keeps its end open, in transit included
    for m in (b"", b"x" * 100, os.urandom(300_000)):
        a.send_bytes(m)
        assert a.recv_bytes() == m
    # (Under fork the child holds a copy of `a` too, as it would a stdlib Pipe's descriptor:
    # closing ours would not end its stream.)
    a.send_bytes(b"stop")
    with pytest.raises(EOFError):
        a.recv_bytes()
    _join(p)
    assert p.exitcode == 0
    a.close()


def _send_and_exit(c: Any, n: int) -> None:
    for i in range(n):
        c.send(i)
    # no close: the process's exit (or death) ends its hold


def test_eof_after_the_writer_exits_without_closing(ctx: mp.context.BaseContext) -> None:
    r, w = shoal.Pipe(duplex=False)
    p = ctx.Process(target=_send_and_exit, args=(w, 3))
    p.start()
    w.close()
    assert [r.recv() for _ in range(3)] == [0, 1, 2]
    with pytest.raises(EOFError):
        r.recv()
    _join(p)


def _hold_and_sleep(c: Any, ready: Any) -> None:
    ready.set()
    time.sleep(DEADLINE * 10)


def test_eof_when_the_writer_is_sigkilled(ctx: mp.context.BaseContext) -> None:
    r, w = shoal.Pipe(duplex=False)
    ready = ctx.Event()
    p = ctx.Process(target=_hold_and_sleep, args=(w, ready))
    p.start()
    w.send("before")
    w.close()
    assert ready.wait(DEADLINE)
    assert r.recv() == "before"
    assert not r.poll(0.05)  # the child still holds the write end
    os.kill(p.pid, signal.SIGKILL)  # type: ignore[arg-type]
    with pytest.raises(EOFError):
        r.recv()
    assert r.poll()  # end of stream reads as readable, as the stdlib's
    _join(p)


def _recv_blocking(c: Any, other: Any, ready: Any, result: Any) -> None:
    other.close()  # a forked child inherits the write end too: close it, as with the stdlib's
    ready.set()
    try:
        c.recv()
        result.value = 1
    except EOFError:
        result.value = 2


def test_a_blocked_recv_wakes_with_eof_when_the_last_writer_dies(
    ctx: mp.context.BaseContext,
) -> None:
    r, w = shoal.Pipe(duplex=False)
    ready, result = shoal.Event(), shoal.Value("i", 0)
    holder_ready = ctx.Event()
    reader = ctx.Process(target=_recv_blocking, args=(r, w, ready, result))
    holder = ctx.Process(target=_hold_and_sleep, args=(w, holder_ready))
    reader.start()
    holder.start()
    r.close()
    w.close()
    assert ready.wait(DEADLINE) and holder_ready.wait(DEADLINE)
    assert not wait_until(lambda: result.value != 0, timeout=0.3)  # blocked, not ended
    os.kill(holder.pid, signal.SIGKILL)  # type: ignore[arg-type]
    _join(reader)
    assert result.value == 2
    _join(holder)


def _recv_ctrl_c(c: Any, ready: Any, result: Any) -> None:
    take_ctrl_c()
    ready.set()
    try:
        c.recv()
        result.value = 1  # must not happen: nothing is sent
    except KeyboardInterrupt:
        result.value = 2


def test_ctrl_c_interrupts_a_blocking_recv(ctx: mp.context.BaseContext) -> None:
    a, b = shoal.Pipe()
    ready, result = shoal.Event(), shoal.Value("i", 0)
    p = ctx.Process(target=_recv_ctrl_c, args=(b, ready, result))
    p.start()
    ctrl_c_until_done(p, ready, result)
    assert result.value == 2
    a.close()


def _flood(c: Any, ready: Any) -> None:
    payload = bytes(range(256)) * (BIG // 256)
    ready.set()
    while True:
        c.send_bytes(payload)


def test_sigkill_in_the_middle_of_send_bytes_never_wedges_the_pipe(
    ctx: mp.context.BaseContext,
) -> None:
    a, b = shoal.Pipe()
    ready = ctx.Event()
    p = ctx.Process(target=_flood, args=(b, ready))
    p.start()
    b.close()
    assert ready.wait(DEADLINE)
    expected = bytes(range(256)) * (BIG // 256)
    assert a.recv_bytes() == expected
    os.kill(p.pid, signal.SIGKILL)  # type: ignore[arg-type]  # mid-copy, most likely
    _join(p)
    # Whole messages, then end of stream: no half message, no hang.
    while True:
        try:
            assert a.recv_bytes() == expected
        except EOFError:
            break
    with pytest.raises(BrokenPipeError):  # its reader died too: seen within 64 sends
        for _ in range(1000):
            a.send(1)


def _echo_objects(c: Any) -> None:
    c.send(c.recv())
    c.close()


def test_big_messages(ctx: mp.context.BaseContext) -> None:
    np = pytest.importorskip("numpy")
    a, b = shoal.Pipe()
    p = ctx.Process(target=_echo_objects, args=(b,))
    p.start()
    arr = np.arange(BIG // 8, dtype=np.float64)
    a.send(arr)
    back = a.recv()
    assert back.dtype == arr.dtype and np.array_equal(back, arr)
    _join(p)
    big = os.urandom(1 << 20) * 100
    a.send_bytes(big)
    assert b.recv_bytes() == big
    a.close()
    b.close()


# ---- selectors --------------------------------------------------------------------------


def _send_later(c: Any, go: Any) -> None:
    go.wait(DEADLINE)
    c.send("ping")
    go.clear()
    go.wait(DEADLINE)


def test_multiprocessing_wait(ctx: mp.context.BaseContext) -> None:
    a, b = shoal.Pipe()
    c, d = shoal.Pipe()
    go = ctx.Event()
    p = ctx.Process(target=_send_later, args=(b, go))
    p.start()
    b.close()
    assert wait([a, c], 0.05) == []
    go.set()
    assert wait([a, c], DEADLINE) == [a]
    assert a.recv() == "ping"
    assert wait([a, c], 0.05) == []  # drained: not readable again
    d.send(1)
    assert wait([a, c], DEADLINE) == [c]
    assert c.recv() == 1
    os.kill(p.pid, signal.SIGKILL)  # type: ignore[arg-type]
    assert wait([a], DEADLINE) == [a]  # the writer's death reads as end of stream
    with pytest.raises(EOFError):
        a.recv()
    _join(p)


# ---- pickling: a handle that keeps the end open while it travels -------------------------


def _pool_send(c: Any, x: int) -> int:
    c.send(x * x)
    return x


def test_pool_argument_and_through_a_queue(ctx: mp.context.BaseContext) -> None:
    r, w = shoal.Pipe(duplex=False)
    with ctx.Pool(2) as pool:
        assert sorted(pool.starmap(_pool_send, [(w, i) for i in range(6)])) == list(range(6))
    assert sorted(r.recv() for _ in range(6)) == [i * i for i in range(6)]
    q = ctx.Queue()
    q.put(w)
    w2 = q.get(timeout=DEADLINE)
    w.close()
    w2.send("via queue")
    assert r.recv() == "via queue"
    sq = shoal.Queue()
    sq.put(w2)
    w3 = sq.get(timeout=DEADLINE)
    w2.close()
    w3.send("via shoal.Queue")
    assert r.recv() == "via shoal.Queue"
    w3.close()
    with pytest.raises(EOFError):
        r.recv()


def test_a_closed_connection_does_not_pickle() -> None:
    a, b = shoal.Pipe()
    a.close()
    with pytest.raises(OSError, match="closed"):
        mp.reduction.ForkingPickler.dumps(a)
    b.close()


def _poll_result(c: Any, result: Any) -> None:
    result.value = 2 if c.poll(0.05) else 1


def test_a_message_poll_took_stays_with_its_process(ctx: mp.context.BaseContext) -> None:
    a, b = shoal.Pipe()
    b.send("once")
    assert a.poll()  # taken out of the queue, held by this process's `a`
    result = shoal.Value("i", 0)
    p = ctx.Process(target=_poll_result, args=(a, result))
    p.start()
    _join(p)
    assert result.value == 1  # the child's copy (forked or rebuilt) has nothing to read
    assert a.recv() == "once"
    a.close()
    b.close()


_PIPE_AND_DIE = r"""
import json, os, signal
import shoal
a, b = shoal.Pipe()
print(json.dumps([n for n in os.listdir(os.environ["SHOAL_RUNTIME_DIR"]) if n.endswith(".fifo")]))
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_gc_removes_the_fifos_a_killed_session_left(runtime_dir: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SHOAL_SESSION"}
    env["SHOAL_RUNTIME_DIR"] = runtime_dir
    r = run_python(_PIPE_AND_DIE, env=env)
    assert r.returncode == -signal.SIGKILL, r.stderr
    fifos = json.loads(r.stdout)
    assert len(fifos) == 2
    assert set(fifos) <= set(os.listdir(runtime_dir))  # the killed holder left them
    # Once its broker has gone (no process left in the session), gc removes them.
    assert wait_until(lambda: _shoal.gc() >= 0 and not set(fifos) & set(os.listdir(runtime_dir)))
    a, b = shoal.Pipe()  # a live session's FIFOs stay
    _shoal.gc()
    assert len([n for n in os.listdir(runtime_dir) if n.endswith(".fifo")]) == 2
    a.close()
    b.close()
    assert not [n for n in os.listdir(runtime_dir) if n.endswith(".fifo")]  # the last close
