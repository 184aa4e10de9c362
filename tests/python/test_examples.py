"""Every file under examples/python runs as a test, at a small size."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

EXAMPLES = sorted(
    (pathlib.Path(__file__).resolve().parents[2] / "examples" / "python").glob("*.py")
)


# Serial: the seed examples check the machine's Shmem, which parallel tests disturb.
@pytest.mark.serial
@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(path: pathlib.Path) -> None:
    r = subprocess.run(
        [sys.executable, str(path), "--size-mb", "4"],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip(), "each example narrates what it did"
