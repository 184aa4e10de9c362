"""Demo scene ``pipe-vs-queue`` (seed 003: "do I need a Queue to pass an array? would a Pipe be
better?"): the stdlib's Queue and Pipe next to shoal's, measured in the run.

One producer process hands a consumer process (both forked) first SMALL 100-byte messages,
then ARRAYS 8 MiB float64 ndarrays after a first one (not timed: it may set up memory), the
consumer touching one byte per page of each, through:

- **multiprocessing.Queue**: every message pickled, pushed into a kernel pipe by a feeder
  thread, read and unpickled on the other side: two copies of an array through the kernel;
- **multiprocessing.Pipe**: the same pickling and kernel pipe, without the feeder thread and its
  lock (one writer and one reader only);
- **shoal.Queue** and **shoal.Pipe** (where this build has it): a ring in shared memory for
  small messages, an array written once into shared memory and read from there.

It prints messages/s and GB/s, says which is faster, and returns whether every shoal channel
delivered every message intact (the figures are shown, not judged: this machine may be busy).
A few seconds in all.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from collections.abc import Callable
from typing import Any, TextIO

import numpy as np

__all__ = ["run_scene"]

SMALL = 20_000
ARRAYS = 8
ARRAY_BYTES = 8 << 20
PAGE = 4096
_DEADLINE = 60.0


def _ways() -> list[tuple[str, Callable[[], tuple[Any, Any]]]]:
    """(name, make) where make() returns (sending end, receiving end)."""
    import shoal

    ctx = mp.get_context("fork")

    def mp_queue() -> tuple[Any, Any]:
        q = ctx.Queue()
        return q, q

    def mp_pipe() -> tuple[Any, Any]:
        r, w = ctx.Pipe(duplex=False)
        return w, r

    ways: list[tuple[str, Callable[[], tuple[Any, Any]]]] = [
        ("multiprocessing.Queue", mp_queue),
        ("multiprocessing.Pipe", mp_pipe),
    ]

    def sh_queue() -> tuple[Any, Any]:
        q = shoal.Queue()
        return q, q

    ways.append(("shoal.Queue", sh_queue))
    # Looked up, not imported: shows the rest where this build has no shoal.Pipe yet.
    pipe_fn: Any = getattr(shoal, "Pipe", None)
    if pipe_fn is not None:

        def sh_pipe() -> tuple[Any, Any]:
            r, w = pipe_fn(duplex=False)
            return w, r

        ways.append(("shoal.Pipe", sh_pipe))
    return ways


def _send(end: Any) -> Callable[[Any], Any]:
    return end.send if hasattr(end, "send") else end.put  # type: ignore[no-any-return]


def _recv(end: Any) -> Callable[[], Any]:
    return end.recv if hasattr(end, "recv") else end.get  # type: ignore[no-any-return]


def _produce(tx: Any) -> None:
    send = _send(tx)
    msg = b"x" * 100
    for _ in range(SMALL):
        send(msg)
    # Never changed after a send: multiprocessing.Queue pickles it later, in its feeder thread.
    arr = np.arange(ARRAY_BYTES // 8, dtype=np.float64)
    for _ in range(ARRAYS + 1):
        send(arr)


def _consume(rx: Any, report: Any) -> None:
    recv = _recv(rx)
    ok = True
    t0 = time.monotonic()
    for _ in range(SMALL):
        ok = ok and len(recv()) == 100
    touched = 0
    last = ARRAY_BYTES // 8 - 1
    first = recv()  # not timed: a channel's first big message may set up memory for it
    ok = ok and first.shape == (last + 1,) and first[last] == last
    del first
    t1 = time.monotonic()
    for _ in range(ARRAYS):
        a = recv()
        touched += int(a.view(np.uint8)[::PAGE].sum())  # one byte per page
        ok = ok and a.shape == (last + 1,) and a[1] == 1.0 and a[last] == last
        del a
    t2 = time.monotonic()
    report.send((ok, t1 - t0, t2 - t1, touched))


def _measure(make: Callable[[], tuple[Any, Any]]) -> tuple[bool, float, float]:
    """(delivered intact, small messages/s, array GB/s) through one fresh channel."""
    ctx = mp.get_context("fork")
    tx, rx = make()
    mine, theirs = ctx.Pipe(duplex=False)
    consumer = ctx.Process(target=_consume, args=(rx, theirs), daemon=True)
    producer = ctx.Process(target=_produce, args=(tx,), daemon=True)
    consumer.start()
    producer.start()
    try:
        if not mine.poll(_DEADLINE):
            return False, 0.0, 0.0
        ok, small_s, arrays_s, _ = mine.recv()
        producer.join(_DEADLINE)
        consumer.join(_DEADLINE)
        ok = ok and producer.exitcode == 0 and consumer.exitcode == 0
        return bool(ok), SMALL / small_s, ARRAYS * ARRAY_BYTES / arrays_s / 1e9
    finally:
        for p in (producer, consumer):
            if p.exitcode is None:
                p.kill()
                p.join()
        for end in {id(tx): tx, id(rx): rx}.values():
            end.close()
        mine.close()


def run_scene(size_bytes: int, out: TextIO) -> bool:
    del size_bytes  # the messages are the question's, whatever the demo's size
    print(
        f"One producer process -> one consumer process: {SMALL} messages of 100 bytes, then "
        f"{ARRAYS} ndarrays of {ARRAY_BYTES >> 20} MiB (timed after a first one), the consumer "
        "touching one byte per page of each",
        file=out,
    )
    results: dict[str, tuple[bool, float, float]] = {}
    width = max(len(name) for name, _ in _ways())
    for name, make in _ways():
        ok, rate, gbs = _measure(make)
        results[name] = (ok, rate, gbs)
        status = "" if ok else "  PROBLEM: a message was lost or damaged"
        print(
            f"  {name.ljust(width)}  {rate / 1e3:8.0f} k msg/s   {gbs:6.2f} GB/s{status}",
            file=out,
        )
    q, p = results["multiprocessing.Queue"], results["multiprocessing.Pipe"]
    print(
        f"  The stdlib's answer: Pipe {p[1] / q[1]:.1f}x Queue's messages/s, "
        f"{p[2] / q[2]:.1f}x its GB/s (the same pickling and kernel pipe, minus the feeder "
        "thread and its lock; one writer and one reader only).",
        file=out,
    )
    s = results["shoal.Queue"]
    print(
        f"  shoal.Queue: {s[1] / q[1]:.1f}x multiprocessing.Queue's messages/s and "
        f"{s[2] / q[2]:.1f}x its GB/s, with any number of producers and consumers, "
        "no feeder thread, and passable to a Pool as an argument.",
        file=out,
    )
    if "shoal.Pipe" not in results:
        print("  (this build has no shoal.Pipe yet)", file=out)
    return all(ok for name, (ok, _, _) in results.items() if name.startswith("shoal"))
