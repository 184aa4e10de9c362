"""Seed 001's proposed solution, as its author wrote it, running on shoal.Pool.

    python examples/python/seed001_initret.py [--size-mb MB]

The seed proposes (CPython issue 79018, never merged) that a Pool pass its initializer's return
value to every task as the keyword argument ``initret``: the cache reaches each worker once,
through the initializer, and the data flow is plain to read, with no global. shoal.Pool does
it with ``initret=True``; the code below is the seed's with only the import changed and
``initret=True`` added (and a size that ``--size-mb`` sets, for the test run).
"""

from __future__ import annotations

import argparse
from typing import Dict  # noqa: UP035 - the seed's own spelling

from shoal import Pool

parser = argparse.ArgumentParser()
parser.add_argument("--size-mb", type=float, default=None, help="about this much cache")
size_mb = parser.parse_args().size_mb
N = 2**16 - 1 if size_mb is None else max(1024, int(size_mb * 2**20 / 96))

cache = {i: bin(i) for i in range(N)}


def func(i: int, initret: Dict[int, str]) -> int:  # noqa: UP006
    cache = initret  # Re-assign var for illustrative/readability purposes
    return cache[i].count("1")


def identity(cache: Dict[int, str]) -> Dict[int, str]:  # noqa: UP006
    return cache


if __name__ == "__main__":
    with Pool(8, initializer=identity, initargs=(cache,), initret=True) as pool:
        counts = pool.map(func, [i for i in range(N)])
    assert counts == [i.bit_count() for i in range(N)], "wrong counts"
    print(f"counted the on-bits of {N} integers in 8 workers, the cache passed as initret")
