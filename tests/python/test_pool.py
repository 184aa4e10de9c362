"""shoal.Pool and shoal.ProcessPoolExecutor with real worker processes: multiprocessing.Pool's
API, initret, a worker killed (SIGKILL, os._exit, a segfault) failing only its task, unpicklable
results, maxtasksperchild, Ctrl-C, and nothing left behind."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import gc
import importlib.util
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Iterator
from multiprocessing.pool import MaybeEncodingError, RemoteTraceback  # type: ignore[attr-defined]
from typing import Any

import pytest
from conftest import (
    DEADLINE,
    _alive,
    ctrl_c_until_done,
    run_python,
    shmem_baseline,
    take_ctrl_c,
    wait_until,
)

import shoal
from shoal._tools.measure import machine_shmem


def sq(x: int) -> int:
    return x * x


def add(a: int, b: int = 0) -> int:
    return a + b


def boom(x: int) -> int:
    raise ValueError(f"bad {x}")


def ident(x: Any) -> Any:
    return x


def lookup(i: int, initret: dict[int, str]) -> int:
    return initret[i].count("1")


def lookup_kw(i: int, initret: Any = None, **kw: Any) -> Any:
    return (i, initret, kw)


def die_at(x: int, at: int, how: str, **_: Any) -> int:
    """Task x == at kills its worker, `how`; the others return x."""
    if x == at:
        if how == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif how == "exit":
            os._exit(7)
        else:
            ctypes.string_at(0)  # a segfault
        time.sleep(DEADLINE)
    return x


def pid_of(_: Any) -> int:
    return os.getpid()


def unpicklable(x: int) -> Any:
    return (lambda: x) if x == 1 else x


def test_the_api_under_each_start_method(ctx: mp.context.BaseContext) -> None:
    with shoal.Pool(2, context=ctx) as pool:
        assert pool.map(sq, range(200)) == [x * x for x in range(200)]
        assert pool.map(sq, []) == []
        assert pool.map(sq, range(50), chunksize=7) == [x * x for x in range(50)]
        assert list(pool.imap(sq, iter(range(500)))) == [x * x for x in range(500)]
        assert sorted(pool.imap_unordered(sq, range(500), 3)) == [x * x for x in range(500)]
        assert pool.starmap(add, [(1, 2), (3, 4)]) == [3, 7]
        assert pool.apply(add, (1,), {"b": 5}) == 6
        assert pool.submit(add, 2, b=3).result(DEADLINE) == 5
        got: list[Any] = []
        r = pool.apply_async(add, (2, 2), callback=got.append)
        assert r.get(DEADLINE) == 4 and r.ready() and r.successful() and got == [4]
        errs: list[BaseException] = []
        m = pool.map_async(boom, range(3), error_callback=errs.append)
        m.wait(DEADLINE)
        assert m.ready() and not m.successful()
        with pytest.raises(ValueError, match="bad") as ei:
            m.get()
        assert isinstance(ei.value.__cause__, RemoteTraceback)
        assert "in boom" in str(ei.value.__cause__)
        assert len(errs) == 1 and isinstance(errs[0], ValueError)
        # An exception in imap arrives at its place; the iteration goes on after it.
        it = pool.imap(boom, range(2))
        for _ in range(2):
            with pytest.raises(ValueError):
                next(it)
        with pytest.raises(StopIteration):
            next(it)
        # A big partial: its bound arguments travel once, through shared memory.
        big = functools.partial(lookup_kw, initret=b"x" * 100_000)
        assert [r[0] for r in pool.map(big, range(20))] == list(range(20))
    with pytest.raises(ValueError, match="not running"):
        pool.map(sq, [1])


def test_initret_the_seeds_proposed_solution(ctx: mp.context.BaseContext) -> None:
    cache = {i: bin(i) for i in range(2**12)}
    with shoal.Pool(2, initializer=ident, initargs=(cache,), initret=True, context=ctx) as pool:
        assert pool.map(lookup, range(2**12)) == [i.bit_count() for i in range(2**12)]
        # Every way of sending a task passes it.
        assert pool.apply(lookup, (5,)) == 2
        assert pool.submit(lookup, 7).result(DEADLINE) == 3
        assert pool.starmap(lookup, [(3,)]) == [2]
        assert list(pool.imap_unordered(lookup, [1])) == [1]
        with pytest.raises(TypeError, match="initret"):
            pool.apply(lookup_kw, (1,), {"initret": 3})
        with pytest.raises(TypeError, match="initret"):
            pool.map(functools.partial(lookup_kw, initret=3), [1])
    with pytest.raises(ValueError, match="initializer"):
        shoal.Pool(1, initret=True)
    # Without initret, the initializer's value is not passed.
    with shoal.Pool(1, initializer=ident, initargs=(1,), context=ctx) as pool:
        assert pool.apply(lookup_kw, (1,)) == (1, None, {})


@pytest.mark.parametrize("how", ["sigkill", "exit", "segfault"])
def test_a_dead_worker_fails_only_its_task(how: str) -> None:
    ctx = mp.get_context("fork")
    _dead_worker_case(ctx, how)


def test_a_killed_worker_is_replaced_and_reruns_the_initializer(
    ctx: mp.context.BaseContext,
) -> None:
    _dead_worker_case(ctx, "sigkill", initret=True)


def _dead_worker_case(ctx: mp.context.BaseContext, how: str, initret: bool = False) -> None:
    kw: dict[str, Any] = {}
    if initret:
        kw = {"initializer": ident, "initargs": ({i: bin(i) for i in range(64)},), "initret": True}
    with shoal.Pool(2, context=ctx, **kw) as pool:
        before = {p.pid for p in pool._workers.values()}
        # One chunk of 10: task 3 kills its worker, 4..9 were not started and run elsewhere.
        it = pool.imap(functools.partial(die_at, at=3, how=how), range(10), chunksize=10)
        out: list[Any] = []
        for _ in range(10):
            try:
                out.append(it.next(DEADLINE))
            except shoal.WorkerDiedError as e:
                out.append(e)
        err = out[3]
        assert isinstance(err, shoal.WorkerDiedError), out
        assert [x for i, x in enumerate(out) if i != 3] == [0, 1, 2, 4, 5, 6, 7, 8, 9]
        assert err.pid in before
        assert "task 3" in str(err) and str(err.pid) in str(err)
        if how == "sigkill":
            assert err.exitcode == -signal.SIGKILL and err.signal == "SIGKILL"
        elif how == "exit":
            assert err.exitcode == 7 and "exit code 7" in str(err)
        else:
            assert err.exitcode == -signal.SIGSEGV and err.signal == "SIGSEGV"
        # The pool goes on with a replacement worker (which ran the initializer again).
        assert wait_until(lambda: len(pool._workers) == 2)
        if initret:
            assert pool.map(lookup, range(64)) == [i.bit_count() for i in range(64)]
        else:
            assert pool.map(sq, range(100)) == [x * x for x in range(100)]
        # A future and an error callback get the error too.
        errs: list[BaseException] = []
        r = pool.apply_async(die_at, (1, 1, how), error_callback=errs.append)
        with pytest.raises(shoal.WorkerDiedError):
            r.get(DEADLINE)
        assert isinstance(errs[0], shoal.WorkerDiedError)
        f = pool.submit(die_at, 1, 1, how)
        assert isinstance(f.exception(DEADLINE), shoal.WorkerDiedError)
        assert isinstance(err, shoal.ShoalError)


def test_an_unpicklable_result_fails_only_its_task() -> None:
    with shoal.Pool(2, context="fork") as pool:
        out: list[Any] = []
        it = pool.imap(unpicklable, range(3), chunksize=3)
        for _ in range(3):
            try:
                out.append(next(it))
            except MaybeEncodingError as e:
                out.append(e)
        assert out[0] == 0 and out[2] == 2
        assert isinstance(out[1], MaybeEncodingError) and "lambda" in str(out[1])


def test_maxtasksperchild_counts_tasks_not_chunks(ctx: mp.context.BaseContext) -> None:
    with shoal.Pool(2, maxtasksperchild=4, context=ctx) as pool:
        pids = pool.map(pid_of, range(12), chunksize=6)
    assert len(pids) == 12
    assert max(pids.count(p) for p in set(pids)) <= 4
    assert len(set(pids)) >= 3


def test_executor(ctx: mp.context.BaseContext) -> None:
    with shoal.ProcessPoolExecutor(2, mp_context=ctx) as ex:
        assert ex.submit(add, 1, b=2).result(DEADLINE) == 3
        assert list(ex.map(add, range(50), range(50))) == [2 * x for x in range(50)]
        assert list(ex.map(add, range(50), range(50), chunksize=8)) == [2 * x for x in range(50)]
        assert isinstance(ex.submit(boom, 1).exception(DEADLINE), ValueError)
    with pytest.raises(RuntimeError):
        ex.submit(add, 1)
    ex = shoal.ProcessPoolExecutor(1, mp_context=mp.get_context("fork"))
    futs = [ex.submit(time.sleep, 0.2) for _ in range(5)]
    ex.shutdown(wait=True, cancel_futures=True)
    assert any(f.cancelled() for f in futs) or all(f.done() for f in futs)
    assert all(f.done() for f in futs)


def test_close_and_join_wait_for_the_work() -> None:
    pool = shoal.Pool(2, context="fork")
    r = pool.map_async(sq, range(1000))
    pool.close()
    with pytest.raises(ValueError):
        pool.apply(sq, (1,))
    pool.join()
    assert r.get(0) == [x * x for x in range(1000)]
    assert not any(p.is_alive() for p in mp.active_children() if "shoal.Pool" in p.name)


def _hang(_: Any) -> None:
    time.sleep(DEADLINE)


def _interrupted_pool(method: str, ready: Any, result: Any, pids: Any) -> None:
    take_ctrl_c()
    pool = shoal.Pool(2, context=method)
    for i, p in enumerate(pool._workers.values()):
        pids[i] = p.pid
    ready.set()
    try:
        pool.map(_hang, range(4))
    except KeyboardInterrupt:
        result.value = 1
    else:
        result.value = 2


def test_ctrl_c_stops_the_workers_and_raises_keyboard_interrupt(
    ctx: mp.context.BaseContext,
) -> None:
    ready, result, pids = ctx.Event(), ctx.Value("i", 0), ctx.Array("i", 2)
    p = ctx.Process(target=_interrupted_pool, args=(ctx.get_start_method(), ready, result, pids))
    p.start()
    ctrl_c_until_done(p, ready, result)
    assert result.value == 1
    assert wait_until(lambda: not any(_alive(w) for w in pids[:]))


def _all_running(pool: shoal.Pool) -> bool:
    return all(row[0] == 1 for row in pool._slots.tolist())  # state RUNNING


@pytest.mark.serial
def test_terminate_leaves_no_process_and_no_shared_memory(ctx: mp.context.BaseContext) -> None:
    mib = 1 << 20
    base = shmem_baseline()
    with shoal.Pool(2, context=ctx) as pool:
        pids = [p.pid for p in pool._workers.values()]
        big = functools.partial(lookup_kw, initret=b"x" * (8 * mib))
        assert len(pool.map(big, range(4))) == 4
        r = pool.map_async(_hang, range(4), chunksize=1)
        # Both workers are inside a task (their slots say so) when the pool is terminated.
        assert wait_until(functools.partial(_all_running, pool))
    assert not any(_alive(w) for w in pids)
    with pytest.raises(RuntimeError, match="terminated"):
        r.get(DEADLINE)
    del pool, r, big
    gc.collect()
    assert wait_until(lambda: machine_shmem() <= base + 4 * mib), (machine_shmem() - base) // mib


class _Counted:
    """Counts its pickles here and its unpickles (in the workers) in a shoal.Value."""

    pickles = 0

    def __init__(self, unpickles: Any) -> None:
        self.unpickles = unpickles

    def __reduce__(self) -> Any:
        _Counted.pickles += 1
        return (_rebuild_counted, (self.unpickles,))


def _rebuild_counted(unpickles: Any) -> _Counted:
    unpickles.add(1)
    return _Counted(unpickles)


def _with_counted(x: int, counted: _Counted) -> int:
    return x


def test_a_calls_function_is_pickled_once_and_unpickled_once_per_worker() -> None:
    unpickles = shoal.Value("q", 0)
    with shoal.Pool(2, context="spawn") as pool:
        _Counted.pickles = 0
        fn = functools.partial(_with_counted, counted=_Counted(unpickles))
        assert pool.map(fn, range(3000), chunksize=10) == list(range(3000))
        assert list(pool.imap_unordered(sq, range(10))) is not None
        assert _Counted.pickles == 1
        assert 1 <= unpickles.value <= 2


def _first_of(counted: _Counted, x: int) -> int:
    return x


def test_an_argument_that_recurs_is_pickled_once_and_unpickled_once_per_worker() -> None:
    unpickles = shoal.Value("q", 0)
    counted = _Counted(unpickles)
    with shoal.Pool(2, context="spawn") as pool:
        # map: the same object as every task's argument.
        _Counted.pickles = 0
        assert pool.map(type, [counted] * 3000, chunksize=10) == [_Counted] * 3000
        assert _Counted.pickles == 1
        assert 1 <= unpickles.value <= 2
        # starmap: the same object in every task's tuple, chunks sized automatically.
        _Counted.pickles = 0
        unpickles.value = 0
        tasks = [(counted, i) for i in range(3000)]
        assert pool.starmap(_first_of, tasks) == list(range(3000))
        assert _Counted.pickles == 1
        assert 1 <= unpickles.value <= 2
        # imap over a generator (no length): found as it comes, at most one pickle more.
        _Counted.pickles = 0
        unpickles.value = 0
        got = list(pool.imap(_first_of_star, ((counted, i) for i in range(3000)), chunksize=10))
        assert got == list(range(3000))
        assert _Counted.pickles <= 2
        assert unpickles.value <= 4


def _first_of_star(t: tuple[Any, int]) -> int:
    return t[1]


class Big:
    pass


def test_the_pool_keeps_no_reference_to_a_recurring_argument_after_the_call() -> None:
    with shoal.Pool(2, context="fork") as pool:
        big = Big()
        ref = weakref.ref(big)
        assert pool.map(_is_big, [big] * 200) == [True] * 200
        assert list(pool.imap_unordered(_is_big, iter([big] * 200), chunksize=5)) == [True] * 200
        del big
        gc.collect()
        assert ref() is None


def _is_big(x: Any) -> bool:
    return type(x).__name__ == "Big"


def _sum_and_die(t: tuple[Any, int]) -> float:
    a, i = t
    if i == 7 and not os.environ.get("SHOAL_TEST_DIED"):
        os.environ["SHOAL_TEST_DIED"] = "1"
        os.kill(os.getpid(), signal.SIGKILL)
    return float(a[::97].sum()) + i


def test_one_shoal_array_to_many_tasks_costs_no_pin_and_one_attach_per_worker() -> None:
    import numpy as np
    from conftest import describe_here

    big = shoal.share(np.arange(1 << 16, dtype=np.float64))
    want = float(big[::97].sum())
    session = big.segment.session
    with shoal.Pool(2, context="spawn") as pool:
        assert pool.map(sq, range(4)) == [0, 1, 4, 9]  # the workers are connected
        before = describe_here(session)
        tasks = [(big, i) for i in range(100, 2100)]
        assert pool.map(_sum_and_die, tasks) == [want + i for i in range(100, 2100)]
        after = describe_here(session)
        assert int(after["pins_made"]) == int(before["pins_made"])  # held for the call: no pin
        assert int(after["attaches"]) - int(before["attaches"]) <= 2  # one per worker at most
        # Task 7 kills its worker: it alone fails; the rest of its chunk runs elsewhere, with
        # the array's reference sent again.
        got: list[Any] = []
        it = pool.imap(_sum_and_die, [(big, i) for i in range(2000)], chunksize=50)
        for _ in range(2000):
            try:
                got.append(it.next(DEADLINE))
            except shoal.WorkerDiedError as e:
                got.append(e)
    assert isinstance(got[7], shoal.WorkerDiedError)
    assert [g for i, g in enumerate(got) if i != 7] == [want + i for i in range(2000) if i != 7]


@pytest.mark.parametrize("kind", [True, "plain"])
def test_progress_shows_tasks_done_rate_and_eta_on_stderr(kind: object) -> None:
    code = (
        "import shoal, sys\n"
        "with shoal.Pool(2, context='fork') as pool:\n"
        f"    assert pool.map(abs, range(3000), progress={kind!r}) == list(range(3000))\n"
        f"    assert pool.starmap(max, [(i, 0) for i in range(500)], progress={kind!r})[-1] == 499\n"
        f"    it = pool.imap_unordered(abs, iter(range(700)), progress={kind!r})\n"
        "    assert sorted(it) == list(range(700))\n"
        f"    assert len(list(pool.imap(abs, range(300), progress={kind!r}))) == 300\n"
    )
    r = run_python(code)
    assert r.returncode == 0, r.stderr
    err = r.stderr
    for n in (3000, 500, 300):
        assert f"{n}/{n}" in err, err  # a bar with a total ends at it
    assert "700" in err  # an iterator of no length: a count
    if kind == "plain":
        assert "100% 3000/3000 tasks" in err and "tasks/s" in err and "ETA" in err, err
    elif importlib.util.find_spec("tqdm") is None:  # progress=True falls back to the plain bar
        assert "tasks/s" in err and "ETA" in err, err
    else:
        assert "task/s" in err or "s/task" in err, err  # tqdm's rate


def test_progress_refuses_what_it_does_not_know() -> None:
    with shoal.Pool(1, context="fork") as pool, pytest.raises(ValueError, match="progress"):
        pool.map(abs, range(3), progress="fancy")


def test_workers_exit_when_the_parent_is_killed() -> None:
    code = (
        "import os, signal, shoal\n"
        "pool = shoal.Pool(2, context='fork')\n"
        "assert pool.map(abs, range(10)) == list(range(10))\n"
        "print(*[p.pid for p in pool._workers.values()], flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    r = run_python(code)
    assert r.returncode == -signal.SIGKILL, r.stderr
    pids = [int(x) for x in r.stdout.split()]
    assert len(pids) == 2
    assert wait_until(lambda: not any(_alive(w) for w in pids))


def _interrupt(_: Any) -> None:
    raise KeyboardInterrupt


def test_big_chunks_and_result_batches_travel_outside_the_queues_rings() -> None:
    # The pool's rings are 256 KiB: a chunk or a batch over a quarter of that goes in a heap
    # block of the queue (docs/design/queue.md); both directions here, under and over it.
    with shoal.Pool(2, context="fork") as pool:
        sizes = [10, 70_000, 300_000, 1_000_000] * 3
        assert [len(b) for b in pool.map(bytes, sizes, chunksize=2)] == sizes
        blobs = [bytes([i]) * 200_000 for i in range(4)]
        assert pool.map(len, blobs, chunksize=4) == [200_000] * 4


@pytest.mark.asan
def test_the_workers_c_loop_stores_each_index_and_returns_a_tasks_error() -> None:
    # _shoal.run_tasks, the loop a worker runs a chunk with (the pool's tests above run it
    # through real workers; this checks its contract and its refusals directly).
    from shoal import _shoal

    seg = _shoal.Segment.create(16)  # a table of two int64 words
    words = memoryview(seg).cast("q")
    out: list[Any] = []
    assert _shoal.run_tasks(abs, [-1, -2, -3], 0, 3, False, seg, 1, 7, out) == (3, None)
    assert out == [1, 2, 3] and words[1] == 9  # the last task's index
    out = []
    stop, exc = _shoal.run_tasks(int, ["1", "x", "3"], 0, 3, False, seg, 0, 40, out)
    assert stop == 1 and isinstance(exc, ValueError)
    assert out == [1] and words[0] == 41  # stopped at the failing task, its index stored
    stop, exc = _shoal.run_tasks(boom, [5], 0, 1, False, seg, 0, 0, [])
    assert stop == 0 and "bad 5" in str(exc)
    assert exc is not None and exc.__traceback__ is not None  # boom's frame, for the parent
    out = []
    assert _shoal.run_tasks(pow, [(2, 3), [2, 2], iter((3, 2))], 0, 3, True, seg, 0, 0, out)[0] == 3
    assert out == [8, 4, 9]
    with pytest.raises(shoal.InvalidArgumentError, match="slot word"):
        _shoal.run_tasks(abs, [1], 0, 1, False, seg, 2, 0, [])
    with pytest.raises(IndexError):
        _shoal.run_tasks(abs, [1], 0, 2, False, seg, 0, 0, [])
    with pytest.raises(KeyboardInterrupt):  # not a task's error: it stops the worker
        _shoal.run_tasks(_interrupt, [1], 0, 1, False, seg, 0, 0, [])
    words.release()
    seg.close()


_PROBE = """
import sys

