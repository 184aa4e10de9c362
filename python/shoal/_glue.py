"""Pickling glue: the functions that pickled shoal objects name (by reference) to rebuild
themselves in the receiving process. Keep their names stable: they are part of every pickle."""

from __future__ import annotations

from . import _shoal


def attach_segment(handle: str) -> _shoal.Segment:
    """Unpickle a Segment: map the object its handle names."""
    return _shoal.Segment.attach(handle)


def attach_heap(handle: str) -> _shoal.Heap:
    """Unpickle a heap: map the root its handle names (extents are mapped when read)."""
    return _shoal.Heap.attach(handle)


def open_named(name: str, writable: bool) -> _shoal.Segment:
    """Unpickle a named Segment: open it by name."""
    return _shoal.Segment.open_named(name, writable)


def rebuild_sync(cls: str, handle: str, on_owner_died: str) -> object:
    """Unpickle a shoal.Lock, RLock, Semaphore, BoundedSemaphore, Event or Condition (cls: its
    class name); a Lock over a shoal.Value's segment is that value's lock."""
    from . import _sync

    seg = _shoal.Segment.attach(handle)
    if cls == "Lock" and _shoal.sync_type(seg) == 7:
        return _sync.Lock(
            on_owner_died=on_owner_died, _core=_shoal.SyncValue.from_segment(seg).lock()
        )
    return _sync.from_segment(seg, on_owner_died)


def rebuild_condition(handle: str, lock: object) -> object:
    """Unpickle a shoal.Condition over a given lock (the lock unpickled already)."""
    from . import _sync

    core = _shoal.SyncCondition.from_segment(_shoal.Segment.attach(handle))
    return _sync.Condition(lock, _core=core)  # type: ignore[arg-type]


def rebuild_barrier(handle: str, gate: str | None, action: object) -> object:
    """Unpickle a shoal.Barrier: its barrier, and the second one an action needs."""
    from . import _sync

    core = _shoal.SyncBarrier.from_segment(_shoal.Segment.attach(handle))
    g = None if gate is None else _shoal.SyncBarrier.from_segment(_shoal.Segment.attach(gate))
    return _sync.Barrier(0, action, _cores=(core, g))  # type: ignore[arg-type]


def rebuild_value(handle: str, lock: object) -> object:
    """Unpickle a shoal.Value: lock True is the value's own lock, False none, else the lock."""
    from . import _sync

    core = _shoal.SyncValue.from_segment(_shoal.Segment.attach(handle))
    return _sync.Value("", lock=lock, _core=core)


def rebuild_dict(cls: type, handle: str, allow_pickle: bool) -> object:
    """Unpickle a shoal.Dict (or a subclass: cls): attach the dict its handle names."""
    return cls._from(handle, allow_pickle)  # type: ignore[attr-defined]


def rebuild_list(cls: type, handle: str, allow_pickle: bool) -> object:
    """Unpickle a shoal.List (or a subclass: cls): attach the list its handle names."""
    return cls._from(handle, allow_pickle)  # type: ignore[attr-defined]


def rebuild_queue(cls: type, handle: str, end_of_stream: bool = False) -> object:
    """Unpickle a shoal.Queue, JoinableQueue or SimpleQueue (cls): attach the queue its handle
    names (with the end_of_stream choice of the object pickled)."""
    q = cls._from(handle)  # type: ignore[attr-defined]
    q._end_of_stream = end_of_stream
    return q
