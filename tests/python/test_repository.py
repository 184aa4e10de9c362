"""The repository stands on its own: nothing it tracks points to files outside it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Spelled in pieces so that this file does not match itself.
OUTSIDE = re.compile("|".join([r"\.\./" + "shared", "DESIGN" + r"\.md", "STYLE" + r"\.md"]))


def test_no_tracked_file_points_outside_the_repository() -> None:
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    found = []
    for name in filter(None, files):
        path = ROOT / name.decode()
        if not path.is_file():
            continue
        data = path.read_bytes()
        if b"\0" in data:
            continue  # binary: golden images, fuzz seeds
        for no, line in enumerate(data.decode(errors="replace").splitlines(), 1):
            if OUTSIDE.search(line):
                found.append(f"{name.decode()}:{no}: {line.strip()}")
    assert not found, "tracked files point outside the repository:\n" + "\n".join(found)


def test_the_version_is_the_same_everywhere_it_is_written() -> None:
    import shoal

    def found(path: str, pattern: str) -> str:
        m = re.search(pattern, (ROOT / path).read_text(), re.MULTILINE)
        assert m, f"no version in {path}"
        return m.group(1)

    versions = {
        "pyproject.toml": found("pyproject.toml", r'^version = "([^"]+)"'),
        "CMakeLists.txt": found("CMakeLists.txt", r"^project\(shoal VERSION (\S+)"),
        "README.md": found("README.md", r"^## What works today \(([^)]+)\)"),
        "docs/changelog.md": found("docs/changelog.md", r"^## (\S+) "),
        "shoal.__version__": shoal.__version__,
    }
    assert len(set(versions.values())) == 1, versions
    # The C++ example asks for this minor version (the package config accepts the same minor).
    wanted = found("examples/cpp/find_package/CMakeLists.txt", r"^find_package\(shoal (\S+) ")
    assert versions["pyproject.toml"].startswith(wanted + "."), (wanted, versions)