def loaded(_):
    return sorted(m for m in ("numpy", "concurrent.futures", "shoal._array", "shoal._pool")
                  if m in sys.modules)
"""


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_a_spawn_worker_does_not_import_numpy(method: str, tmp_path: Any) -> None:
    # A spawn or forkserver worker imports only the worker's side of the pool (its start-up is
    # compared with multiprocessing's, which imports no numpy): not numpy, not the parent's side.
    # The parent here imports shoal and starts the pool without touching numpy either.
    (tmp_path / "probe_mod.py").write_text(_PROBE)
    code = (
        "import sys, shoal, probe_mod\n"
        f"with shoal.Pool(2, context={method!r}) as pool:\n"
        "    print(pool.map(probe_mod.loaded, range(4), chunksize=1))\n"
        "print('numpy' in sys.modules)\n"
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])
    r = run_python(code, env=env)
    assert r.returncode == 0, r.stderr
    workers, parent = r.stdout.splitlines()
    assert workers == str([[]] * 4)
    assert parent == "False"


def _take_and_die(tasks: Any) -> None:
    tasks.get()  # a chunk taken by a process that dies before any slot names it
    os._exit(1)


def test_a_chunk_taken_by_a_process_that_died_is_sent_again() -> None:
    ctx = mp.get_context("fork")
    with shoal.Pool(1, context=ctx) as pool:
        hold = pool.apply_async(time.sleep, (0.5,))  # the one worker is busy meanwhile
        assert wait_until(functools.partial(_all_running, pool))
        r = pool.map_async(sq, range(10), chunksize=10)
        assert wait_until(lambda: pool._tasks.qsize() == 1)
        thief = ctx.Process(target=_take_and_die, args=(pool._tasks,))
        thief.start()
        thief.join(DEADLINE)
        assert thief.exitcode == 1 and pool._tasks.qsize() == 0
        assert r.get(DEADLINE) == [x * x for x in range(10)]
        hold.get(DEADLINE)


def test_a_pool_left_open_at_exit_ends_cleanly() -> None:
    code = (
        "import shoal\n"
        "pool = shoal.Pool(2, context='fork')\n"
        "assert pool.map(abs, range(10)) == list(range(10))\n"
        "print(*[p.pid for p in pool._workers.values()], flush=True)\n"
    )
    r = run_python(code)
    assert r.returncode == 0, r.stderr
    assert "leaked" not in r.stderr, r.stderr
    pids = [int(x) for x in r.stdout.split()]
    assert len(pids) == 2
    assert wait_until(lambda: not any(_alive(w) for w in pids))


def _bad_init() -> None:
    raise OSError("no cache here")


def test_an_initializer_that_raises_fails_the_calls_instead_of_hanging(
    ctx: mp.context.BaseContext,
) -> None:
    with shoal.Pool(2, initializer=_bad_init, context=ctx) as pool:
        with pytest.raises(OSError, match="no cache here") as ei:
            pool.map(sq, range(10))
        assert isinstance(ei.value.__cause__, RemoteTraceback)
        with pytest.raises(OSError, match="no cache here"):
            pool.apply(sq, (1,))


def _nap(x: int) -> int:
    time.sleep(0.001)
    return x


def test_workers_killed_at_random_never_lose_or_hang_a_task() -> None:
    with shoal.Pool(3, context="fork") as pool:
        stop = threading.Event()

        def killer() -> None:
            while not stop.wait(0.05):
                for p in list(pool._workers.values())[:1]:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(p.pid, signal.SIGKILL)

        t = threading.Thread(target=killer)
        t.start()
        try:
            it = pool.imap(_nap, range(1500))
            died = 0
            for i in range(1500):
                try:
                    assert it.next(DEADLINE) == i
                except shoal.WorkerDiedError:
                    died += 1
        finally:
            stop.set()
            t.join()
        assert died < 1500
        with pytest.raises(StopIteration):
            next(it)


def _sleep_ret(x: int) -> int:
    time.sleep(0.05)
    return x


def _sizes(pool: shoal.Pool) -> list[int]:
    """The sizes of the chunks the pool's last call was sent in."""
    log = list(pool._chunk_log)
    last = log[-1][0]
    return [size for job, size in log if job == last]


