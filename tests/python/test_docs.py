"""The docs list the whole public API: every name in ``shoal.__all__`` and every public header in
docs/index.md, every documented name in the API reference (docs/api.md), and the error classes
there as python/bindings/errors.cpp makes them.

These tests read files only: ``shoal.__all__`` is parsed from python/shoal/__init__.py (no
import), so they need neither the compiled extension nor a session.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INDEX = ROOT / "docs" / "index.md"
API = ROOT / "docs" / "api.md"


@pytest.fixture(autouse=True)
def runtime_dir() -> Iterator[str]:
    """Replaces conftest's fixture of this name, which starts each test with a fresh session
    state through the compiled extension: nothing here needs one."""
    yield ""


def public_names() -> list[str]:
    tree = ast.parse((ROOT / "python" / "shoal" / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            names = ast.literal_eval(node.value)
            assert isinstance(names, list) and names, "__all__ is not a list of names"
            return [str(n) for n in names]
    raise AssertionError("python/shoal/__init__.py has no __all__")


def error_classes() -> dict[str, tuple[list[str], str]]:
    """name -> (bases, docstring), as python/bindings/errors.cpp creates them."""
    text = (ROOT / "python" / "bindings" / "errors.cpp").read_text()
    made = re.findall(r'make_type\(\s*m,\s*"(\w+)",\s*\{([^}]*)\},\s*"([^"]*)"\s*\)', text)
    assert made, "no make_type(...) calls found in errors.cpp"
    names = {"base": "ShoalError", "timeout": "ShoalTimeoutError"}
    out = {}
    for name, bases, doc in made:
        out[name] = (
            [names.get(b.strip(), b.strip().removeprefix("PyExc_")) for b in bases.split(",")],
            doc,
        )
    return out


def test_index_lists_every_name_in_all() -> None:
    text = INDEX.read_text()
    missing = [n for n in public_names() if not re.search(rf"`{re.escape(n)}[`(]", text)]
    assert not missing, f"docs/index.md does not list these names of shoal.__all__: {missing}"


def test_index_lists_every_public_header() -> None:
    text = INDEX.read_text()
    headers = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "include").rglob("*.hpp"))
    assert headers
    missing = [h for h in headers if f"`{h}`" not in text]
    assert not missing, f"docs/index.md does not list these public headers: {missing}"


def test_api_reference_documents_every_name_in_all() -> None:
    text = API.read_text()
    errors = error_classes()
    for name in public_names():
        if name in errors:
            assert re.search(rf"^\| `{name}` \|", text, re.MULTILINE), f"{name} not in the table"
        elif name == "__version__":
            assert "`shoal.__version__`" in text
        else:
            assert f"::: shoal.{name}\n" in text, f"docs/api.md has no '::: shoal.{name}'"


def test_api_reference_error_table_matches_errors_cpp() -> None:
    rows = {}
    for line in API.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and re.fullmatch(r"`\w+Error`", cells[0]):
            rows[cells[0].strip("`")] = (cells[1].strip("`"), cells[2])
    errors = error_classes()
    assert set(rows) == set(errors)
    for name, (bases, doc) in errors.items():
        also, said = rows[name]
        assert said == doc, f"{name}: docs/api.md says {said!r}, errors.cpp {doc!r}"
        # "also a": the base besides ShoalError (ShoalError's own: Exception), or none.
        others = [b for b in bases if b != "ShoalError"]
        assert [also] == others if others else also == "", (name, also, bases)


def test_the_version_in_the_api_reference_is_the_package_version() -> None:
    init = (ROOT / "python" / "shoal" / "__init__.py").read_text()
    m = re.search(r'^__version__ = "([^"]+)"', init, re.MULTILINE)
    assert m
    assert f'`"{m.group(1)}"`' in API.read_text()
    assert f'`"{m.group(1)}"`' in INDEX.read_text()
