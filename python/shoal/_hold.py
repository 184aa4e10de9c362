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

from typing import Any

from . import _shoal


def _origin(obj: Any) -> tuple[str, Any]:
    """("segment", Segment) or ("frozen", FrozenImage owner) that `obj` pickles through."""
    from ._array import Array
    from ._frozen import _FrozenCommon, _Leaf

    if isinstance(obj, _shoal.Segment):
        return ("segment", obj)
    if isinstance(obj, Array):
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
    raise TypeError(
        f"shoal.hold takes a shoal object that pickles as a handle (a shoal.Array, a frozen "
        f"view, a Segment), not {type(obj).__name__}"
    )


def hold(obj: Any) -> _shoal.Hold:
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

    Holds nest and count. A hold cannot be pickled; a forked child inherits it (the child holds
    the object too, so its held handles are as valid as the parent's).
    """
    kind, origin = _origin(obj)
    if kind == "segment":
        seg: _shoal.Segment = origin
        if seg.name is not None:
            raise ValueError(
                f"shoal.hold: named segment {seg.name!r} pickles as its name: there is "
                "nothing to hold"
            )
        return seg.hold()
    return _shoal.frozen_owner_hold(origin)
