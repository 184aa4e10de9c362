"""``shoal.share``: the one entry point that puts any supported object in shared memory."""

from __future__ import annotations

from typing import overload

import numpy as np

from ._array import Array, share_array
from ._frozen import freeze


@overload
def share(obj: np.ndarray, *, writable: bool = False) -> Array: ...
@overload
def share(obj: object, *, writable: bool = False) -> object: ...


def share(obj: object, *, writable: bool = False) -> object:
    """Put `obj` in shared memory once and return a view every process can map.

    An ndarray becomes a ``shoal.Array`` (a read-only snapshot unless ``writable=True``).
    Anything else -- trees of dict/list/tuple/set/str/bytes/numbers -- becomes a read-only
    frozen view (``shoal.freeze(obj)``); ``writable=True`` is refused for those.
    """
    if isinstance(obj, np.ndarray):
        return share_array(obj, writable=writable)
    if writable:
        raise TypeError(
            f"shoal.share(writable=True) takes a numpy.ndarray, not {type(obj).__name__}: "
            "other objects are shared frozen (read-only); see shoal.freeze"
        )
    return freeze(obj)