def test_automatic_chunks_batch_tiny_tasks_and_not_long_ones() -> None:
    with shoal.Pool(2, context="fork") as pool:
        # Long tasks travel one per chunk: the first chunks (nothing measured yet) are one
        # task each, and 50 ms a task asks for chunks of one.
        assert sorted(pool.imap_unordered(_sleep_ret, range(12))) == list(range(12))
        assert _sizes(pool) == [1] * 12
        # Tiny ones are batched once the first chunks have measured them: 20 000 tasks in a few
        # dozen messages, not 20 000 (map: at most a quarter of a worker's share each).
        n = 20_000
        assert pool.map(abs, range(n)) == list(range(n))
        sizes = _sizes(pool)
        assert sum(sizes) == n and sizes[0] == 1
        assert len(sizes) < n // 50 and max(sizes) <= n // 8, sizes
        assert sorted(pool.imap_unordered(abs, iter(range(n)))) == list(range(n))
        sizes = _sizes(pool)
        assert sum(sizes) == n and len(sizes) < n // 50, sizes
        # A given chunksize is used as is.
        assert pool.map(abs, range(100), chunksize=7) == list(range(100))
        assert _sizes(pool) == [7] * 14 + [2]


def _first_slow_then_wait(x: int, go: Any) -> int:
    if x == 0:
        time.sleep(0.05)  # longer than a worker holds a result (_FLUSH_SECONDS)
    else:
        go.wait(DEADLINE)
    return x


