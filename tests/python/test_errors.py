"""The error classes: one per shoal::Errc, each a ShoalError, each also the builtin a Python
user would catch, exported from `shoal`."""

from __future__ import annotations

import shoal

BUILTIN = {
    "InvalidArgumentError": ValueError,
    "SegmentExistsError": FileExistsError,
    "SegmentNotFoundError": FileNotFoundError,
    "OutOfSpaceError": MemoryError,
    "ShoalTimeoutError": TimeoutError,
    "LockTimeoutError": TimeoutError,
    "DecodeError": ValueError,
    "AccessDeniedError": PermissionError,
    "ShoalOSError": OSError,
}


def test_every_exported_error_is_a_shoal_error_and_its_builtin() -> None:
    errors = [n for n in shoal.__all__ if n.endswith("Error")]
    assert set(BUILTIN) <= set(errors)
    for name in errors:
        cls = getattr(shoal, name)
        assert issubclass(cls, shoal.ShoalError), name
        assert cls.__module__ == "shoal", name
        if name in BUILTIN:
            assert issubclass(cls, BUILTIN[name]), name


def test_a_lock_timeout_is_a_timeout_and_not_the_other_way() -> None:
    assert issubclass(shoal.LockTimeoutError, shoal.ShoalTimeoutError)
    assert not issubclass(shoal.ShoalTimeoutError, shoal.LockTimeoutError)
    try:
        raise shoal.LockTimeoutError("waited 2 s for the lock")
    except TimeoutError as e:  # what a user of multiprocessing's timeouts catches
        assert str(e) == "waited 2 s for the lock"
