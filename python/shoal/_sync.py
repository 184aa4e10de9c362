"""Drop-in synchronisation primitives between processes (issue 14): shoal.Lock, RLock,
Semaphore, BoundedSemaphore, Event, Condition, Barrier and Value, with multiprocessing's API and
outcomes, over the C++ sync objects (include/shoal/sync.hpp; _shoal.SyncMutex and kin).

Unlike multiprocessing's, they pickle anywhere -- as Process and Pool arguments, through
queues, under fork, spawn and forkserver -- as handles (each object is a small shared segment).
A lock whose holder died is given to the next acquirer, who is told: OwnerDiedWarning (and
``lock.owner_died``) by default, OwnerDiedError with ``on_owner_died="raise"``; the lock is held
either way.
"""

from __future__ import annotations

import ctypes
import operator
import threading
from collections.abc import Callable
from typing import Any

from . import _glue, _shoal

__all__ = [
    "Barrier",
    "BoundedSemaphore",
    "Condition",
    "Event",
    "Lock",
    "OwnerDiedWarning",
    "RLock",
    "Semaphore",
    "Value",
]

# SyncStatus (include/shoal/sync.hpp), as the bindings return it.
_OK, _OWNER_DIED, _TIMEOUT, _INTERRUPTED, _BROKEN = 0, 1, 2, 3, 4

# Defined in C (python/bindings/sync_bind.cpp), where the locks' acquire applies the policy:
# "A lock was acquired, but its previous holder died holding it" (its docstring says more).
# Fetched by name: the stub imports it back from `shoal`, a cycle mypy cannot resolve.
OwnerDiedWarning: type[RuntimeWarning] = getattr(_shoal, "OwnerDiedWarning")  # noqa: B009


def _timeout(block: bool, timeout: float | None) -> float:
    """The bindings' timeout: -1 (none) or seconds >= 0."""
    if timeout is None or not block:
        return -1.0
    t = float(timeout)  # NaN: the bindings raise InvalidArgumentError (a ValueError)
    return -1.0 if t < 0 else t


def _check_policy(on_owner_died: str) -> str:
    if on_owner_died not in ("warn", "raise"):
        raise ValueError(f"on_owner_died must be 'warn' or 'raise', not {on_owner_died!r}")
    return on_owner_died


def _handle(self: Any, pin: bool = True) -> str:
    """A handle to send this object to another process (shoal.attach(handle) there)."""
    return str(self._core.segment().handle(pin))


def _lock_handle(self: _shoal.SyncLock, pin: bool = True) -> str:
    """A handle to send this object to another process (shoal.attach(handle) there)."""
    return str(self.segment().handle(pin))


# shoal.Lock, RLock and Condition subclass _shoal.SyncLock, whose acquire, release, __enter__,
# __exit__ and owner_died are C methods (sync_bind.cpp): the uncontended acquire(); release()
# runs no Python frame. Keep these classes' __slots__ empty (the C object holds the state) and
# define none of those methods here: a Python override would put a frame back on every call.


class Lock(_shoal.SyncLock):
    """multiprocessing.Lock between any processes: acquire(block=True, timeout=None),
    release(), ``with``. Not recursive; any thread of the holding process may release it.

    A lock whose holder died is given to the next acquirer, who is told: OwnerDiedWarning (and
    ``owner_died``) by default, OwnerDiedError with ``on_owner_died="raise"``; the lock is held
    either way."""

    __slots__ = ()

    handle = _lock_handle
    locked = _shoal.SyncLock._locked  # C: whether any process holds it

    def __init__(self, *, on_owner_died: str = "warn", _core: Any = None) -> None:
        raise_ = _check_policy(on_owner_died) == "raise"
        super().__init__(_shoal.SyncMutex.create() if _core is None else _core, raise_)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_glue.rebuild_sync, ("Lock", self.send_handle(), self._policy))

    def __repr__(self) -> str:
        return f"<shoal.Lock locked={self.locked()}>"


class RLock(_shoal.SyncLock):
    """multiprocessing.RLock: the holding thread may acquire it again; released when released
    as often as acquired. ``owner_died`` stays True from an acquire that took it over until the
    last release (the holder is a thread of this process, so it is this object's record)."""

    __slots__ = ()

    handle = _lock_handle

    def __init__(self, *, on_owner_died: str = "warn", _core: Any = None) -> None:
        raise_ = _check_policy(on_owner_died) == "raise"
        super().__init__(_shoal.SyncRecursiveMutex.create() if _core is None else _core, raise_)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_glue.rebuild_sync, ("RLock", self.send_handle(), self._policy))

    def __repr__(self) -> str:
        return f"<shoal.RLock count={self._count}>"


