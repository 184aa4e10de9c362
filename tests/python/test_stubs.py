"""The checked-in stub python/shoal/_shoal.pyi matches the built extension (regenerate with
`make stubs` after changing the bindings; the stub depends on the pinned nanobind version)."""

from __future__ import annotations

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_stub_matches_the_built_extension(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "_shoal.pyi"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "nanobind.stubgen",
            "-q",
            "-m",
            "shoal._shoal",
            "-p",
            str(ROOT / "python" / "stubgen-patterns.txt"),
            "-o",
            str(out),
        ],
        check=True,
        cwd=tmp_path,  # import the installed package, not the source tree
    )
    checked_in = (ROOT / "python" / "shoal" / "_shoal.pyi").read_text()
    assert out.read_text() == checked_in, "stub out of date: run `make stubs` and commit it"
