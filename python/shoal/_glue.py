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
