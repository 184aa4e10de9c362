"""A quick figure for shoal.Dict before bench/containers.py (issue 15) exists: get and set of
one int key with a short str value, on a dict of 1000 keys, against a local dict and
Manager().dict(), in one run; then shoal.Dict again while a spawned process overwrites other
keys in a loop. Medians and spreads over 5 repetitions; ns per operation.

    PYTHONPATH=$PWD/build/release/pkg SHOAL_BROKER=$PWD/build/dev/shoal-broker \\
        OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/dict_quick.py

Not run by ``shoal bench`` (it is not under bench/python/): bench/containers.py, with
UltraDict and shared-memory-dict side by side, replaces it.
"""

from __future__ import annotations

import multiprocessing as mp
import statistics
import time
import timeit
from typing import Any

import shoal

REPS = 5


def _ns(stmt: str, d: Any, n: int) -> list[float]:
    return [timeit.timeit(stmt, globals={"d": d}, number=n) / n * 1e9 for _ in range(REPS)]


def _row(label: str, d: Any, n: int) -> None:
    for i in range(1000):
        d[i] = f"value{i}"
    g, s = _ns("d[500]", d, n), _ns("d[500] = 'xvalue'", d, n)
    print(
        f"{label:34s} get {statistics.median(g):7.0f} ns ({min(g):.0f}-{max(g):.0f})"
        f"   set {statistics.median(s):7.0f} ns ({min(s):.0f}-{max(s):.0f})"
    )


def _writer(d: Any, stop: Any) -> None:
    i = 0
    while not stop.is_set():
        d[2000 + i % 100] = f"w{i}"
        i += 1


def main() -> None:
    _row("dict", {}, 200_000)
    _row("shoal.Dict", shoal.Dict(), 200_000)
    with mp.Manager() as m:
        _row("Manager().dict()", m.dict(), 5_000)
    d, stop = shoal.Dict(), shoal.Event()
    p = mp.get_context("spawn").Process(target=_writer, args=(d, stop))
    p.start()
    time.sleep(1.0)
    _row("shoal.Dict, a writer process too", d, 100_000)
    stop.set()
    p.join()


if __name__ == "__main__":
    main()
