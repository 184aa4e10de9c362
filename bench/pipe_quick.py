"""A quick figure for shoal.Pipe before bench/channels.py (issue 16) carries the comparison:
round trips of a 100-byte send_bytes/recv_bytes to an echoing child (after 1,000 warm-up ones),
and one-way 100-byte messages to a consumer process that answers once at the end; the same code
for multiprocessing.Pipe and shoal.Pipe, in one run, under fork.

    PYTHONPATH=$PWD/build/dev/pkg .venv/bin/python bench/pipe_quick.py

Not run by ``shoal bench`` (it is not under bench/python/).
"""

from __future__ import annotations

import multiprocessing as mp
import time
from typing import Any

import shoal

ROUND_TRIPS = 20_000
ONE_WAY = 200_000
MSG = b"x" * 100


def _echo(c: Any) -> None:
    while m := c.recv_bytes():
        c.send_bytes(m)


def _sink(c: Any, n: int) -> None:
    for _ in range(n):
        c.recv_bytes()
    c.send_bytes(b"done")


def run(pipe: Any, name: str) -> None:
    ctx = mp.get_context("fork")
    a, b = pipe()
    p = ctx.Process(target=_echo, args=(b,))
    p.start()
    for _ in range(1000):
        a.send_bytes(MSG)
        a.recv_bytes()
    t = time.perf_counter()
    for _ in range(ROUND_TRIPS):
        a.send_bytes(MSG)
        a.recv_bytes()
    rt = (time.perf_counter() - t) / ROUND_TRIPS
    a.send_bytes(b"")
    p.join()
    a, b = pipe()
    p = ctx.Process(target=_sink, args=(b, ONE_WAY))
    p.start()
    t = time.perf_counter()
    for _ in range(ONE_WAY):
        a.send_bytes(MSG)
    a.recv_bytes()
    rate = ONE_WAY / (time.perf_counter() - t)
    p.join()
    print(f"{name}: round trip {rt * 1e6:.1f} us, one way {rate / 1e3:.0f} k msgs/s (100 B)")


if __name__ == "__main__":
    run(mp.Pipe, "multiprocessing.Pipe")
    run(shoal.Pipe, "shoal.Pipe")
