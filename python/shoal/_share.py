"""``shoal.share``: the one entry point that puts any supported object in shared memory."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, overload

from ._frozen import freeze

if TYPE_CHECKING:
    import numpy as np

    from ._array import Array


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
    np = sys.modules.get("numpy")  # not imported: obj is no ndarray, and numpy stays unloaded
    if np is not None and isinstance(obj, np.ndarray):
        from ._array import share_array

        return share_array(obj, writable=writable)
    if writable:
        raise TypeError(
            f"shoal.share(writable=True) takes a numpy.ndarray, not {type(obj).__name__}: "
            "other objects are shared frozen (read-only); see shoal.freeze"
        )
    return freeze(obj)
