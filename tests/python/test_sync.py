"""shoal.Lock, RLock, Semaphore, BoundedSemaphore, Event, Condition, Barrier and Value (issue
14's drop-in primitives) between real processes, under fork, spawn and forkserver. No timing
assertions: waits poll with generous deadlines (conftest.DEADLINE)."""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import pickle
import signal
import threading
import warnings
from typing import Any

import pytest
from conftest import DEADLINE, ctrl_c_until_done, take_ctrl_c, wait_until

import shoal

pytestmark = pytest.mark.usefixtures("runtime_dir")


# ---- children (module level: picklable under spawn and forkserver) ----------------------------


def _hold_then_exit(lock: Any, held: Any, die: bool) -> None:
    lock.acquire()
    held.set()
    if die:
        os.kill(os.getpid(), signal.SIGKILL)
    threading.Event().wait(DEADLINE)


def _increment(lock: Any, value: Any, n: int) -> None:
    for _ in range(n):
        with lock:
            value.value = value.value + 1  # read, then write: exact only under the lock


def _atomic_add(value: Any, n: int) -> None:
    for _ in range(n):
        value.add(1)


def _set_event(event: Any) -> None:
    event.set()


def _notify_after(cond: Any, flag: Any) -> None:
    with cond:
        flag.value = 1
        cond.notify_all()


def _barrier_party(barrier: Any, out: Any) -> None:
    try:
        barrier.wait(DEADLINE)
        out.add(1)
    except threading.BrokenBarrierError:
        out.add(100)


def _wait_on_lock(lock: Any, ready: Any, result: Any) -> None:
    take_ctrl_c()
    ready.set()
    try:
        lock.acquire()
        result.value = 1  # must not happen: the parent holds the lock
    except KeyboardInterrupt:
        result.value = 2 if not lock._held else 3


def _wait_interrupted(obj: Any, ready: Any, result: Any) -> None:
    take_ctrl_c()
    ready.set()
    try:
        if isinstance(obj, shoal.Event):
            obj.wait()
        else:
            obj.acquire()
        result.value = 1
    except KeyboardInterrupt:
        result.value = 2


def _from_queue(q: Any, out: Any) -> None:
    lock, value = q.get(timeout=DEADLINE)
    with lock:
        value.value += 5
    out.set()


def _pool_task(args: tuple[Any, Any]) -> int:
    lock, value = args
    with lock:
        value.value += 1
    return 1


def _join(p: Any) -> None:
    p.join(DEADLINE)
    assert p.exitcode is not None, "child did not finish"


# ---- drop-in outcomes (one process) -----------------------------------------------------------


def test_lock_acquire_returns_false_on_timeout_and_without_block() -> None:
    lock = shoal.Lock()
    assert lock.acquire() is True
    assert lock.acquire(False) is False
    assert lock.acquire(True, 0.01) is False
    assert lock.acquire(block=True, timeout=0) is False
    assert lock.locked()
    lock.release()
    assert not lock.locked()
    with pytest.raises(ValueError):
        lock.release()


def test_rlock_is_recursive() -> None:
    r = shoal.RLock()
    assert r.acquire() and r.acquire()
    r.release()
    r.release()
    with pytest.raises(ValueError):
        r.release()


def test_semaphores() -> None:
    s = shoal.Semaphore(2)
    assert s.acquire() and s.acquire(timeout=0.01)
    assert s.acquire(timeout=0.01) is False
    assert s.get_value() == 0
    s.release()
    s.release()
    s.release()  # a plain semaphore may go above its initial value
    assert s.get_value() == 3
    b = shoal.BoundedSemaphore(1)
    assert b.acquire()
    b.release()
    with pytest.raises(ValueError):
        b.release()


def test_event_wait_returns_the_flag() -> None:
    e = shoal.Event()
    assert e.wait(0.01) is False
    e.set()
    assert e.is_set() and e.wait() is True and e.wait(0) is True
    e.clear()
    assert e.wait(0.01) is False


