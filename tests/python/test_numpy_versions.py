"""shoal.Array's results are what an ndarray's are, under every numpy pyproject.toml allows.

numpy 1.x and 2.x call an ndarray subclass's hooks differently (`__array_wrap__` gained
`return_scalar` in 2.0; 1.x builds boolean-mask results of a subclass with the source's flags),
so each operation below runs on a plain ndarray and on shoal arrays holding the same values, and
the results must agree in kind (scalar or array, and which scalar type), value and writeability.
`make test` runs this file with requirements-dev.txt's numpy and, in scripts/test_install.sh,
with the oldest numpy allowed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import shoal

OPS: list[tuple[str, Callable[[Any], Any]]] = [
    ("sum", lambda a: a.sum()),
    ("mean", lambda a: a.mean()),
    ("max", lambda a: a.max()),
    ("min", lambda a: np.min(a)),
    ("std", lambda a: a.std()),
    ("prod", lambda a: a[0].prod()),
    ("any", lambda a: (a > 1).any()),
    ("np.sum", lambda a: np.sum(a)),
    ("item + 1", lambda a: a[0, 1] + 1),
    ("0-d + 1", lambda a: a[0, 1:2].reshape(()) + 1),
    ("np.sin of 0-d", lambda a: np.sin(a[0, 1:2].reshape(()))),
    ("sum(axis)", lambda a: a.sum(axis=0)),
    ("sum(keepdims)", lambda a: a.sum(keepdims=True)),
    ("a + 1", lambda a: a + 1),
    ("mask", lambda a: a[a > 2]),
    ("fancy", lambda a: a[[0, 1]]),
    ("compress", lambda a: a.compress([True, False], axis=0)),
    ("take", lambda a: a.take([0, 2])),
]


def _sources() -> list[tuple[str, Any]]:
    x = np.arange(6.0).reshape(2, 3)
    return [("share", shoal.share(x)), ("writable", shoal.share(x, writable=True))]


@pytest.mark.parametrize("name,op", OPS, ids=[n for n, _ in OPS])
def test_results_are_what_an_ndarray_gives(name: str, op: Callable[[Any], Any]) -> None:
    x = np.arange(6.0).reshape(2, 3)
    want = op(x)
    for kind, a in _sources():
        got = op(a)
        where = f"{name} of a {kind} array under numpy {np.__version__}"
        if isinstance(want, np.ndarray):
            assert type(got) is np.ndarray, f"{where}: {type(got)}"
            assert got.shape == want.shape and np.array_equal(got, want), where
            assert got.flags.writeable, f"{where}: a new result is writeable"
        else:
            assert type(got) is type(want), f"{where}: {type(got)}, not {type(want)}"
            assert got == want, where


def test_scalar_results_work_where_python_numbers_do() -> None:
    a = shoal.share(np.array([1.25, 2.5, 3.75]))
    assert round(a.mean(), 1) == 2.5
    assert json.loads(json.dumps(a.sum())) == 7.5
    assert f"{a.max():.2f}" == "3.75"
    m = a[a > 2]
    m[0] = 0.0  # a mask's result is a private, writeable copy; the snapshot is untouched
    assert m.tolist() == [0.0, 3.75] and a.tolist() == [1.25, 2.5, 3.75]