def test_a_long_chunk_streams_its_results() -> None:
    # One chunk of 5: task 0 takes 50 ms, tasks 1..4 wait for the test. Task 0's result comes
    # while the chunk runs (the worker sends what it holds every _FLUSH_SECONDS), not at its end.
    go = shoal.Event()
    with shoal.Pool(1, context="fork") as pool:
        it = pool.imap(functools.partial(_first_slow_then_wait, go=go), range(5), chunksize=5)
        assert it.next(DEADLINE) == 0
        go.set()
        assert list(it) == [1, 2, 3, 4]


class _Runs:
    """How many times each task ran, counted in shared memory by every worker."""

    def __init__(self, n: int) -> None:
        import numpy as np

        self.lock = shoal.Lock()
        self.counts = shoal.zeros(n, dtype=np.int64)

    def add(self, x: int) -> int:
        with self.lock:
            self.counts[x] += 1
            return int(self.counts[x])


def _count_run(x: int, runs: _Runs) -> int:
    runs.add(x)
    if x == 3:
        time.sleep(0.8)  # several sweeps (_SWEEP_SECONDS) with no result coming
    return x


def test_results_held_in_a_running_chunk_are_not_taken_for_lost() -> None:
    # Tasks 0..2 are quick and their results wait in the worker's batch while task 3 runs for
    # 0.8 s: the parent's sweep for lost tasks must not send them again.
    runs = _Runs(4)
    with shoal.Pool(1, context="fork") as pool:
        fn = functools.partial(_count_run, runs=runs)
        assert pool.map(fn, range(4), chunksize=4) == [0, 1, 2, 3]
    assert runs.counts.tolist() == [1, 1, 1, 1]


