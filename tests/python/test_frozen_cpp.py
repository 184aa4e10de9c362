"""A C++ program and Python share one frozen map (examples/cpp/frozen_example.cpp).

C++ builds the map with shoal::frozen::Builder and Python reads it as a FrozenDict; Python
freezes the same map and the C++ reader looks it up (typed lookups, Python equality: the int
key 7 is found with 7.0). The example binary comes from the dev build (`make dev`; `make test`
builds it before pytest); the test skips, saying so, when it is absent.
"""

from __future__ import annotations

import select
import subprocess

import pytest
from conftest import DEADLINE, cpp_env, cpp_example

import shoal

# The map of frozen_example.cpp's header, in Python.
MAP = {
    "name": "shoal",
    "answer": 42,
    "ratio": 0.5,
    "primes": [2, 3, 5, 7],
    "big": 2**70,
    "nested": {"k": [1, "two", 3.0, None, True]},
    7: "seven",
    1.5: "one and a half",
}

# What the reader prints for MAP (the format documented at the top of the example).
EXPECTED = [
    "keys 8",
    "name shoal",
    "answer 42",
    "ratio 0.5",
    "primes 2,3,5,7",
    f"big {2**70}",
    "nested.k.0 1",
    "nested.k.1 two",
    "nested.k.2 3",
    "nested.k.3 None",
    "nested.k.4 True",
    "seven 7->seven",
    "seven.float 7.0->seven",
    "half 1.5->one and a half",
]


@pytest.fixture
def example() -> list[str]:
    return cpp_example("frozen_example")


def test_cpp_builds_python_reads(example: list[str]) -> None:
    p = subprocess.Popen(
        example,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cpp_env(),
    )
    try:
        assert p.stdout is not None
        ready, _, _ = select.select([p.stdout], [], [], DEADLINE)
        assert ready, "the C++ process printed nothing"
        line = p.stdout.readline()
        assert line.startswith("handle "), line
        d = shoal.attach(line.split()[1])
        assert isinstance(d, shoal.FrozenDict)
        assert d == MAP and d.thaw() == MAP
        assert list(d) == list(MAP)  # C++ insertion order
        assert d[7.0] == d[7] == "seven" and d[1.5] == "one and a half"
        assert isinstance(d["nested"]["k"], shoal.FrozenList)
        _, err = p.communicate("done\n", timeout=DEADLINE)
    finally:
        p.kill()
        p.wait()
    assert p.returncode == 0, err
    assert d["big"] == 2**70  # still mapped here after the C++ creator exited


def test_python_freezes_cpp_reads(example: list[str]) -> None:
    d = shoal.freeze(MAP)
    r = subprocess.run(
        [*example, d.handle()],
        capture_output=True,
        text=True,
        env=cpp_env(),
        timeout=DEADLINE,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == EXPECTED


def test_cpp_reader_refuses_a_non_frozen_handle(example: list[str]) -> None:
    import numpy as np

    a = shoal.share(np.zeros(4))
    r = subprocess.run(
        [*example, a.handle()],
        capture_output=True,
        text=True,
        env=cpp_env(),
        timeout=DEADLINE,
        check=False,
    )
    assert r.returncode != 0
    assert "frozen" in r.stderr