def test_condition_wait_and_wait_for() -> None:
    c = shoal.Condition()
    with c:
        assert c.wait(0.01) is False
        assert c.wait_for(lambda: 7, 0.01) == 7
        assert c.wait_for(lambda: 0, 0.01) == 0
    for wrong in (threading.Lock(), shoal.Condition(), shoal.Semaphore(), 1):
        with pytest.raises(TypeError, match="shoal.Lock or shoal.RLock"):
            shoal.Condition(wrong)  # type: ignore[arg-type]


def test_barrier_action_abort_reset() -> None:
    ran = []
    b = shoal.Barrier(1, action=lambda: ran.append(1))
    assert b.wait() == 0 and ran == [1]
    b2 = shoal.Barrier(2, timeout=0.01)
    with pytest.raises(threading.BrokenBarrierError):
        b2.wait()  # the default timeout passes: broken
    assert b2.broken
    b2.reset()
    assert not b2.broken
    b2.abort()
    with pytest.raises(threading.BrokenBarrierError):
        b2.wait(DEADLINE)
    assert b2.parties == 2

    def boom() -> None:
        raise RuntimeError("action")

    b3 = shoal.Barrier(1, action=boom)
    with pytest.raises(RuntimeError):
        b3.wait()
    assert b3.broken


@pytest.mark.parametrize("tc", ["i", "l", "d", "f", "b", "B", "h", "H", "I", "L", "q", "Q"])
def test_value_typecodes_and_atomics(tc: str) -> None:
    v = shoal.Value(tc, 5)
    assert v.value == 5
    assert v.add(2) == 7
    assert v.exchange(3) == 7
    assert v.compare_exchange(3, 4) is True and v.value == 4
    assert v.compare_exchange(3, 9) is False and v.value == 4
    obj = v.get_obj()
    obj.value = 6
    assert v.value == 6
    with v.get_lock():
        v.value += 1
    assert v.value == 7
    w = pickle.loads(pickle.dumps(v))
    assert w.value == 7 and isinstance(w.get_lock(), shoal.Lock)


def test_value_ctypes_types_and_locks() -> None:
    d = shoal.Value(ctypes.c_double, 1.5)
    assert d.add(1) == 2.5 and isinstance(d.get_obj(), ctypes.c_double)
    i = shoal.Value(ctypes.c_int)
    assert i.value == 0
    raw = shoal.Value("i", 1, lock=False)
    with pytest.raises(AttributeError):
        raw.get_lock()
    assert pickle.loads(pickle.dumps(raw)).value == 1
    given = shoal.RLock()
    g = shoal.Value("i", 1, lock=given)
    assert g.get_lock() is given
    g2 = pickle.loads(pickle.dumps(g))
    assert isinstance(g2.get_lock(), shoal.RLock)
    with pytest.raises(TypeError):
        shoal.Value("x", 1)


def test_shoal_attach_gives_each_type() -> None:
    objs = [
        shoal.Lock(),
        shoal.RLock(),
        shoal.Semaphore(),
        shoal.BoundedSemaphore(),
        shoal.Event(),
        shoal.Condition(),
        shoal.Barrier(2),
        shoal.Value("d", 2.0),
    ]
    for o in objs:
        assert type(shoal.attach(o.handle())) is type(o)  # type: ignore[attr-defined]


# ---- between processes ------------------------------------------------------------------------


def test_counter_under_a_lock_is_exact(ctx: mp.context.BaseContext) -> None:
    lock, value = shoal.Lock(), shoal.Value("i", 0, lock=False)
    ps = [ctx.Process(target=_increment, args=(lock, value, 500)) for _ in range(4)]
    for p in ps:
        p.start()
    for p in ps:
        _join(p)
        assert p.exitcode == 0
    assert value.value == 2000
    atomic = shoal.Value("q", 0)
    ps = [ctx.Process(target=_atomic_add, args=(atomic, 500)) for _ in range(4)]
    for p in ps:
        p.start()
    for p in ps:
        _join(p)
    assert atomic.value == 2000


