"""A C++ program and Python share one array (examples/cpp/array_example.cpp).

The example binary comes from the dev build (`make dev`; `make test` builds it before pytest);
this file builds nothing and skips, saying so, when the binary is absent. Both sides talk to
the same session broker: the handle names the session, and the C++ process finds its socket
through SHOAL_RUNTIME_DIR (this test's own directory, from conftest) exactly as Python does.
"""

from __future__ import annotations

import select
import subprocess

import numpy as np
import pytest
from conftest import DEADLINE, cpp_env, cpp_example

import shoal


@pytest.fixture
def example() -> list[str]:
    return cpp_example("array_example")


def _read_line(p: subprocess.Popen[str]) -> str:
    assert p.stdout is not None
    ready, _, _ = select.select([p.stdout], [], [], DEADLINE)
    assert ready, "the C++ process printed nothing"
    return p.stdout.readline()


def test_cpp_creates_python_reads_then_python_writes_cpp_reads(example: list[str]) -> None:
    n = 100_000
    p = subprocess.Popen(
        [*example, "--n", str(n)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cpp_env(),
    )
    try:
        line = _read_line(p)
        assert line.startswith("handle "), line
        a = shoal.Array.attach(line.split()[1])
        # C++ wrote it: Python reads the same elements, with the dtype and shape C++ chose.
        assert (type(a), a.dtype, a.shape, a.flags.writeable) == (
            shoal.Array,
            np.float64,
            (n,),
            True,
        )
        assert np.array_equal(a, np.arange(n, dtype=np.float64))
        a[::2] = -1.0  # Python writes; the C++ process sums what it now holds
        out, err = p.communicate("done\n", timeout=DEADLINE)
    finally:
        p.kill()
        p.wait()
    assert p.returncode == 0, err
    word, total = out.split()
    assert (word, float(total)) == ("sum", float(a.sum())), err  # %.17g: exact
    assert a[1] == 1.0  # still mapped here after the C++ creator exited


@pytest.mark.parametrize("snapshot", [False, True], ids=["writable", "snapshot"])
def test_python_creates_cpp_attaches_and_reads(example: list[str], snapshot: bool) -> None:
    x = np.linspace(0.0, 1.0, 5001) ** 2
    a = shoal.share(x, writable=not snapshot)
    r = subprocess.run(
        [*example, a.handle()],
        capture_output=True,
        text=True,
        env=cpp_env(),
        timeout=DEADLINE,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    expected = float(np.add.accumulate(x)[-1])  # the same left-to-right sum as C++
    words = r.stdout.split()
    assert words[:3] == ["elements", "5001", "sum"], r.stderr
    assert float(words[3]) == expected  # printed with %.17g: exact


def test_cpp_refuses_an_array_of_another_dtype(example: list[str]) -> None:
    a = shoal.full(10, 3, dtype=np.int32)
    r = subprocess.run(
        [*example, a.handle()],
        capture_output=True,
        text=True,
        env=cpp_env(),
        timeout=DEADLINE,
        check=False,
    )
    assert r.returncode == 1
    assert "array has dtype '<i4', not '<f8'" in r.stderr
