"""Demo scene ``killed-holder``: a lock's holder is SIGKILLed, the stdlib way next to shoal.

A child process (fork) takes the lock, says so, and is SIGKILLed while it holds it. Then the
parent tries to take the lock, with acquire(timeout=2):

- **multiprocessing.Lock**: a POSIX semaphore knows nothing of who took it; the dead child's
  unit is never given back, the acquire times out, and every later acquire would too (without
  a timeout: a hang);
- **shoal.Lock**: a robust lock; the next acquire returns True, with an OwnerDiedWarning (and
  ``lock.owner_died``) saying that what it guards may be half-updated, and the work goes on.

``run_scene(size_bytes, out)`` runs it with the demo's scene signature (size is unused) and
returns whether shoal kept its promise. A few seconds, most of it the stdlib's timeout.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
import warnings
from typing import Any, TextIO

from .._sync import Lock, OwnerDiedWarning, Value

__all__ = ["run_scene"]

TIMEOUT = 2.0  # the parent's acquire(timeout=...) after the holder died
_DEADLINE = 30.0


def _hold_forever(lock: Any, ready: Any) -> None:
    """The child: take the lock, say so, and wait to be killed."""
    lock.acquire()
    ready.set()
    time.sleep(3600)


def _kill_a_holder(ctx: Any, lock: Any, ready: Any) -> bool:
    """Start a child that takes `lock`, SIGKILL it once it holds it; False if it never did."""
    p = ctx.Process(target=_hold_forever, args=(lock, ready), daemon=True)
    p.start()
    try:
        if not ready.wait(_DEADLINE):
            return False
        assert p.pid is not None
        os.kill(p.pid, signal.SIGKILL)
        p.join(_DEADLINE)
        return bool(p.exitcode == -signal.SIGKILL)
    finally:
        if p.exitcode is None:
            p.kill()
            p.join()


def run_scene(size_bytes: int, out: TextIO) -> bool:
    del size_bytes  # a lock is a lock, whatever the demo's size
    ctx = mp.get_context("fork")

    print("multiprocessing.Lock: a child takes it and is SIGKILLed holding it", file=out)
    std_lock = ctx.Lock()
    if not _kill_a_holder(ctx, std_lock, ctx.Event()):
        print("  the child never took the lock (could not run this half)", file=out)
        std_timed_out = False
    else:
        start = time.monotonic()
        got = std_lock.acquire(timeout=TIMEOUT)
        took = time.monotonic() - start
        std_timed_out = not got
        if got:
            std_lock.release()
            print(f"  acquire(timeout={TIMEOUT:g}) returned True (unexpected here)", file=out)
        else:
            print(
                f"  acquire(timeout={TIMEOUT:g}) -> False after {took:.1f} s: the lock stays "
                "locked for good (no timeout: a hang)",
                file=out,
            )

    print("shoal.Lock: a child takes it and is SIGKILLed holding it", file=out)
    lock = Lock()
    counter = Value("q", 0, lock=False)  # what the lock guards
    if not _kill_a_holder(ctx, lock, ctx.Event()):
        print("  the child never took the lock: PROBLEM", file=out)
        return False
    start = time.monotonic()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", OwnerDiedWarning)
        got = lock.acquire(timeout=TIMEOUT)
    took = time.monotonic() - start
    told = any(issubclass(w.category, OwnerDiedWarning) for w in caught)
    died = got and lock.owner_died
    if got:
        counter.value += 1  # the work goes on, under the lock
        lock.release()
    again = lock.acquire(timeout=TIMEOUT)
    if again:
        counter.value += 1
        lock.release()
    ok = bool(got and told and died and again and counter.value == 2)
    print(
        f"  acquire(timeout={TIMEOUT:g}) -> {got} after {took:.2f} s, "
        f"{'with' if told else 'WITHOUT'} OwnerDiedWarning, lock.owner_died={died}",
        file=out,
    )
    print(f"  the work went on: counter {counter.value}, next acquire {again}", file=out)
    verdict = "the stdlib lock stayed locked" if std_timed_out else "the stdlib lock came back"
    print(
        f"{verdict}; shoal's came back at once, saying its holder died: "
        f"{'as promised' if ok else 'PROBLEM'}",
        file=out,
    )
    return ok