def test_event_condition_barrier_across_processes(ctx: mp.context.BaseContext) -> None:
    e = shoal.Event()
    p = ctx.Process(target=_set_event, args=(e,))
    p.start()
    assert e.wait(DEADLINE) is True
    _join(p)

    cond, flag = shoal.Condition(), shoal.Value("i", 0)
    with cond:
        p = ctx.Process(target=_notify_after, args=(cond, flag))
        p.start()
        assert cond.wait_for(lambda: flag.value == 1, DEADLINE)
    _join(p)

    barrier, out = shoal.Barrier(3), shoal.Value("i", 0)
    ps = [ctx.Process(target=_barrier_party, args=(barrier, out)) for _ in range(2)]
    for p in ps:
        p.start()
    assert barrier.wait(DEADLINE) in (0, 1, 2)
    for p in ps:
        _join(p)
    assert out.value == 2

    barrier2, out2 = shoal.Barrier(3), shoal.Value("i", 0)
    p = ctx.Process(target=_barrier_party, args=(barrier2, out2))
    p.start()
    assert wait_until(lambda: barrier2.n_waiting == 1)
    barrier2.abort()
    _join(p)
    assert out2.value == 100


def test_through_a_queue_and_a_pool(ctx: mp.context.BaseContext) -> None:
    lock, value, done = shoal.Lock(), shoal.Value("i", 0), shoal.Event()
    q = ctx.Queue()
    p = ctx.Process(target=_from_queue, args=(q, done))
    p.start()
    q.put((lock, value))
    assert done.wait(DEADLINE)
    _join(p)
    assert value.value == 5
    with ctx.Pool(2) as pool:
        assert sum(pool.map(_pool_task, [(lock, value)] * 8)) == 8
    assert value.value == 13


def test_owner_died_warns_and_holds(ctx: mp.context.BaseContext) -> None:
    lock, held = shoal.Lock(), shoal.Event()
    p = ctx.Process(target=_hold_then_exit, args=(lock, held, True))
    p.start()
    assert held.wait(DEADLINE)
    _join(p)
    with pytest.warns(shoal.OwnerDiedWarning):
        assert lock.acquire(True, DEADLINE) is True
    assert lock.owner_died and lock.locked()
    lock.release()
    assert not lock.owner_died

    # on_owner_died="raise", through a pickle of the policy.
    lock2 = shoal.Lock(on_owner_died="raise")
    held2 = shoal.Event()
    p = ctx.Process(target=_hold_then_exit, args=(lock2, held2, True))
    p.start()
    assert held2.wait(DEADLINE)
    _join(p)
    with pytest.raises(shoal.OwnerDiedError):
        lock2.acquire(True, DEADLINE)
    assert lock2._held and lock2.owner_died
    lock2.release()


def test_rlock_owner_died(ctx: mp.context.BaseContext) -> None:
    r, held = shoal.RLock(), shoal.Event()
    p = ctx.Process(target=_hold_then_exit, args=(r, held, True))
    p.start()
    assert held.wait(DEADLINE)
    _join(p)
    with pytest.warns(shoal.OwnerDiedWarning):
        assert r.acquire(True, DEADLINE) is True
    assert r.owner_died and r.acquire()
    r.release()
    assert r.owner_died
    r.release()
    assert not r.owner_died


def test_with_releases_when_enter_raises(ctx: mp.context.BaseContext) -> None:
    lock, held = shoal.Lock(), shoal.Event()
    p = ctx.Process(target=_hold_then_exit, args=(lock, held, True))
    p.start()
    assert held.wait(DEADLINE)
    _join(p)
    with warnings.catch_warnings():
        warnings.simplefilter("error", shoal.OwnerDiedWarning)
        with pytest.raises(shoal.OwnerDiedWarning), lock:
            pytest.fail("the body must not run")
    assert not lock.locked()
    assert lock.acquire(False) is True
    lock.release()


@pytest.mark.parametrize("what", ["event", "semaphore"])
def test_ctrl_c_interrupts_event_and_semaphore_waits(
    ctx: mp.context.BaseContext, what: str
) -> None:
    obj: Any = shoal.Event() if what == "event" else shoal.Semaphore(0)
    ready, result = shoal.Event(), shoal.Value("i", 0)
    p = ctx.Process(target=_wait_interrupted, args=(obj, ready, result))
    p.start()
    ctrl_c_until_done(p, ready, result)
    assert result.value == 2
    if what == "semaphore":
        assert obj.get_value() == 0


