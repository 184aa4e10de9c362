"""What type checkers see of shoal/__init__.py, whose public names load on first use (PEP 562:
its module ``__getattr__``). tests/python/test_package.py checks that this stub imports the
names of ``__all__``, each from the module ``_LAZY`` names."""

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

__version__: str
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
