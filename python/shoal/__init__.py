"""shoal: share data between processes at memory speed.

One physical copy per machine, whatever the multiprocessing start method; nothing leaked when a
process is killed. The engine is C++ (``shoal._shoal``); this package is its public face.
"""

from __future__ import annotations

import os as _os

from . import _shoal
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
    StaleHandleError,
)

__version__ = "0.1.0"

__all__ = [
    "AccessDeniedError",
    "CorruptSegmentError",
    "DecodeError",
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
    "StaleHandleError",
    "__version__",
]

# The broker executable ships inside the package; C++ callers use SHOAL_BROKER instead.
_broker = _os.path.join(_os.path.dirname(__file__), "_bin", "shoal-broker")
if _os.path.exists(_broker) and not _os.environ.get("SHOAL_BROKER"):
    _shoal.set_broker_path(_broker)

# A forked child must not share its parent's broker connection (those are the parent's
# references): reconnect and re-register the inherited mappings right after fork.
_os.register_at_fork(after_in_child=_shoal.after_fork_child)