def _event_and_semaphore_task(args: tuple[Any, Any, Any]) -> bool:
    event, sem, cond = args
    with sem, cond:
        cond.notify_all()
    return bool(event.wait(DEADLINE))


def test_a_dead_waiting_party_breaks_the_barrier(ctx: mp.context.BaseContext) -> None:
    barrier, out = shoal.Barrier(3), shoal.Value("i", 0)
    p = ctx.Process(target=_barrier_party, args=(barrier, out))
    p.start()
    assert wait_until(lambda: barrier.n_waiting == 1)
    assert p.pid is not None
    os.kill(p.pid, signal.SIGKILL)
    _join(p)
    with pytest.raises(threading.BrokenBarrierError):
        barrier.wait(DEADLINE)
    barrier.reset()
    assert not barrier.broken


def test_units_of_a_killed_holder_come_back_to_a_bounded_semaphore_only() -> None:
    # get_value() counts a dead holder's units as free at once, before any acquire runs short;
    # a plain Semaphore keeps the stdlib's meaning (a unit taken is gone until released).
    ctx = mp.get_context("fork")
    for cls, left in ((shoal.BoundedSemaphore, 2), (shoal.Semaphore, 1)):
        sem, held = cls(2), shoal.Event()
        p = ctx.Process(target=_hold_then_exit, args=(sem, held, True))
        p.start()
        assert held.wait(DEADLINE)
        _join(p)
        assert p.exitcode == -signal.SIGKILL
        assert sem.get_value() == left, cls
        assert [sem.acquire(False) for _ in range(3)] == [True] * left + [False] * (3 - left)


def test_event_semaphore_condition_as_pool_arguments(ctx: mp.context.BaseContext) -> None:
    event, sem, cond = shoal.Event(), shoal.BoundedSemaphore(2), shoal.Condition()
    event.set()
    with ctx.Pool(2) as pool:
        assert pool.map(_event_and_semaphore_task, [(event, sem, cond)] * 4) == [True] * 4
    assert sem.get_value() == 2


# ---- the C-level lock methods (shoal.Lock, RLock, Condition over _shoal.SyncLock) -------------


class _TaggedLock(shoal.Lock):
    """A user's subclass: extra state, its own __init__."""

    def __init__(self, tag: str) -> None:
        super().__init__()
        self.tag = tag


class _ForgetfulLock(shoal.Lock):
    def __init__(self) -> None:  # never calls super().__init__()
        pass


def test_lock_methods_run_no_python_frame() -> None:
    # The hot methods are the C base's own (a Python override would add a frame per call).
    base = shoal._shoal.SyncLock
    for cls in (shoal.Lock, shoal.RLock, shoal.Condition):
        for name in ("acquire", "release", "__enter__", "__exit__"):
            assert getattr(cls, name) is getattr(base, name), (cls, name)
        assert cls.owner_died is base.owner_died
        assert cls.__slots__ == ()
    assert shoal.Lock.locked is base._locked
    assert shoal.OwnerDiedWarning is shoal._shoal.OwnerDiedWarning
    assert issubclass(shoal.OwnerDiedWarning, RuntimeWarning)
    assert "half-updated" in (shoal.OwnerDiedWarning.__doc__ or "")


@pytest.mark.parametrize("kind", ["Lock", "RLock", "Condition"])
def test_acquire_arguments_as_multiprocessing(kind: str) -> None:
    lock: Any = getattr(shoal, kind)()
    assert lock.acquire(True) is True
    lock.release()
    assert lock.acquire(block=True, timeout=None) is True
    lock.release()
    assert lock.acquire(timeout=5) is True
    lock.release()
    assert lock.acquire(True, -1) is True  # a negative timeout is none
    lock.release()
    assert lock.acquire(False, 5.0) is True  # the timeout is ignored without block
    lock.release()
    assert lock.acquire(0) is True  # block is truthiness
    lock.release()
    with pytest.raises(TypeError, match="unexpected keyword"):
        lock.acquire(blocking=True)
    with pytest.raises(TypeError, match="multiple values"):
        lock.acquire(True, block=True)
    with pytest.raises(TypeError, match="at most 2"):
        lock.acquire(True, 1.0, 2)
    with pytest.raises(TypeError):
        lock.acquire(True, "1.0")
    with pytest.raises(ValueError):
        lock.acquire(True, float("nan"))
    assert lock.owner_died is False
    assert not lock._held  # none of the refused calls took it
    with lock as entered:
        assert entered is True and lock._held
    assert lock.acquire() is True
    assert lock.__exit__(None, None, None) is None
    assert not lock._held