class Semaphore:
    """multiprocessing.Semaphore(value=1): acquire(block, timeout), release(), get_value()."""

    __slots__ = ("__weakref__", "_core")
    _bounded = False

    handle = _handle

    def __init__(self, value: int = 1, *, _core: Any = None) -> None:
        if _core is None:
            if value < 0:
                raise ValueError("semaphore initial value must be >= 0")
            _core = _shoal.SyncSemaphore.create(value, self._bounded, False)
        self._core = _core

    def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        if block is True and timeout is None:
            return bool(self._core.acquire(True, -1.0) == _OK)
        return bool(self._core.acquire(bool(block), _timeout(block, timeout)) == _OK)

    def release(self, n: int = 1) -> None:
        """Adds n units (a BoundedSemaphore raises ValueError above its initial value)."""
        self._core.release(n)

    def get_value(self) -> int:
        return int(self._core.value)

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __reduce__(self) -> tuple[Any, ...]:
        return (_glue.rebuild_sync, (type(self).__name__, self._core.send_handle(), "warn"))

    def __repr__(self) -> str:
        return f"<shoal.{type(self).__name__} value={self.get_value()}>"


class BoundedSemaphore(Semaphore):
    """multiprocessing.BoundedSemaphore: release() above the initial value raises ValueError;
    the units of a process that died holding them are given back."""

    __slots__ = ()
    _bounded = True


class Event:
    """multiprocessing.Event: set(), clear(), is_set(), wait(timeout=None) returning the flag."""

    __slots__ = ("__weakref__", "_core")

    handle = _handle

    def __init__(self, *, _core: Any = None) -> None:
        self._core = _shoal.SyncEvent.create() if _core is None else _core

    def is_set(self) -> bool:
        return bool(self._core.is_set())

    def set(self) -> None:
        self._core.set()

    def clear(self) -> None:
        self._core.clear()

    def wait(self, timeout: float | None = None) -> bool:
        """True once the flag is set; False when `timeout` seconds pass first."""
        return bool(self._core.wait(_timeout(True, timeout)) == _OK)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_glue.rebuild_sync, ("Event", self._core.send_handle(), "warn"))

    def __repr__(self) -> str:
        return f"<shoal.Event set={self.is_set()}>"


class Condition(_shoal.SyncLock):
    """multiprocessing.Condition(lock=None): acquire/release/``with``, wait(timeout),
    wait_for(predicate, timeout), notify(n=1), notify_all().

    With lock=None it uses its own lock (not recursive), beside it in shared memory. Given a
    shoal.Lock or shoal.RLock, it uses that lock in every process (it pickles as its own handle
    plus the lock); an RLock held at depth n is released fully by wait() and held at depth n
    again on return. notify() and wait() need the lock held (RuntimeError / ValueError).

    Owner death is reported as for the lock: with its own lock, by the ``on_owner_died`` given
    here; with a given lock, by that lock's (set it there), and ``owner_died`` is the lock's."""

    __slots__ = ()

    def __init__(
        self, lock: Lock | RLock | None = None, *, on_owner_died: str = "warn", _core: Any = None
    ) -> None:
        if lock is not None and not isinstance(lock, (Lock, RLock)):
            raise TypeError(
                "shoal.Condition(lock): pass a shoal.Lock or shoal.RLock (shared with the other "
                f"processes), or None for the condition's own lock; not {type(lock).__name__}"
            )
        if lock is not None and on_owner_died != "warn":
            raise ValueError(
                "shoal.Condition(lock, on_owner_died=...): a given lock reports its holder's "
                "death by its own policy: pass on_owner_died to the lock"
            )
        raise_ = _check_policy(on_owner_died) == "raise"
        core = _shoal.SyncCondition.create() if _core is None else _core
        super().__init__(core, raise_, lock)

    def handle(self, pin: bool = True) -> str:
        """A handle to send this condition to another process (shoal.attach(handle) there).
        TypeError for a condition over a given lock: the handle would not carry the lock;
        send the condition itself (pickle) instead."""
        if self._given is not None:
            raise TypeError(
                "a shoal.Condition over a given lock has no handle of its own (it would lose "
                "the lock): send the Condition itself (it pickles with its lock)"
            )
        return str(self.segment().handle(pin))

    def wait(self, timeout: float | None = None) -> bool:
        """Release the lock, sleep until notified or `timeout` passes, re-take the lock;
        False on timeout. The lock is held again on every return (KeyboardInterrupt too), an
        RLock at the depth it had."""
        return self._wait(_timeout(True, timeout))

    def wait_for(self, predicate: Callable[[], Any], timeout: float | None = None) -> Any:
        """Wait until predicate() is true (or `timeout` passes); predicate()'s last result."""
        import time

        end = None if timeout is None else time.monotonic() + timeout
        result = predicate()
        while not result:
            if end is not None:
                left = end - time.monotonic()
                if left <= 0:
                    break
                self.wait(left)
            else:
                self.wait()
            result = predicate()
        return result

    def notify(self, n: int = 1) -> None:
        """Wake up to n waiters; RuntimeError unless the lock is held (as threading's)."""
        self._notify(n)

    def notify_all(self) -> None:
        """Wake every waiter; RuntimeError unless the lock is held (as threading's)."""
        self._notify_all()

    def __reduce__(self) -> tuple[Any, ...]:
        given = self._given
        if given is None:
            return (_glue.rebuild_sync, ("Condition", self.send_handle(), self._policy))
        return (_glue.rebuild_condition, (self.send_handle(), given))

    def __repr__(self) -> str:
        given = self._given
        return "<shoal.Condition>" if given is None else f"<shoal.Condition({given!r})>"