def _die_after_batch(x: int, at: int, runs: _Runs) -> int:
    if runs.add(x) == 1 and x == at:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def test_a_death_sends_again_the_results_the_worker_held_and_fails_the_running_task() -> None:
    # A chunk of 8: tasks 0..4 ran and their results were still in the worker's batch when
    # task 5 killed it. Task 5 fails with WorkerDiedError; 0..4 run again (at least once), 6 and
    # 7 run once, elsewhere; every other task gets its result.
    runs = _Runs(8)
    with shoal.Pool(2, context="fork") as pool:
        fn = functools.partial(_die_after_batch, at=5, runs=runs)
        out = list(_results(pool.imap(fn, range(8), chunksize=8), 8))
    assert isinstance(out[5], shoal.WorkerDiedError) and "task 5" in str(out[5])
    assert [x for i, x in enumerate(out) if i != 5] == [0, 1, 2, 3, 4, 6, 7]
    assert runs.counts.tolist() == [2, 2, 2, 2, 2, 1, 1, 1]


def _results(it: Any, n: int) -> Iterator[Any]:
    """n results of an imap iterator, a task's error in its place."""
    for _ in range(n):
        try:
            yield it.next(DEADLINE)
        except Exception as e:  # noqa: BLE001 - the error is the result looked at
            yield e