def test_rlock_depth_and_repr() -> None:
    r = shoal.RLock()
    with r, r:
        assert r._count == 2 and repr(r) == "<shoal.RLock count=2>"
    assert r._count == 0
    lock = shoal.Lock()
    assert repr(lock) == "<shoal.Lock locked=False>"


def test_subclass_weakref_and_pickle() -> None:
    import weakref

    t = _TaggedLock("x")
    assert t.tag == "x" and t.acquire() and t.locked()
    t.release()
    with t:
        assert t.locked()
    back = pickle.loads(pickle.dumps(t))
    assert isinstance(back, shoal.Lock) and back.segment().id == t.segment().id
    f = _ForgetfulLock()
    for call in (f.acquire, f.release, f.__enter__, f.locked):
        with pytest.raises(TypeError, match="super"):
            call()
    with pytest.raises(TypeError, match="super"):
        f.owner_died  # noqa: B018
    for obj in (shoal.Lock(), shoal.RLock(), shoal.Condition(), t):
        ref = weakref.ref(obj)
        assert ref() is obj
    for policy in ("warn", "raise"):
        for cls in (shoal.Lock, shoal.RLock, shoal.Condition):
            o = pickle.loads(pickle.dumps(cls(on_owner_died=policy)))
            assert type(o) is cls and o._policy == policy


def test_value_lock_is_a_lock_over_the_value() -> None:
    v = shoal.Value("i", 1)
    lk = v.get_lock()
    assert type(lk) is shoal.Lock and lk.segment().id == v._core.segment().id
    with v:
        assert lk.locked() and lk._held
    back = pickle.loads(pickle.dumps(v))
    with back.get_lock():
        assert lk.locked()


# ---- Condition over a given lock --------------------------------------------------------------


def _cond_notify(cond: Any, lock: Any, flag: Any, use_lock: bool) -> None:
    if use_lock:  # the given lock itself, or the condition: the same lock
        with lock:
            flag.value = 1
            cond.notify_all()
    else:
        with cond:
            flag.value = 1
            cond.notify()


def _cond_notify_then_die(cond: Any, lock: Any, depth: int) -> None:
    for _ in range(depth):
        lock.acquire()
    cond.notify_all()
    os.kill(os.getpid(), signal.SIGKILL)


def _cond_wait_interrupted(cond: Any, lock: Any, ready: Any, result: Any) -> None:
    take_ctrl_c()
    with lock, lock:
        ready.set()
        try:
            cond.wait()
            result.value = 1
        except KeyboardInterrupt:
            result.value = 2 if lock._count == 2 else 3


def test_condition_with_a_given_lock_in_one_process() -> None:
    lock, r = shoal.Lock(), shoal.RLock()
    c, cr = shoal.Condition(lock), shoal.Condition(r)
    assert c._given is lock and cr._given is r
    with pytest.raises(ValueError):
        shoal.Condition(lock, on_owner_died="raise")
    with pytest.raises(RuntimeError, match="un-acquired"):
        c.notify()
    with pytest.raises(RuntimeError, match="un-acquired"):
        cr.notify_all()
    with pytest.raises(ValueError):
        c.wait(0.01)  # not held
    with c:
        assert lock.locked() and lock._held
        assert c.wait(0.01) is False and lock._held
        c.notify()
    assert not lock.locked()
    with r, r:
        assert cr.wait(0.01) is False
        assert r._count == 2
        assert cr.wait_for(lambda: 3, 0.01) == 3
        cr.notify(2)
    assert r._count == 0
    with cr:
        assert r._count == 1
    with pytest.raises(TypeError, match="pickles"):
        c.handle()
    back = pickle.loads(pickle.dumps(c))
    assert type(back) is shoal.Condition and type(back._given) is shoal.Lock
    assert back._given.segment().id == lock.segment().id
    assert back.segment().id == c.segment().id
    assert repr(c).startswith("<shoal.Condition(<shoal.Lock")


