"""Property tests of shoal.freeze: for arbitrary nested inputs, the frozen view behaves as the
plain object.

Inputs are trees of dict, list, tuple, set and frozenset over None, bool, int (big ones
included), float (nan, -0.0 and the infinities included), str (with and without lone
surrogates) and bytes; dict keys and set members come from the key strategy (those scalars and
tuples/frozensets of them). For each input x:

- freeze(x) == x (when x holds no NaN: a NaN never equals a new NaN object, in plain Python
  too), and freeze(x).thaw() equals x with NaN equal to NaN and -0.0 told from 0.0;
- len, iteration order, indexing (every index, negative ones too), `in` and get match, all the
  way down;
- for dicts, every key of the original is found (except keys holding a NaN, which never match
  a new object) and its value matches; for sets every member is `in` the view.

Derandomized, bounded, no deadline.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shoal

# Also run against the ASan/UBSan build (make test-asan): the encoder and views are C++.
pytestmark = pytest.mark.asan

SETTINGS = settings(
    max_examples=200,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# --- strategies ------------------------------------------------------------------------------------

_INTS = st.one_of(
    st.integers(-(2**64), 2**64),
    st.sampled_from([2**59 - 1, -(2**59), 2**59, -(2**59) - 1, 2**60, 2**63, -(2**63)]),
    st.integers(-(2**2000), 2**2000),
)
_FLOATS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, math.nan, math.inf, -math.inf, 1.0, 2.0**60]),
)
_TEXT = st.one_of(
    st.text(max_size=20),  # no surrogates
    st.text(st.characters(exclude_categories=()), max_size=20),  # lone surrogates too
)
_SCALAR_KEYS = st.one_of(st.none(), st.booleans(), _INTS, _FLOATS, _TEXT, st.binary(max_size=20))

KEYS: st.SearchStrategy[Any] = st.recursive(
    _SCALAR_KEYS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(tuple),
        st.frozensets(inner, max_size=4),
    ),
    max_leaves=8,
)

VALUES: st.SearchStrategy[Any] = st.recursive(
    _SCALAR_KEYS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=6),
        st.lists(inner, max_size=6).map(tuple),
        st.dictionaries(KEYS, inner, max_size=6),
        st.sets(KEYS, max_size=6),
        st.frozensets(KEYS, max_size=6),
    ),
    max_leaves=40,
)

CONTAINERS: st.SearchStrategy[Any] = st.one_of(
    st.dictionaries(KEYS, VALUES, max_size=12),
    st.lists(VALUES, max_size=12),
    st.lists(VALUES, max_size=12).map(tuple),
    st.sets(KEYS, max_size=12),
    st.frozensets(KEYS, max_size=12),
)

# --- comparison helpers --------------------------------------------------------------------------


def has_nan(x: Any) -> bool:
    if isinstance(x, float):
        return math.isnan(x)
    if isinstance(x, dict):
        return any(has_nan(k) or has_nan(v) for k, v in x.items())
    if isinstance(x, (list, tuple, set, frozenset)):
        return any(has_nan(y) for y in x)
    return False


def same(a: Any, b: Any) -> bool:
    """Equality with NaN == NaN, -0.0 != 0.0, and exact types for leaves and plain containers
    (a thawed value must be a plain object of the source's type)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, dict):
        return len(a) == len(b) and all(
            same(ka, kb) and same(va, vb)
            for (ka, va), (kb, vb) in zip(a.items(), b.items(), strict=True)
        )
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, (set, frozenset)):
        # A set rebuilt by thaw() may iterate in another order than the source (Python's
        # order depends on insertion history): compare members, not order.
        return len(a) == len(b) and all(any(same(x, y) for y in b) for x in a)
    return bool(a == b)


def _plain(v: Any) -> Any:
    return v.thaw() if hasattr(v, "thaw") else v


def check_view(v: Any, x: Any) -> None:
    """`v` (a view or a leaf read from one) behaves as `x`, all the way down."""
    if isinstance(x, dict):
        assert isinstance(v, Mapping) and type(v).__name__ == "FrozenDict"
        assert len(v) == len(x)
        assert [same(_plain(a), b) for a, b in zip(v, x, strict=True)] == [True] * len(x)
        for k, val in x.items():
            if has_nan(k):
                continue
            assert k in v, k
            assert k in v.keys()  # noqa: SIM118 - the keys view is tested too
            check_view(v[k], val)
            check_view(v.get(k), val)
        assert v.get(_MISSING) is None and _MISSING not in v
        assert [same(_plain(a), b) for a, b in zip(v.values(), x.values(), strict=True)] == [
            True
        ] * len(x)
    elif isinstance(x, (list, tuple)):
        name = "FrozenList" if isinstance(x, list) else "FrozenTuple"
        assert isinstance(v, Sequence) and type(v).__name__ == name
        n = len(x)
        assert len(v) == n
        for i in range(-n, n):
            check_view(v[i], x[i])
        for a, b in zip(v, x, strict=True):
            check_view(a, b)
        for y in x:
            if not has_nan(y):
                assert y in v
        sl = v[1:-1:2]
        assert type(sl) is type(x) and same(_thaw_all(sl), x[1:-1:2])
    elif isinstance(x, (set, frozenset)):
        assert isinstance(v, AbstractSet) and type(v).__name__ == "FrozenSet"
        assert len(v) == len(x)
        for a, b in zip(v, x, strict=True):
            assert same(_plain(a), b)
        for y in x:
            if not has_nan(y):
                assert y in v
        assert _MISSING not in v
    else:
        assert same(v, x), (v, x)


def _thaw_all(items: Any) -> Any:
    return type(items)(_plain(y) for y in items)


class _Missing:
    """A hashable key that is in no view (Python compares it by identity)."""


_MISSING = _Missing()

# --- properties --------------------------------------------------------------------------------


@SETTINGS
@given(CONTAINERS)
def test_freeze_equals_its_source_and_thaws_back(x: Any) -> None:
    v = shoal.freeze(x)
    if not has_nan(x):
        assert v == x
        assert x == v
    assert same(v.thaw(), x)


@SETTINGS
@given(CONTAINERS)
def test_frozen_view_behaves_as_the_plain_object(x: Any) -> None:
    check_view(shoal.freeze(x), x)


@SETTINGS
@given(st.dictionaries(KEYS, st.integers(), min_size=1, max_size=200))
def test_every_key_of_a_dict_is_found(x: dict[Any, int]) -> None:
    v = shoal.freeze(x)
    assert len(v) == len(x)
    for k, val in x.items():
        if has_nan(k):
            assert k not in v  # never matched: the view holds other NaN objects
            continue
        assert v[k] == val, k
    assert [same(_plain(a), b) for a, b in zip(v.keys(), x.keys(), strict=True)] == [True] * len(x)


@SETTINGS
@given(st.lists(KEYS, max_size=30).map(tuple))
def test_hash_of_a_hashable_frozen_tuple_equals_the_tuples(x: tuple[Any, ...]) -> None:
    v = shoal.freeze(x)
    if not has_nan(x):  # Python hashes a NaN by identity: a new NaN hashes differently
        assert hash(v) == hash(x)
    s = frozenset(y for y in x if not has_nan(y))
    assert hash(shoal.freeze(s)) == hash(s)
