"""shoal.hold: one object sent many times with no pin and no broker round trip per send.

Outside a hold every pickle pins (one kPin round trip, one pin); inside one, pickling writes a
held handle, the same text each time, and a connected receiver maps it from the hint without a
round trip either. The broker's own counters (kList: pins_made, attaches, holds) prove it.
Design note: docs/design/segment.md, "Held handles".
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import signal
import subprocess
import sys
import textwrap
from typing import Any

import numpy as np
import pytest
from conftest import DEADLINE, describe_here, wait_until

import shoal
from shoal import _shoal


def _counters(session: str) -> dict[str, int]:
    info = describe_here(session)
    return {k: int(info[k]) for k in ("pins_made", "attaches", "holds", "hold_misses")}


def _handle_in(data: bytes) -> dict[str, object]:
    """The decoded handle a pickle of a shoal.Array carries."""
    start = data.index(b"shoal1:")
    end = start + 163 if data[start + 133 : start + 134] == b";" else start + 133
    return _shoal.decode_handle(data[start:end].decode())


def test_pickling_inside_a_hold_makes_no_pin_and_no_round_trip() -> None:
    a = shoal.share(np.arange(1000.0))
    session = a.segment.session
    before = _counters(session)
    pinned = pickle.dumps(a)
    assert _handle_in(pinned)["held"] is False
    assert _handle_in(pinned)["pin"] != 0
    assert _counters(session)["pins_made"] == before["pins_made"] + 1
    with shoal.hold(a) as h:
        assert h.active and a.segment.held
        first = pickle.dumps(a)
        for _ in range(200):
            assert pickle.dumps(a) == first  # the same text every time
        assert _handle_in(first)["held"] is True
        assert _handle_in(first)["pin"] == 0
        # Views and slices pickle through the same segment: held too.
        view = pickle.dumps(a[10:20:2])
        assert _handle_in(view)["held"] is True
        assert np.array_equal(pickle.loads(view), a[10:20:2])
        assert _counters(session)["pins_made"] == before["pins_made"] + 1
    # The hold ends with the block: pickling pins again.
    assert not h.active and not a.segment.held
    assert _handle_in(pickle.dumps(a))["held"] is False
    assert _counters(session)["pins_made"] == before["pins_made"] + 2
    h.release()  # idempotent


def _sync_task(args: tuple[Any, Any, Any]) -> int:
    lock, value, cond = args
    with lock:
        value.value += 1
    with cond:
        cond.notify_all()
    return 1


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_sync_objects_pickle_held_inside_a_hold(method: str) -> None:
    # A lock, a Value (with a lock of its own segment) and a Condition over a given RLock:
    # inside a hold of each, 200 tasks pickle them with no pin; every pickle is held.
    lock, rlock = shoal.Lock(), shoal.RLock()
    value = shoal.Value("q", 0, lock=shoal.Lock())
    cond = shoal.Condition(rlock)
    session = lock.segment().session
    ctx = mp.get_context(method)
    with ctx.Pool(2) as pool:
        before = _counters(session)
        with shoal.hold(lock) as h1, shoal.hold(value) as h2, shoal.hold(cond) as h3:
            assert h1.active and h2.active and h3.active
            data = pickle.dumps((lock, value, cond))
            assert data.count(b"shoal1:") == 5  # lock, value and its lock, cond and its rlock
            assert pickle.dumps((lock, value, cond)) == data
            got = pool.map(_sync_task, [(lock, value, cond)] * 200, chunksize=1)
        after = _counters(session)
    assert not (h1.active or h2.active or h3.active)
    assert sum(got) == 200 and value.value == 200
    assert after["pins_made"] == before["pins_made"]
    assert after["hold_misses"] == 0
    # Outside the hold, a pickle pins again.
    pickle.dumps(lock)
    assert _counters(session)["pins_made"] == after["pins_made"] + 1


def test_holds_nest_and_release_ends_one() -> None:
    a = shoal.zeros(10)
    outer = shoal.hold(a)
    inner = shoal.hold(a[2:])
    assert _handle_in(pickle.dumps(a))["held"] is True
    inner.release()
    assert a.segment.held  # the outer hold is still active
    outer.release()
    assert not a.segment.held
    assert "released" in repr(outer)
    with pytest.raises(TypeError):
        pickle.dumps(outer)


def test_frozen_views_and_their_arrays_pickle_held_inside_a_hold() -> None:
    f = shoal.freeze({"x": [1, 2, 3], "arr": np.arange(5)})
    with shoal.hold(f["x"]):  # any view of the image holds the whole image
        assert _handle_in(pickle.dumps(f))["held"] is True
        assert _handle_in(pickle.dumps(f["arr"]))["held"] is True
        assert pickle.loads(pickle.dumps(f["x"])) == [1, 2, 3]
    assert _handle_in(pickle.dumps(f))["held"] is False


def test_hold_refuses_what_does_not_pickle_as_a_handle(tmp_path: object) -> None:
    with pytest.raises(TypeError):
        shoal.hold(np.arange(3))
    with pytest.raises(ValueError, match="does not live in shared memory"):
        shoal.hold(np.zeros(3).view(shoal.Array))
    path = os.path.join(str(tmp_path), "f.shoal")
    shoal.save({"a": 1}, path)
    with pytest.raises(ValueError, match="path"):
        shoal.hold(shoal.load(path))


def _check(a: np.ndarray) -> tuple[int, float]:
    return os.getpid(), float(a[::997].sum())


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_pool_map_over_one_held_array(method: str) -> None:
    big = shoal.share(np.arange(1 << 18, dtype=np.float64))
    want = float(big[::997].sum())
    session = big.segment.session
    n = 1000
    workers = 2
    ctx = mp.get_context(method)
    with ctx.Pool(workers) as pool:
        before = _counters(session)
        with shoal.hold(big):
            # chunksize=1: one pickle per task (a chunk pickles a repeated object once).
            got = pool.map(_check, [big] * n, chunksize=1)
        after = _counters(session)
    assert [s for _, s in got] == [want] * n  # every task saw the data
    assert after["pins_made"] == before["pins_made"]  # no pin per task
    # Each worker connects once; a held handle needs no kAttach even then (the hint).
    assert after["attaches"] - before["attaches"] <= workers
    assert after["hold_misses"] == 0


def test_pool_map_without_a_hold_pins_per_task() -> None:
    big = shoal.share(np.arange(1000.0))
    session = big.segment.session
    with mp.get_context("spawn").Pool(1) as pool:
        before = _counters(session)
        pool.map(_check, [big] * 20, chunksize=1)
        after = _counters(session)
    assert after["pins_made"] - before["pins_made"] == 20


_SENDER = textwrap.dedent(
    """
    import pickle, sys, time
    import numpy as np
    import shoal
    a = shoal.share(np.arange(4096.0))
    h = shoal.hold(a)
    sys.stdout.write(pickle.dumps(a).hex() + "\\n")
    sys.stdout.flush()
    if sys.stdin.readline().strip() == "let go":
        h.release()
        del a
        sys.stdout.write("released\\n")
        sys.stdout.flush()
        sys.stdin.readline()
    else:
        time.sleep(3600)
    """
)


def _start_sender() -> tuple[subprocess.Popen[str], bytes]:
    p = subprocess.Popen(
        [sys.executable, "-c", _SENDER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert p.stdout is not None
    line = p.stdout.readline()
    assert line, "the sender did not start"
    return p, bytes.fromhex(line.strip())


def _stop(p: subprocess.Popen[str]) -> None:
    p.kill()
    p.wait(DEADLINE)
    for f in (p.stdin, p.stdout):
        if f is not None:
            f.close()


def test_a_held_handle_is_stale_once_its_sender_let_go() -> None:
    p, data = _start_sender()
    try:
        assert _handle_in(data)["held"] is True
        a = pickle.loads(data)  # while the sender holds it
        assert np.array_equal(a, np.arange(4096.0))
        session = a.segment.session
        object_id = a.segment.id
        del a  # let go here too, so that only the sender holds it
        assert p.stdin is not None and p.stdout is not None
        p.stdin.write("let go\n")
        p.stdin.flush()
        assert p.stdout.readline().strip() == "released"
        assert wait_until(
            lambda: all(o["id"] != object_id for o in describe_here(session)["objects"])
        )
        with pytest.raises(shoal.StaleHandleError, match="held handle is valid only while"):
            pickle.loads(data)
    finally:
        _stop(p)


def test_sigkill_of_the_sender_leaves_the_receivers_mapping_valid() -> None:
    p, data = _start_sender()
    try:
        a = pickle.loads(data)
        session = a.segment.session
        p.send_signal(signal.SIGKILL)
        p.wait(DEADLINE)
        assert np.array_equal(a, np.arange(4096.0))
        # Counted: this process holds it now, and can send it on.
        assert wait_until(
            lambda: (
                [o["holders"] for o in describe_here(session)["objects"] if o["id"] == a.segment.id]
                == [[os.getpid()]]
            )
        )
        assert np.array_equal(pickle.loads(pickle.dumps(a)), a)
    finally:
        _stop(p)
