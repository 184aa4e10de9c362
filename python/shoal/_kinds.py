"""The one registry of object kinds on the Python side, and ``shoal.attach``.

The kinds themselves -- numeric id, short name, description -- are listed once, in C++
(include/shoal/kind.hpp); ``_shoal.object_kinds()`` exports that list. This module adds, per
kind name, what Python does with an object of that kind:

* ``attach``: what ``shoal.attach(handle)`` returns, given the segment the handle mapped;
* ``reconstructor``: the function a pickle of the kind's Python objects names to rebuild them.
  Its module and name are in pickles already in flight: it is listed here so that tests can
  check every kind's objects pickle through it, never renamed or moved.

To add a kind: one line in SHOAL_OBJECT_KINDS (kind.hpp), one entry in ``_ENTRIES`` below;
tests/python/test_kinds.py fails while a kind C++ lists has no entry here. The CLI's names
(``shoal ls``) come from ``kind_name``.

This module imports the kinds' own modules; none of them imports it (``shoal/__init__.py``
re-exports ``attach``), so there is no import cycle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import _array, _containers, _frozen, _glue, _shoal, _sync


@dataclass(frozen=True)
class _Entry:
    attach: Callable[[_shoal.Segment], Any]
    reconstructor: Callable[..., Any]


def _attach_frozen(seg: _shoal.Segment) -> Any:
    return _shoal.frozen_root(_shoal.frozen_owner_from_segment(seg))


# Keyed by the C++ short name; the ids stay in C++ alone.
_ENTRIES: dict[str, _Entry] = {
    # A raw segment: shoal.attach gives the Segment itself; a pickled Segment (of any kind)
    # comes back as a Segment through _glue.attach_segment.
    "bytes": _Entry(attach=lambda seg: seg, reconstructor=_glue.attach_segment),
    # The whole array over the segment (no second attach: the view holds this Segment).
    "array": _Entry(attach=_array._view, reconstructor=_shoal.rebuild_array),
    "frozen": _Entry(attach=_attach_frozen, reconstructor=_frozen._rebuild_segment),
    # A heap (shoal::Heap through _shoal.Heap), or the shoal.Dict a heap holds (its root names
    # a dict header; a Dict pickles through _glue.rebuild_dict); an extent, part of a heap, is a
    # raw segment.
    "heap": _Entry(
        attach=lambda seg: _containers.from_heap(_shoal.Heap.from_segment(seg)),
        reconstructor=_glue.attach_heap,
    ),
    "extent": _Entry(attach=lambda seg: seg, reconstructor=_glue.attach_segment),
    # A lock, semaphore, event, condition, barrier or value (include/shoal/sync.hpp): the
    # shoal.Lock, RLock, Semaphore, ... its header's type names (python/shoal/_sync.py).
    "sync": _Entry(attach=_sync.from_segment, reconstructor=_glue.rebuild_sync),
}


@dataclass(frozen=True)
class Kind:
    """One object kind: C++'s id, name and description, and Python's entry (None: C++ lists
    the kind but this package cannot attach it yet)."""

    id: int
    name: str
    description: str
    entry: _Entry | None


KINDS: dict[int, Kind] = {
    kid: Kind(kid, name, description, _ENTRIES.get(name))
    for kid, name, description in _shoal.object_kinds()
}
KINDS_BY_NAME: dict[str, Kind] = {k.name: k for k in KINDS.values()}


def kind_name(kind: int) -> str:
    """The short name of kind `kind` ("bytes", "array", ...), or "kind N" for one this build
    does not know (an object a newer shoal made, seen by ``shoal ls``)."""
    k = KINDS.get(kind)
    return k.name if k is not None else f"kind {kind}"


def attach(handle: str) -> Any:
    """The object a handle names, by its kind: a frozen view, a shoal.Array, or a raw Segment.

    A handle of a kind this build does not know is refused by the decoder (DecodeError); one
    this build's C++ knows but its Python does not is IncompatibleSegmentError.
    """
    seg = _shoal.Segment.attach(handle)
    kind = seg.kind
    k = KINDS.get(kind)
    if k is None or k.entry is None:
        # C++ refuses unknown ids before mapping anything, so only a kind missing from
        # _ENTRIES gets here: a build whose Python lags its C++.
        name = f"kind {kind}" if k is None else f"kind {kind} ({k.name!r})"
        seg.close()
        raise _shoal.IncompatibleSegmentError(
            f"shoal.attach: {name} has no Python entry in shoal._kinds: this build's C++ "
            "knows the kind but its Python cannot attach it"
        )
    return k.entry.attach(seg)
