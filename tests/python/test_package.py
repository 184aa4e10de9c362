"""The ``shoal`` package: every public name resolves, and ``import shoal`` alone stays light
(its submodules load on first use, so a Pool worker under spawn does not pay for numpy)."""

from __future__ import annotations

import ast
import pathlib

import pytest
from conftest import run_python

import shoal


def test_every_public_name_resolves_and_is_listed() -> None:
    for name in shoal.__all__:
        assert getattr(shoal, name) is not None, name
    assert set(shoal.__all__) <= set(dir(shoal))
    assert shoal.__all__ == sorted(shoal.__all__)


def test_the_lazy_names_are_exactly_the_public_names_not_imported_eagerly() -> None:
    # A name in _LAZY but not in __all__ (or neither imported nor lazy) is a slip this catches.
    init = pathlib.Path(shoal.__file__).read_text()
    tree = ast.parse(init)
    eager = {
        alias.asname or alias.name
        for node in tree.body
        if isinstance(node, ast.ImportFrom) and node.module == "_shoal"
        for alias in node.names
    }
    assert set(shoal._LAZY).isdisjoint(eager)
    assert set(shoal._LAZY) | eager | {"__version__"} == set(shoal.__all__)


def test_the_stub_imports_every_public_name_from_where_it_is_loaded() -> None:
    # Type checkers read __init__.pyi, not the lazy __init__.py: the same names, from the same
    # modules, or a name would type as missing (or as the wrong object).
    stub = ast.parse(pathlib.Path(shoal.__file__).with_suffix(".pyi").read_text())
    imported: dict[str, str] = {}
    stub_all: list[str] = []
    for node in stub.body:
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                imported[alias.asname or alias.name] = str(node.module)
        elif isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            stub_all = ast.literal_eval(node.value)
    assert stub_all == shoal.__all__
    assert set(imported) == set(shoal.__all__) - {"__version__"}
    for name, module in imported.items():
        assert module == shoal._LAZY.get(name, "_shoal"), name


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        shoal.no_such_name  # noqa: B018
    with pytest.raises(ImportError):
        from shoal import no_such_name  # type: ignore[attr-defined]  # noqa: F401


def test_import_shoal_loads_no_numpy_until_a_name_needs_it() -> None:
    code = (
        "import sys, shoal\n"
        "print('numpy' in sys.modules, 'shoal._pool' in sys.modules)\n"
        "from shoal import *\n"
        "print('numpy' in sys.modules, Pool is shoal.Pool, type(zeros(3)).__name__)\n"
    )
    r = run_python(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["False False", "True True Array"]


def test_a_container_core_reached_first_loads_its_hooks() -> None:
    # The engine's DictCore, reached in a process that has imported nothing but the package:
    # storing and reading a nested dict (an item by reference) needs shoal._containers' hooks,
    # which the C++ side then imports itself instead of failing.
    code = (
        "import sys, shoal\n"
        "from shoal import _shoal\n"
        "d = _shoal.DictCore(None, True)\n"
        "print('shoal._containers' in sys.modules)\n"
        "d['inner'] = {'x': 1}\n"
        "print(d['inner']['x'], 'shoal._containers' in sys.modules)\n"
    )
    r = run_python(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["False", "1 True"]
