"""Seed 002, its nested-mutation and Value/Array parts, with shoal in place of multiprocessing's
managers and sharedctypes.

    python examples/python/seed002_nested.py [--start-method spawn|fork|forkserver]

The seed's author puts an object in a ``manager.list()`` and changes it from a child three ways
(``obj[0].x = 500``, a method that sets ``x = 200``, ``obj[0].x += 1``), expecting the parent to
see ``201``; with a manager every change is lost, because the container holds a copy and its
proxy is not told of changes inside it. Here the object is a dict (its class replaced by a dict:
live user classes come with the managers issue) appended to a shoal.List: a dict stored into a
shoal container becomes a shoal.Dict itself, held by reference, so ``shared[0]["x"] = 500``
changes the one dict every process sees, and the parent prints ``201``, as the author expected.

Its shared-memory example, ``mp.Value('d', 0.0)`` and ``mp.Array('i', range(10))`` changed by a
child, runs with ``shoal.Value`` and a writable ``shoal.Array``: the parent sees ``3.1415927`` and
``[0, -1, ..., -9]``. Both are stored in the dict too (by reference: the same shared objects),
and changed through it. The script exits with status 1 if any outcome differs from what the
seed's author expected.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
from typing import Any

import shoal


def change(obj: dict[str, Any]) -> None:
    """The seed's ``MyAwesomeClass.change``, for a dict."""
    obj["x"] = 200


def changer(shared: Any) -> None:
    shared[0]["x"] = 500
    print("Hello! ", shared[0]["x"])
    change(shared[0])
    print("Hello! ", shared[0]["x"])
    shared[0]["x"] += 1
    print("Hello! ", shared[0]["x"])


def shared_mem_demo(target_num: Any, target_arr: Any) -> None:
    target_num.value = 3.1415927
    for i in range(len(target_arr)):
        target_arr[i] = -target_arr[i]


def through_the_dict(state: Any) -> None:
    state["num"].value += 1
    state["arr"][0] = 100
    state["log"]["child"] = "was here"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--start-method", default="spawn", choices=["spawn", "fork", "forkserver"])
    ap.add_argument("--size-mb", type=float, default=None, help="ignored (tests pass it)")
    args = ap.parse_args()
    ctx = mp.get_context(args.start_method)
    ok = True

    # The nested-mutation example: the object in a shared container, changed by a child.
    shared = shoal.List()
    shared.append({"x": 100})  # a new shoal.Dict, held by reference
    p = ctx.Process(target=changer, args=(shared,))
    p.start()
    p.join()
    print("Here I am: ", shared[0]["x"])
    ok &= p.exitcode == 0 and shared[0]["x"] == 201

    # The Value/Array example.
    my_num = shoal.Value("d", 0.0)
    my_arr = shoal.zeros(10, dtype="i")
    my_arr[:] = range(10)
    p = ctx.Process(target=shared_mem_demo, args=(my_num, my_arr))
    p.start()
    p.join()
    print(my_num.value)
    print(my_arr[:].tolist())
    ok &= p.exitcode == 0 and my_num.value == 3.1415927
    ok &= my_arr.tolist() == [-i for i in range(10)]

    # The same objects held by a dict: references to them, not copies.
    state = shoal.Dict(num=my_num, arr=my_arr, log={})
    p = ctx.Process(target=through_the_dict, args=(state,))
    p.start()
    p.join()
    print("through a dict:", my_num.value, my_arr[0], dict(state["log"]))
    ok &= p.exitcode == 0 and my_num.value == 4.1415927 and my_arr[0] == 100
    ok &= state["log"] == {"child": "was here"}

    print("every outcome as the seed's author expected" if ok else "UNEXPECTED OUTCOME")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