@pytest.mark.parametrize("kind", ["Lock", "RLock"])
def test_condition_with_a_given_lock_across_processes(
    ctx: mp.context.BaseContext, kind: str
) -> None:
    lock: Any = getattr(shoal, kind)()
    cond, flag = shoal.Condition(lock), shoal.Value("i", 0, lock=False)
    depth = 2 if kind == "RLock" else 1
    for use_lock in (True, False):
        flag.value = 0
        for _ in range(depth):
            lock.acquire()
        p = ctx.Process(target=_cond_notify, args=(cond, lock, flag, use_lock))
        p.start()
        # The child can only set the flag while wait() has released the lock (fully, at depth 2).
        assert cond.wait_for(lambda: flag.value == 1, DEADLINE)
        assert lock._held and lock._count == depth
        for _ in range(depth):
            lock.release()
        _join(p)
        assert p.exitcode == 0
    assert not lock._held


@pytest.mark.parametrize("kind", ["Lock", "RLock"])
def test_condition_wait_takes_over_the_given_lock(ctx: mp.context.BaseContext, kind: str) -> None:
    lock: Any = getattr(shoal, kind)()
    cond = shoal.Condition(lock)
    depth = 2 if kind == "RLock" else 1
    for _ in range(depth):
        lock.acquire()
    # The child takes the lock while this process waits, notifies and dies holding it: wait()
    # re-takes it over, reported as the lock reports it.
    p = ctx.Process(target=_cond_notify_then_die, args=(cond, lock, 2 if kind == "RLock" else 1))
    p.start()
    with pytest.warns(shoal.OwnerDiedWarning, match=f"shoal.{kind}:"):
        assert cond.wait(DEADLINE) is True
    _join(p)
    assert lock.owner_died and cond.owner_died and lock._count == depth
    for _ in range(depth):
        lock.release()
    assert not lock.owner_died


def test_condition_acquire_reports_the_given_locks_death(ctx: mp.context.BaseContext) -> None:
    r, held = shoal.RLock(on_owner_died="raise"), shoal.Event()
    cond = shoal.Condition(r)
    p = ctx.Process(target=_hold_then_exit, args=(r, held, True))
    p.start()
    assert held.wait(DEADLINE)
    _join(p)
    with pytest.raises(shoal.OwnerDiedError, match="shoal.RLock:"), cond:
        pytest.fail("the body must not run")
    assert r._count == 0 and not r.owner_died  # __enter__ released it before raising
    assert cond.acquire(False) is True and r._held
    cond.release()


@pytest.mark.parametrize("kind", ["Lock", "RLock", "Condition", "Condition(RLock)"])
def test_ctrl_c_interrupts_each_lock(ctx: mp.context.BaseContext, kind: str) -> None:
    given = shoal.RLock() if kind == "Condition(RLock)" else None
    lock: Any = shoal.Condition(given) if given else getattr(shoal, kind)()
    ready, result = shoal.Event(), shoal.Value("i", 0)
    assert lock.acquire()
    p = ctx.Process(target=_wait_on_lock, args=(lock, ready, result))
    p.start()
    ctrl_c_until_done(p, ready, result)
    assert result.value == 2  # KeyboardInterrupt, the lock not held by the child
    assert lock._held and (kind != "Lock" or lock.locked())
    lock.release()


def test_ctrl_c_interrupts_a_condition_wait(ctx: mp.context.BaseContext) -> None:
    r = shoal.RLock()
    cond, ready, result = shoal.Condition(r), shoal.Event(), shoal.Value("i", 0)
    p = ctx.Process(target=_cond_wait_interrupted, args=(cond, r, ready, result))
    p.start()
    ctrl_c_until_done(p, ready, result)
    assert result.value == 2  # KeyboardInterrupt, the RLock held again at depth 2
