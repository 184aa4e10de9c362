"""Type-checked by mypy (`make lint`), never run: the public API's types as users see them
(msgspec's `reveal_type(...)  # assert` pattern, checked by reading mypy's notes)."""

from __future__ import annotations

from typing import reveal_type

import numpy as np

import shoal


def arrays() -> None:
    a = shoal.zeros((3, 4), dtype=np.float64)
    reveal_type(a)  # assert "shoal._array.Array"
    b = shoal.share(np.arange(3))
    reveal_type(b)  # assert "shoal._array.Array"
    h: str = a.handle()
    c = shoal.Array.attach(h)
    reveal_type(c)  # assert "shoal._array.Array"


def errors() -> None:
    try:
        shoal.Array.attach("shoal1:bad")
    except shoal.DecodeError as e:
        reveal_type(e)  # assert "Any" (see the mypy override in pyproject.toml)
