"""``shoal.hold``: send one shared object many times, with no broker round trip per send.

Outside a hold, pickling a shoal object writes a *pinned* handle: one round trip to the session
broker and one new pin per pickle, so that the receiver finds the object even if the sender has
exited meanwhile (send and forget). Inside ``with shoal.hold(obj):`` pickling ``obj`` -- and any
view or slice of it, and any object over the same segment -- writes a *held* handle instead:
the same short text every time, made without asking the broker, valid while this process holds
the object (the hold keeps it alive). A receiver already connected to the session maps it
without a round trip either (docs/design/segment.md, "Held handles").
"""

from __future__ import annotations

import sys
from typing import Any, Self

from . import _shoal


def _origin(obj: Any) -> tuple[str, Any]:
    """("segment", Segment), ("frozen", FrozenImage owner) or ("segments", [Segment, ...]) that
    `obj` pickles through."""
    from ._frozen import _FrozenCommon, _Leaf

    if isinstance(obj, _shoal.Segment):
        return ("segment", obj)
    # Not imported: obj is no shoal.Array (and a Pool holding a raw segment loads no numpy).
    array_mod = sys.modules.get("shoal._array")
    if array_mod is not None and isinstance(obj, array_mod.Array):
        ref = obj._shoal_ref
        if ref is None:
            raise ValueError(
                "shoal.hold: this array does not live in shared memory (a result that owns new "
                "memory, such as a + 1, pickles its bytes)"
            )
        origin = ref[0]
        if isinstance(origin, _Leaf):
            return ("frozen", origin.owner)
        return ("segment", origin)
    if isinstance(obj, _FrozenCommon):
        return ("frozen", obj._owner)
    if isinstance(obj, (_shoal.DictCore, _shoal.ListCore)):
        return ("segment", obj.segment())
    segments = _sync_segments(obj)
    if segments:
        return ("segments", segments)
    raise TypeError(
        f"shoal.hold takes a shoal object that pickles as a handle (a shoal.Array, a frozen "
        f"view, a shoal.Dict or List, a Segment, a lock or another sync object), not {type(obj).__name__}"
    )


def _sync_segments(obj: Any) -> list[_shoal.Segment]:
    """The segments a sync object's pickle names (a Condition over a given lock, a Barrier with
    an action and a Value with a lock of its own name two); empty for anything else."""
    from . import _sync

    if isinstance(obj, _sync.Condition):
        out = [obj.segment()]
        if obj._given is not None:
            out += _sync_segments(obj._given)
        return out
    if isinstance(obj, (_sync.Lock, _sync.RLock)):
        return [obj.segment()]
    if isinstance(obj, _sync.Barrier):
        out = [obj._core.segment()]
        if obj._gate is not None:
            out.append(obj._gate.segment())
        return out
    if isinstance(obj, _sync.Value):
        out = [obj._core.segment()]
        lock = obj._lock
        if lock is not None and not _sync._same_segment(lock, obj):
            out += _sync_segments(lock)
        return out
    if isinstance(obj, (_sync.Semaphore, _sync.Event)):
        return [obj._core.segment()]
    return []


class _Holds:
    """Several holds as one (an object whose pickle names several segments): a context manager,
    release() ends them all; active while all are."""

    __slots__ = ("_holds",)

    def __init__(self, holds: list[_shoal.Hold]) -> None:
        self._holds = holds

    def release(self) -> None:
        for h in self._holds:
            h.release()

    @property
    def active(self) -> bool:
        return all(h.active for h in self._holds)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"<shoal.Hold of {len(self._holds)} segments active={self.active}>"


def hold(obj: Any) -> _shoal.Hold | _Holds:
    """Hold `obj` in this process so that pickling it is free until the hold ends.

    While the returned hold is active, pickling `obj` (and its views and slices: anything over
    the same shared memory) writes a *held* handle: no pin, no round trip to the broker, the
    same text every time. Its receivers attach without a round trip when they are already
    connected to the session (a Pool worker after its first task). The hold keeps the object
    alive; a held handle is valid only while some process holds the object, so a receiver that
    unpickles one after the hold ended and every other holder let go gets StaleHandleError.
    Outside a hold pickling pins, as before (send and forget).

    Use it as a context manager, or call ``release()``::

        with shoal.hold(big):
            pool.map(f, [big] * 10_000)  # 10 000 pickles, no broker round trip, no pin

    Locks, semaphores, events, conditions, barriers and values are held the same way (an object
    whose pickle names several segments, such as a Condition over a given lock, holds each).
    Holds nest and count. A hold cannot be pickled; a forked child inherits it (the child holds
    the object too, so its held handles are as valid as the parent's).
    """
    kind, origin = _origin(obj)
    if kind == "segments":
        holds = [seg.hold() for seg in origin]
        return holds[0] if len(holds) == 1 else _Holds(holds)
    if kind == "segment":
        seg: _shoal.Segment = origin
        if seg.name is not None:
            raise ValueError(
                f"shoal.hold: named segment {seg.name!r} pickles as its name: there is "
                "nothing to hold"
            )
        return seg.hold()
    return _shoal.frozen_owner_hold(origin)
