"""A seeded mutation fuzzer for the Python frozen views (python/bindings/frozen_bind.cpp).

libFuzzer's frozen_fuzzer exercises the C++ reader; this one exercises what Python users call,
which has read paths of its own (the views' slots, thaw, repr, ==, hash, freeze of a view): a
forged cycle once made them recurse until SIGSEGV while the C++ reader refused it.

Each case is a file made from a seed image by a few mutations (bit flips, a ref word rewired to
another node -- itself, a later one, any tag --, a word set to an edge value, a cut, a copied
run of bytes), loaded and read every way a user can. Only shoal.DecodeError,
IncompatibleSegmentError, KeyError (a flipped hash: the key iterates, its lookup misses),
TypeError (hash of a list view, as for list) and the allow_pickle refusal may come out.
Anything else, or a crash, is a bug: the parent prints the seed and case and writes the input
to the artifact directory.

Cases are a pure function of (seed, case index), so `--seed S --first I --cases 1` replays one.
The child runs with sys.setrecursionlimit(10**6), so that a recursion shoal does not bound
shows up as a crash instead of hiding behind Python's limit.

    python fuzz/frozen_views_fuzz.py --seed 1 --cases 400          # the short run of make test
    python fuzz/frozen_views_fuzz.py --seconds 600                 # make fuzz: a random seed
"""

from __future__ import annotations

import argparse
import os
import pathlib
import random
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent
SEED_DIRS = [HERE / "corpus" / "frozen", HERE.parent / "tests" / "data" / "frozen" / "v1"]
HEADER = 64
EDGE_WORDS = [0, 3, 8, 15, 2**63, 2**64 - 1, 2**64 - 16 | 8, 64 | 8, 64 | 10, 2**32, 2**40 | 9]


def seeds() -> list[bytes]:
    out = []
    for d in SEED_DIRS:
        for p in sorted(d.iterdir()):
            data = p.read_bytes()
            if data[:8] == b"SHOALFRZ":
                out.append(data)
    return out