def _unpicklable_some(x: int) -> Any:
    if x % 3 == 1:
        return lambda: x
    if x == 5:
        raise KeyError(x)
    return x


def test_unpicklable_results_fail_only_their_tasks_in_a_batch() -> None:
    with shoal.Pool(1, context="fork") as pool:
        out = list(_results(pool.imap(_unpicklable_some, range(9), chunksize=9), 9))
    for i, r in enumerate(out):
        if i % 3 == 1:
            assert isinstance(r, MaybeEncodingError), (i, r)
        elif i == 5:
            assert isinstance(r, KeyError), (i, r)
        else:
            assert r == i


def _init_counted(counted: _Counted) -> None:
    pass


def test_initargs_are_pickled_once_for_the_pool_and_unpickled_once_per_worker() -> None:
    unpickles = shoal.Value("q", 0)
    _Counted.pickles = 0
    counted = _Counted(unpickles)
    with shoal.Pool(2, initializer=_init_counted, initargs=(counted,), context="spawn") as pool:
        assert pool.map(sq, range(10)) == [x * x for x in range(10)]
        assert wait_until(lambda: unpickles.value == 2)
        assert _Counted.pickles == 1
        # A replacement unpickles the same pickle: no pickle more.
        os.kill(next(iter(pool._workers.values())).pid, signal.SIGKILL)
        assert wait_until(lambda: unpickles.value == 3)
        assert pool.map(sq, range(10)) == [x * x for x in range(10)]
        assert _Counted.pickles == 1


