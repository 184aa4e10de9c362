"""shoal: share data between processes at memory speed.

One physical copy per machine, whatever the multiprocessing start method; nothing leaked when a
process is killed. The engine is C++ (``shoal._shoal``); this package is its public face.
"""

from __future__ import annotations

import os as _os
from typing import overload

import numpy as np

from . import _shoal
from ._array import Array, empty, full, share_array, zeros
from ._frozen import FrozenDict, FrozenList, FrozenSet, FrozenTuple, attach, freeze, load, save
from ._shoal import (
    AccessDeniedError,
    CorruptSegmentError,
    DecodeError,
    IncompatibleSegmentError,
    InvalidArgumentError,
    LockTimeoutError,
    OutOfSpaceError,
    OwnerDiedError,
    SegmentExistsError,
    SegmentNotFoundError,
    SessionGoneError,
    ShoalError,
    ShoalOSError,
    ShoalTimeoutError,
    StaleHandleError,
)

__version__ = "0.1.0"


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


__all__ = [
    "AccessDeniedError",
    "Array",
    "CorruptSegmentError",
    "DecodeError",
    "FrozenDict",
    "FrozenList",
    "FrozenSet",
    "FrozenTuple",
    "IncompatibleSegmentError",
    "InvalidArgumentError",
    "LockTimeoutError",
    "OutOfSpaceError",
    "OwnerDiedError",
    "SegmentExistsError",
    "SegmentNotFoundError",
    "SessionGoneError",
    "ShoalError",
    "ShoalOSError",
    "ShoalTimeoutError",
    "StaleHandleError",
    "__version__",
    "attach",
    "empty",
    "freeze",
    "full",
    "load",
    "save",
    "share",
    "zeros",
]

# The broker executable ships inside the package; C++ callers use SHOAL_BROKER instead.
_broker = _os.path.join(_os.path.dirname(__file__), "_bin", "shoal-broker")
if _os.path.exists(_broker) and not _os.environ.get("SHOAL_BROKER"):
    _shoal.set_broker_path(_broker)

# A forked child must not share its parent's broker connection (those are the parent's
# references): reconnect and re-register the inherited mappings right after fork.
_os.register_at_fork(after_in_child=_shoal.after_fork_child)