def mutate(data: bytes, rng: random.Random) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(6)
        words = (len(b) - HEADER) // 8
        if op == 0 and b:  # flip bits
            for _ in range(rng.randint(1, 4)):
                i = rng.randrange(len(b))
                b[i] ^= 1 << rng.randrange(8)
        elif op in (1, 2) and words > 0:  # rewire a ref word to a node: self, later, anywhere
            at = HEADER + 8 * rng.randrange(words)
            node = HEADER + 16 * rng.randrange(max(1, (len(b) - HEADER) // 16))
            tag = rng.choice([8, 9, 10, 11, 12]) if op == 1 else rng.randrange(4, 16)
            struct.pack_into("<Q", b, at, node | tag)
        elif op == 3 and words > 0:  # an edge value
            at = HEADER + 8 * rng.randrange(words)
            struct.pack_into("<Q", b, at, rng.choice(EDGE_WORDS))
        elif op == 4 and len(b) > HEADER:  # the root, rewired
            node = HEADER + 16 * rng.randrange(max(1, (len(b) - HEADER) // 16))
            struct.pack_into("<Q", b, 24, node | rng.randrange(4, 16))
        elif op == 5 and len(b) > HEADER + 16:  # a run of bytes copied over another place
            n = rng.randint(8, 64)
            src = rng.randrange(HEADER, len(b) - 8)
            dst = rng.randrange(HEADER, len(b) - 8)
            chunk = b[src : src + n]
            b[dst : dst + len(chunk)] = chunk
            del b[len(data) :]
    if rng.random() < 0.05:
        del b[rng.randrange(len(b) + 1) :]
    return bytes(b)


def case_bytes(corpus: list[bytes], seed: int, index: int) -> bytes:
    rng = random.Random(seed * 1_000_003 + index)
    return mutate(rng.choice(corpus), rng)


# ---- the child: read each case every way a user can --------------------------------------------
def walk(v: Any, depth: int = 0) -> None:
    import numpy as np

    if depth > 64:
        return
    if isinstance(v, Mapping):
        len(v)
        for k in v:
            walk(k, depth + 1)
            walk(v[k], depth + 1)
        list(v.items())
        list(reversed(v))
        v.get((1, "a"))
    elif isinstance(v, AbstractSet):
        for k in v:
            walk(k, depth + 1)
            _ = k in v
    elif isinstance(v, Sequence) and not isinstance(v, (str, bytes)):
        for i in range(len(v)):
            walk(v[i], depth + 1)
        v[::-1]
        _ = 12345 in v
    elif isinstance(v, np.ndarray):
        v.tobytes()


def read_every_way(path: str) -> tuple[int, int]:
    """(steps run, steps refused): each read is tried on its own, so one refusal does not hide
    the paths after it."""
    import shoal

    try:
        try:
            v = shoal.load(path)
        except ValueError as e:
            if "allow_pickle" not in str(e):
                raise
            # Pickled leaves (seeds/leaves.shoal): read them too, since their failures are a
            # path of their own (DecodeError chained to the pickle error). The seeds' pickles
            # name fractions, datetime and the like; a few flipped bits do not make os.system.
            v = shoal.load(path, allow_pickle=True)
    except (shoal.DecodeError, shoal.IncompatibleSegmentError):
        return 1, 1
    steps = [
        lambda: walk(v),
        lambda: v.thaw() if hasattr(v, "thaw") else None,
        lambda: repr(v),
        lambda: v == v.thaw() if hasattr(v, "thaw") else None,
        lambda: hash(v),
        lambda: shoal.freeze(v),
        lambda: v[("a", 1)] if isinstance(v, Mapping) else None,
        lambda: v._entry(-1) if hasattr(v, "_entry") and len(v) else None,
    ]
    refused = 0
    for step in steps:
        try:
            step()
        except (KeyError, TypeError):
            pass  # a flipped hash misses; hash() of a list view is a TypeError, as for list
        except MemoryError:
            pass  # a pickled leaf whose flipped length asks pickle for too much
        except RecursionError as e:
            # CPython 3.12+ bounds C recursion itself (1500 levels in 3.12.0): repr of a
            # 300-level seed reaches it. On 3.11 (make test's run) the limit is raised, so an
            # unbounded walk still shows as a crash, and shoal's own guard never fires this
            # shallow: there, any RecursionError is a bug.
            if sys.version_info < (3, 12) or "nesting too deep" in str(e):
                raise
        except shoal.DecodeError:
            refused += 1
        except ValueError as e:
            if "truth value of an" in str(e) or "integer string conversion" in str(e):
                # `x in v` or == over ndarray leaves, repr of an int whose length a flip made
                # huge: Python's and numpy's own answers, as for the plain objects
                continue
            if "allow_pickle" not in str(e):
                raise
            refused += 1
    return len(steps), refused


def child(seed: int, first: int, cases: int, deadline: float, progress: str) -> int:
    sys.setrecursionlimit(10**6)
    corpus = seeds()
    fd, path = tempfile.mkstemp(suffix=".shoal")
    os.close(fd)
    done = steps = refused = 0
    try:
        for i in range(first, first + cases):
            if deadline and time.monotonic() > deadline:
                break
            with open(progress, "w") as f:
                f.write(str(i))
            with open(path, "wb") as f:
                f.write(case_bytes(corpus, seed, i))
            ran, no = read_every_way(path)
            steps += ran
            refused += no
            done += 1
    finally:
        os.unlink(path)
    print(
        f"frozen_views_fuzz: seed {seed}: {done} cases, none failed "
        f"({steps} reads: {refused} refused with DecodeError, {steps - refused} read through)"
    )
    return 0


# ---- the parent: run the child, report a crash or an unexpected error with its input ---------------
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=None, help="default: a random seed, printed")
    ap.add_argument("--first", type=int, default=0, help="index of the first case")
    ap.add_argument("--cases", type=int, default=10**9)
    ap.add_argument("--seconds", type=float, default=0, help="stop after this long (0: no limit)")
    ap.add_argument("--artifacts", default="build/fuzz", help="where a failing input is written")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--deadline", type=float, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--progress", default="", help=argparse.SUPPRESS)
    a = ap.parse_args()
    seed = a.seed if a.seed is not None else random.SystemRandom().randrange(2**31)
    if a.child:
        return child(seed, a.first, a.cases, a.deadline, a.progress)
    if a.cases <= 0 or (a.cases >= 10**9 and a.seconds <= 0):
        ap.error("give --cases N or --seconds S")
    print(f"frozen_views_fuzz: seed {seed}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        progress = os.path.join(tmp, "progress")
        deadline = time.monotonic() + a.seconds if a.seconds > 0 else 0
        cmd = [sys.executable, __file__, "--child", "--seed", str(seed), "--first", str(a.first)]
        cmd += ["--cases", str(a.cases), "--deadline", str(deadline), "--progress", progress]
        # The child inherits CLOCK_MONOTONIC, so the deadline means the same to it.
        r = subprocess.run(cmd, check=False)
        if r.returncode == 0:
            return 0
        index = int(pathlib.Path(progress).read_text()) if os.path.exists(progress) else a.first
    out = pathlib.Path(a.artifacts)
    out.mkdir(parents=True, exist_ok=True)
    artifact = out / f"frozen-views-crash-seed{seed}-case{index}.shoal"
    artifact.write_bytes(case_bytes(seeds(), seed, index))
    how = f"signal {-r.returncode}" if r.returncode < 0 else f"exit status {r.returncode}"
    print(
        f"frozen_views_fuzz: FAILED ({how}) at seed {seed} case {index}; input: {artifact}\n"
        f"  replay: python {__file__} --seed {seed} --first {index} --cases 1",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