class Barrier:
    """multiprocessing.Barrier(parties, action=None, timeout=None): wait(timeout) returns the
    arrival index, abort(), reset(), broken, parties, n_waiting; threading.BrokenBarrierError
    when broken. With an action, one party runs it once every party arrived and before any
    goes on (a second barrier holds the others); if it raises, the barrier breaks."""

    __slots__ = ("__weakref__", "_action", "_core", "_gate")

    handle = _handle

    def __init__(
        self,
        parties: int,
        action: Callable[[], Any] | None = None,
        timeout: float | None = None,
        *,
        _cores: tuple[Any, Any] | None = None,
    ) -> None:
        if _cores is None:
            if parties < 1:
                raise ValueError("parties must be > 0")
            t = float("inf") if timeout is None else float(timeout)
            core = _shoal.SyncBarrier.create(parties, t)
            gate = _shoal.SyncBarrier.create(parties, t) if action is not None else None
        else:
            core, gate = _cores
        self._core = core
        self._gate = gate
        self._action = action

    def wait(self, timeout: float | None = None) -> int:
        t = -1.0 if timeout is None else max(float(timeout), 0.0)
        s, index = self._core.wait(t)
        if s != _OK:
            raise threading.BrokenBarrierError
        if self._gate is not None:
            if index == self.parties - 1 and self._action is not None:
                try:
                    self._action()
                except BaseException:
                    self.abort()
                    raise
            s, _ = self._gate.wait(t)
            if s != _OK:
                raise threading.BrokenBarrierError
        return int(index)

    def abort(self) -> None:
        self._core.abort()
        if self._gate is not None:
            self._gate.abort()

    def reset(self) -> None:
        self._core.reset()
        if self._gate is not None:
            self._gate.reset()

    @property
    def broken(self) -> bool:
        return bool(self._core.broken or (self._gate is not None and self._gate.broken))

    @property
    def parties(self) -> int:
        return int(self._core.parties)

    @property
    def n_waiting(self) -> int:
        return int(self._core.n_waiting)

    def __reduce__(self) -> tuple[Any, ...]:
        gate = None if self._gate is None else self._gate.send_handle()
        return (_glue.rebuild_barrier, (self._core.send_handle(), gate, self._action))

    def __repr__(self) -> str:
        return f"<shoal.Barrier parties={self.parties} waiting={self.n_waiting}>"


# multiprocessing.sharedctypes.typecode_to_type's table.
_TYPES: dict[str, Any] = {
    "b": ctypes.c_byte,
    "B": ctypes.c_ubyte,
    "h": ctypes.c_short,
    "H": ctypes.c_ushort,
    "i": ctypes.c_int,
    "I": ctypes.c_uint,
    "l": ctypes.c_long,
    "L": ctypes.c_ulong,
    "q": ctypes.c_longlong,
    "Q": ctypes.c_ulonglong,
    "f": ctypes.c_float,
    "d": ctypes.c_double,
}
# ctypes type -> typecode (c_long and c_longlong may be one type: the first typecode wins).
_CTYPES: dict[Any, str] = {}
for _c, _t in _TYPES.items():
    _CTYPES.setdefault(_t, _c)


