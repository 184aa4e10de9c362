"""Pickling glue: the functions that pickled shoal objects name (by reference) to rebuild
themselves in the receiving process. Keep their names stable: they are part of every pickle."""

from __future__ import annotations

from typing import Any

from . import _shoal


def attach_segment(handle: str) -> _shoal.Segment:
    """Unpickle a Segment: map the object its handle names."""
    return _shoal.Segment.attach(handle)


def open_named(name: str, writable: bool) -> _shoal.Segment:
    """Unpickle a named Segment: open it by name."""
    return _shoal.Segment.open_named(name, writable)


def rebuild_array(handle: str, offset: int, shape: Any, strides: Any, descr: str) -> Any:
    """Unpickle a shoal.Array (or a view of one): attach its segment, rebuild the view."""
    from ._array import _dtype_from_descr, _view

    return _view(_shoal.Segment.attach(handle), offset, shape, strides, _dtype_from_descr(descr))
