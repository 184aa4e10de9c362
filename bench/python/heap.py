"""The shared-memory allocator (C++ shoal::Heap) against glibc malloc/free, side by side.

The figures come from the C++ program ``bench/cpp/heap_bench.cpp`` (an allocator is measured
from C++, where a Python call would cost more than the allocation): the cost of an allocation
and a free, and the memory held after 10^5 random allocations and frees of log-uniform sizes
between 8 B and 1 MiB. ``make bench`` builds it in the release preset first
(``make bench-heap`` runs it alone). ``--quick`` runs fewer alloc/free pairs.

Run ``python bench/python/heap.py [--quick]`` to print the section; ``shoal bench`` calls
``run(quick)``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
from pathlib import Path

from shoal._tools.harness import section

ROOT = Path(__file__).resolve().parents[2]
RELEASE = ROOT / "build" / "release"


def run(quick: bool) -> str:
    program = RELEASE / "bench" / "cpp" / "heap_bench"
    broker = RELEASE / "shoal-broker"
    if not program.exists() or not broker.exists():
        raise SystemExit(f"{program} is not built: run `make bench-heap` (or `make bench`)")
    proc = subprocess.run(
        [str(program)] + (["--quick"] if quick else []),
        env={**os.environ, "SHOAL_BROKER": str(broker)},
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"heap_bench failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    body = proc.stdout.split("\n", 1)[1].lstrip(
        "\n"
    )  # the program's own title line goes; section() adds one
    note = (
        "One process, one thread (the allocator, not contention). Ratios are against glibc on "
        "the same sequence of sizes; the fragmentation target is met when the memory the heap "
        "holds is at most 2 x the live bytes + 32 B per live block (docs/design/heap.md).\n\n"
    )
    return section("Heap allocator: shoal::Heap vs glibc malloc", note + body)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    print(run(p.parse_args().quick))