def _init_with_lock(lock: Any) -> None:
    with lock:
        pass


def test_initargs_that_pickle_only_while_spawning_still_work(ctx: mp.context.BaseContext) -> None:
    # multiprocessing's Lock refuses a pickle outside a process start: it goes to each worker
    # as multiprocessing's pool gives it.
    with shoal.Pool(1, initializer=_init_with_lock, initargs=(ctx.Lock(),), context=ctx) as pool:
        assert pool.map(sq, range(10)) == [x * x for x in range(10)]


def _exit_init() -> None:
    os._exit(3)


def test_workers_that_die_before_their_initializer_returns_break_the_pool(
    ctx: mp.context.BaseContext,
) -> None:
    # The initializer ends its process: multiprocessing's pool would start workers for ever.
    with shoal.Pool(1, initializer=_exit_init, context=ctx) as pool:
        with pytest.raises(shoal.BrokenPoolError, match="exit code 3") as ei:
            pool.map(sq, range(10))
        assert ei.value.exitcode == 3 and ei.value.deaths == 3
        assert isinstance(ei.value, shoal.ShoalError)
        with pytest.raises(shoal.BrokenPoolError):
            pool.apply(sq, (1,))
        assert wait_until(lambda: not pool._workers)  # none started again


def test_a_broken_executor_raises_broken_process_pool() -> None:
    from concurrent.futures.process import BrokenProcessPool

    ctx = mp.get_context("fork")
    with shoal.ProcessPoolExecutor(2, mp_context=ctx, initializer=_exit_init) as ex:
        assert isinstance(ex.submit(sq, 2).exception(DEADLINE), BrokenProcessPool)
        with pytest.raises(BrokenProcessPool):
            ex.submit(sq, 2)


def test_a_spawn_child_that_cannot_start_breaks_the_pool(tmp_path: Any) -> None:
    # The child dies importing the main module (as __mp_main__), before the worker runs.
    script = tmp_path / "main.py"
    script.write_text(
        "import os\n"
        "if __name__ != '__main__':\n"
        "    os._exit(4)\n"
        "import shoal\n"
        "with shoal.Pool(1, context='spawn') as pool:\n"
        "    try:\n"
        "        pool.map(abs, range(10))\n"
        "    except shoal.BrokenPoolError as e:\n"
        "        print('broken', e.exitcode, flush=True)\n"
        "    else:\n"
        "        print('not broken', flush=True)\n"
    )
    r = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "broken 4", (r.stdout, r.stderr)
