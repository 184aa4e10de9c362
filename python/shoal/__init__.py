"""shoal: share data between processes at memory speed.

One physical copy per machine, whatever the multiprocessing start method; nothing leaked when a
process is killed. The engine is C++ (``shoal._shoal``); this package is its public face, and
this module only re-exports it, each part loaded on first use (``__init__.pyi`` is what type
checkers see).
"""

from __future__ import annotations

import importlib as _importlib

from . import _session  # noqa: F401  (the broker's path, the at-fork reconnect)
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

# The rest of the public names load on first use (PEP 562): a process that needs only part
# of shoal -- a Pool worker under spawn or forkserver above all, which imports this package
# before its first task -- does not pay for numpy and the other modules at start-up.
# `shoal.X` and `from shoal import X` work as if imported here. What must stay true: every
# name of __all__ is either imported above or listed here (test_api checks both ways).
_LAZY: dict[str, str] = {
    "Array": "_array",
    "empty": "_array",
    "full": "_array",
    "zeros": "_array",
    "Dict": "_containers",
    "List": "_containers",
    "FrozenDict": "_frozen",
    "FrozenList": "_frozen",
    "FrozenSet": "_frozen",
    "FrozenTuple": "_frozen",
    "freeze": "_frozen",
    "load": "_frozen",
    "save": "_frozen",
    "hold": "_hold",
    "attach": "_kinds",
    "Connection": "_pipes",
    "Pipe": "_pipes",
    "BrokenPoolError": "_pool",
    "Pool": "_pool",
    "ProcessPoolExecutor": "_pool",
    "WorkerDiedError": "_pool",
    "EndOfStreamError": "_queues",
    "JoinableQueue": "_queues",
    "Queue": "_queues",
    "SimpleQueue": "_queues",
    "share": "_share",
    "Barrier": "_sync",
    "BoundedSemaphore": "_sync",
    "Condition": "_sync",
    "Event": "_sync",
    "Lock": "_sync",
    "OwnerDiedWarning": "_sync",
    "RLock": "_sync",
    "Semaphore": "_sync",
    "Value": "_sync",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'shoal' has no attribute {name!r}")
    value = getattr(_importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # the next lookup is a plain module attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


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
