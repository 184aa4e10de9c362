"""shoal: share data between processes at memory speed.

One physical copy per machine, whatever the multiprocessing start method; nothing leaked when a
process is killed. The engine is C++ (``shoal._shoal``); this package is its public face, and
this module only re-exports it.
"""

from __future__ import annotations

from . import _session  # noqa: F401  (the broker's path, the at-fork reconnect)
from ._array import Array, empty, full, zeros
from ._containers import Dict, List
from ._frozen import FrozenDict, FrozenList, FrozenSet, FrozenTuple, freeze, load, save
from ._hold import hold
from ._kinds import attach
from ._pipes import Connection, Pipe
from ._pool import BrokenPoolError, Pool, ProcessPoolExecutor, WorkerDiedError
from ._queues import EndOfStreamError, JoinableQueue, Queue, SimpleQueue
from ._share import share
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
from ._sync import (
    Barrier,
    BoundedSemaphore,
    Condition,
    Event,
    Lock,
    OwnerDiedWarning,
    RLock,
    Semaphore,
    Value,
)

__version__ = "0.2.0"

__all__ = [
    "AccessDeniedError",
    "Array",
    "Barrier",
    "BoundedSemaphore",
    "BrokenPoolError",
    "Condition",
    "Connection",
    "CorruptSegmentError",
    "DecodeError",
    "Dict",
    "EndOfStreamError",
    "Event",
    "FrozenDict",
    "FrozenList",
    "FrozenSet",
    "FrozenTuple",
    "IncompatibleSegmentError",
    "InvalidArgumentError",
    "JoinableQueue",
    "List",
    "Lock",
    "LockTimeoutError",
    "OutOfSpaceError",
    "OwnerDiedError",
    "OwnerDiedWarning",
    "Pipe",
    "Pool",
    "ProcessPoolExecutor",
    "Queue",
    "RLock",
    "SegmentExistsError",
    "SegmentNotFoundError",
    "Semaphore",
    "SessionGoneError",
    "ShoalError",
    "ShoalOSError",
    "ShoalTimeoutError",
    "SimpleQueue",
    "StaleHandleError",
    "Value",
    "WorkerDiedError",
    "__version__",
    "attach",
    "empty",
    "freeze",
    "full",
    "hold",
    "load",
    "save",
    "share",
    "zeros",
]