class Value:
    """multiprocessing.Value(typecode_or_type, *args, lock=True): one number in shared memory.

    ``.value`` reads and writes it (each atomically); ``get_lock()`` is the lock for compound
    updates (``with v.get_lock(): v.value += 1``): with lock=True a shoal.Lock beside the
    value, a lock given as ``lock`` is used instead, and with lock=False there is none
    (AttributeError, as multiprocessing's raw value). ``get_obj()`` is a ctypes object over the
    shared bytes. (multiprocessing's default lock is an RLock; the built-in one here is not
    recursive: pass ``lock=shoal.RLock()`` where the holder re-enters.) Atomic without a lock: add(d) returns the new value, exchange(v) the old, and
    compare_exchange(expected, desired) whether it stored. Typecodes b B h H i I l L q Q f d or
    their ctypes types."""

    __slots__ = ("__weakref__", "_core", "_lock", "add")

    handle = _handle
    add: Callable[[Any], Any]
    """Atomically add d; the new value. (The binding's method itself, set per object: one
    call, no Python frame.)"""

    def __init__(
        self, typecode_or_type: Any, *args: Any, lock: Any = True, _core: Any = None
    ) -> None:
        if _core is None:
            if isinstance(typecode_or_type, str):
                tc = typecode_or_type
            else:
                tc = _CTYPES.get(typecode_or_type, "")
                if not tc:
                    raise TypeError(f"shoal.Value: unsupported type {typecode_or_type!r}")
            if len(args) > 1:
                raise TypeError("shoal.Value takes one initial value")
            _core = _shoal.SyncValue.create(tc, args[0] if args else None)
        self._core = _core
        self.add = _core.add
        if lock is True:
            self._lock: Any = Lock(_core=_core.lock())
        elif lock is False or lock is None:
            self._lock = None
        else:
            self._lock = lock

    def _store(self, v: Any) -> None:
        self._core.store(v)

    # The read is the binding's property through a C-level getter: no Python frame.
    value = property(
        operator.attrgetter("_core.value"), _store, doc="The number (each read or write atomic)."
    )

    def get_lock(self) -> Any:
        if self._lock is None:
            raise AttributeError("this shoal.Value was made with lock=False: it has no lock")
        return self._lock

    def get_obj(self) -> Any:
        """A ctypes object (c_int, c_double, ...) over the shared bytes."""
        obj = _TYPES[self._core.typecode].from_address(self._core.address)
        obj._shoal_keep = self._core  # the mapping lives while the ctypes object does
        return obj

    def acquire(self, *args: Any) -> bool:
        return bool(self.get_lock().acquire(*args))

    def release(self) -> None:
        self.get_lock().release()

    def __enter__(self) -> bool:
        return bool(self.get_lock().__enter__())

    def __exit__(self, *exc: object) -> None:
        self.get_lock().__exit__(*exc)

    def exchange(self, v: Any) -> Any:
        """Atomically store v; the old value."""
        return self._core.exchange(v)

    def compare_exchange(self, expected: Any, desired: Any) -> bool:
        """Atomically store desired if the value equals expected; whether it did."""
        return bool(self._core.compare_exchange(expected, desired))

    def __reduce__(self) -> tuple[Any, ...]:
        # The built-in lock travels with the value's handle; another lock is pickled itself.
        builtin = isinstance(self._lock, Lock) and _same_segment(self._lock, self)
        lock: Any = True if builtin else (False if self._lock is None else self._lock)
        return (_glue.rebuild_value, (self._core.send_handle(), lock))

    def __repr__(self) -> str:
        return f"<shoal.Value({self._core.typecode!r}, {self.value!r})>"


def _same_segment(lock: Lock, value: Value) -> bool:
    return bool(lock.segment().id == value._core.segment().id)


def from_segment(seg: _shoal.Segment, policy: str = "warn") -> Any:
    """The Python object of a sync segment, by its header's type (shoal.attach)."""
    t = _shoal.sync_type(seg)
    if t == 1:
        return Lock(on_owner_died=policy, _core=_shoal.SyncMutex.from_segment(seg))
    if t == 2:
        return RLock(on_owner_died=policy, _core=_shoal.SyncRecursiveMutex.from_segment(seg))
    if t == 3:
        core = _shoal.SyncSemaphore.from_segment(seg)
        cls = BoundedSemaphore if core.bounded else Semaphore
        return cls(_core=core)
    if t == 4:
        return Event(_core=_shoal.SyncEvent.from_segment(seg))
    if t == 5:
        return Condition(on_owner_died=policy, _core=_shoal.SyncCondition.from_segment(seg))
    if t == 6:
        return Barrier(0, _cores=(_shoal.SyncBarrier.from_segment(seg), None))
    if t == 7:
        return Value("", _core=_shoal.SyncValue.from_segment(seg))
    raise _shoal.IncompatibleSegmentError(f"unknown sync object type {t}")
