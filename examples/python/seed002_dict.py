"""Seed 002, its dict part: a dict that several processes change, with shoal.Dict in place of
``multiprocessing.Manager().dict()``.

    python examples/python/seed002_dict.py [--start-method spawn|fork|forkserver] [--n 200]

The seed shares ``manager.dict()`` with a child that sets ``d[1] = '1'``, ``d['2'] = 2`` and
``d[0.25] = None``; the parent then sees the three keys. With shoal the dict lives in shared
memory: the child writes it in place (no server process, no socket, no pickle per operation)
and the parent reads it in place.

The seed then stores an instance of a user class in a shared container and changes it from a
child (``obj[0].x = 500``): with a manager the change is lost, because the container holds a
copy. shoal.Dict stores a user class instance by value too (a pickled copy: live user classes
come with the managers issue), so the change is lost the same way, and the seed's workaround,
reading, changing and storing back, works, made atomic by ``d.lock``. The script also counts
to an exact total from several processes under ``d.lock``. It exits with status 1 if any
outcome differs from what the seed's author expected.

(Its list part, ``manager.list(range(10)).reverse()``, waits for shoal.List. Its nested
mutation, with the class replaced by a dict, and its Value/Array example are in
seed002_nested.py: a dict stored into a shoal.Dict is a live shoal.Dict, so
``d["a"]["x"] = 1`` is seen by every process.)
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
from typing import Any

import shoal


class MyAwesomeClass:
    def __init__(self) -> None:
        self.x = 100

    def __str__(self) -> str:
        return str(self.x)


def demo_func(target_dict: Any) -> None:
    target_dict[1] = "1"
    target_dict["2"] = 2
    target_dict[0.25] = None


def changer(d: Any) -> None:
    d[0].x = 500  # changes the copy read back: lost, as with a manager
    with d.lock:  # the seed's workaround: read, change, store back (atomic under the lock)
        tmp = d[0]
        tmp.x += 1
        d[0] = tmp


def count(d: Any, n: int) -> None:
    for _ in range(n):
        with d.lock:
            d["count"] += 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--start-method", default="spawn", choices=["spawn", "fork", "forkserver"])
    ap.add_argument("--n", type=int, default=200, help="increments per counting process")
    ap.add_argument("--size-mb", type=float, default=None, help="ignored (tests pass it)")
    args = ap.parse_args()
    ctx = mp.get_context(args.start_method)
    ok = True

    my_dict = shoal.Dict()
    p = ctx.Process(target=demo_func, args=(my_dict,))
    p.start()
    p.join()
    print("the child's writes, seen by the parent:", my_dict)
    ok &= my_dict == {1: "1", "2": 2, 0.25: None}

    d = shoal.Dict()
    d[0] = MyAwesomeClass()
    p = ctx.Process(target=changer, args=(d,))
    p.start()
    p.join()
    print("a user class stored by value; the child's store-back is seen:", d[0])
    ok &= d[0].x == 101

    d["count"] = 0
    workers = [ctx.Process(target=count, args=(d, args.n)) for _ in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    print(f"3 processes x {args.n} increments under d.lock:", d["count"])
    ok &= d["count"] == 3 * args.n

    print("every outcome as the seed's author expected" if ok else "UNEXPECTED OUTCOME")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
