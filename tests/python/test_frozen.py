"""shoal.freeze: frozen object graphs, in one process, across processes and in files.

What is proved here:
- A frozen view compares, iterates, indexes and looks up exactly as the plain object does:
  insertion order, Python's key equality (1, 1.0 and True are one key; 0.0 and -0.0; 2**60 and
  2.0**60; str and bytes differ), KeyError/IndexError as Python raises them, slices as plain
  lists and tuples, hashes of tuples and frozensets, NaN keys that iterate but never match.
- Leaves keep their type and value: big ints, floats (nan, -0.0, inf), lone surrogates, bytes,
  None and bools; other types are pickled, or refused with allow_pickle=False; ndarray leaves
  are read-only and zero-copy. Unsupported keys, cycles and absurd nesting are refused cleanly.
- A view pickles to a small handle and travels as a Process/Pool argument and result, through
  Queue and Pipe, and is inherited over fork, under fork, spawn and forkserver (the `ctx`
  fixture); one built in a Pool worker that has exited is still readable; its tables are
  probed correctly by processes with other PYTHONHASHSEED values.
- save/load round-trip; pickled leaves need allow_pickle=True to load; truncated, corrupted and
  foreign files raise shoal.DecodeError and never crash (checked in a subprocess, so that a
  crash fails the test instead of killing the runner); the golden files of tests/data/frozen
  still load as described.

Child processes run module-level functions (spawn and forkserver import this module) and answer
over a Pipe or a Queue.
"""

from __future__ import annotations

import collections
import copy
import datetime
import decimal
import enum
import fractions
import functools
import json
import math
import multiprocessing as mp
import os
import pathlib
import pickle
import re
import struct
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
import pytest
from conftest import DEADLINE, run_python, wait_until

import shoal

GOLDEN = pathlib.Path(__file__).resolve().parents[1] / "data" / "frozen" / "v1"
HANDLE_MAX = 400  # bytes: a pickled view is a handle, whatever the size of what it views

# Set by a test just before it forks: what a forked child inherits (never set at import time,
# so spawn and forkserver children start without it).
INHERITED: dict[str, Any] = {}


class Color(enum.IntEnum):
    RED = 1
    GREEN = 2


@dataclass(frozen=True)
class Point:
    x: int
    y: int


class Text(str):
    pass


class Number(float):
    pass


Pair = collections.namedtuple("Pair", "a b")


# --- helpers ------------------------------------------------------------------------------------


def same(a: Any, b: Any) -> bool:
    """Deep equality where NaN equals NaN and -0.0 differs from 0.0 (a bitwise-minded ==), and
    types must match for leaves (True is not 1, 1.0 is not 1)."""
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (
            isinstance(a, np.ndarray)
            and isinstance(b, np.ndarray)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")
        )
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        ka, kb = list(a.keys()), list(b.keys())
        return (
            len(ka) == len(kb)
            and all(same(x, y) for x, y in zip(ka, kb, strict=True))
            and all(same(a[x], b[y]) for x, y in zip(ka, kb, strict=True) if not _nan(x))
        )
    if isinstance(a, AbstractSet) and isinstance(b, AbstractSet):
        # Members, not order: a set rebuilt (thaw, a literal) may iterate in another order.
        return len(a) == len(b) and all(any(same(x, y) for y in b) for x in a)
    if isinstance(a, (list, tuple, Sequence)) and not isinstance(a, (str, bytes)):
        if not isinstance(b, Sequence) or isinstance(b, (str, bytes)) or len(a) != len(b):
            return False
        return all(same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and bool(a == b)


def _nan(x: Any) -> bool:
    return isinstance(x, float) and math.isnan(x)


def _recv(conn: Connection) -> Any:
    assert conn.poll(DEADLINE), "the child did not answer"
    return conn.recv()


def _join(p: Any) -> None:
    p.join(DEADLINE)
    assert p.exitcode == 0, f"child exited with {p.exitcode}"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _sample() -> dict[Any, Any]:
    """A little of everything the frozen layout encodes natively."""
    return {
        "none": None,
        "bools": [True, False],
        "ints": [0, 1, -1, 2**59 - 1, -(2**59), 2**59, -(2**59) - 1, 2**63, -(2**63), 10**40],
        "floats": (0.5, -0.0, math.inf, -math.inf, 5e-324, 1.7976931348623157e308),
        "text": ["", "ascii", "héllo", "日本語", "🐍", "a\x00b", "\ud800", "x\udfffy"],
        "bytes": [b"", b"\x00\xff", bytes(range(256))],
        "nested": {"list": [1, [2, [3, []]]], "tuple": (1, (2, ())), "empty": {}},
        "set": {1, "two", b"three", (4, "four")},
        "frozenset": frozenset({"a", frozenset({1, 2})}),
        1: "int key",
        2.5: "float key",
        b"bkey": "bytes key",
        (1, "t"): "tuple key",
        frozenset({1, "f"}): "frozenset key",
        None: "None key",
    }


# --- types, equality and the plain-object protocols ----------------------------------------------


def test_freeze_returns_a_view_of_each_container_type() -> None:
    cases: list[tuple[Any, str, Any]] = [
        ({"a": 1}, "FrozenDict", Mapping),
        (collections.OrderedDict(a=1), "FrozenDict", Mapping),
        (collections.defaultdict(list, a=[1]), "FrozenDict", Mapping),
        (collections.Counter("abca"), "FrozenDict", Mapping),
        ([1, 2], "FrozenList", Sequence),
        ((1, 2), "FrozenTuple", Sequence),
        ({1, 2}, "FrozenSet", AbstractSet),
        (frozenset({1, 2}), "FrozenSet", AbstractSet),
    ]
    for obj, name, abc in cases:
        v: Any = shoal.freeze(obj)
        assert type(v).__name__ == name, (obj, type(v))
        assert isinstance(v, abc)
        assert v == obj and obj == v
        assert not v != obj  # noqa: SIM202 - __ne__ is tested too
        assert len(v) == len(obj)
        assert list(v) == list(obj)


def test_nested_containers_are_views_and_leaves_are_plain_objects() -> None:
    v = shoal.freeze({"l": [1, (2, {3})], "d": {"k": "v"}, "s": 2**70, "f": 1.5, "b": b"x"})
    assert type(v["l"]).__name__ == "FrozenList"
    assert type(v["l"][1]).__name__ == "FrozenTuple"
    assert type(v["l"][1][1]).__name__ == "FrozenSet"
    assert type(v["d"]).__name__ == "FrozenDict"
    for key, kind in (("s", int), ("f", float), ("b", bytes)):
        assert type(v[key]) is kind
    assert type(v["d"]["k"]) is str
    assert v["s"] == 2**70


@pytest.mark.asan
def test_frozen_equals_the_source_and_not_unequal_things() -> None:
    d = _sample()
    v = shoal.freeze(d)
    assert v == d and d == v
    assert v == shoal.freeze(d)
    changed = dict(d)
    changed["none"] = 0
    assert v != changed and changed != v
    assert v != {**d, "extra": 1}
    assert shoal.freeze({"a": 1}) == {"a": 1.0} == shoal.freeze({"a": True})  # as dict ==
    assert shoal.freeze([1, [2]]) != [1, [3]]
    assert shoal.freeze({"a": 1}) != [("a", 1)]


@pytest.mark.asan
def test_frozen_list_is_never_equal_to_a_tuple_nor_frozen_tuple_to_a_list() -> None:
    fl, ft = shoal.freeze([1, 2]), shoal.freeze((1, 2))
    assert fl == [1, 2] and ft == (1, 2)
    assert fl != (1, 2) and (1, 2) != fl
    assert ft != [1, 2] and [1, 2] != ft
    assert fl != ft and ft != fl
    # The same one level down: a list inside is a list, a tuple a tuple.
    assert shoal.freeze({"x": [1]}) != {"x": (1,)}
    assert shoal.freeze([(1,)]) != [[1]]


@pytest.mark.asan
def test_sets_equal_sets_and_frozensets_as_python_does() -> None:
    fs = shoal.freeze({1, 2, 3})
    assert fs == {1, 2, 3} and fs == frozenset({1, 2, 3}) and {1, 2, 3} == fs
    assert fs == shoal.freeze(frozenset({3, 2, 1}))
    assert fs != {1, 2} and fs != [1, 2, 3]
    assert 1.0 in fs and True in fs and 4 not in fs
    assert list(fs) == list({1, 2, 3})  # the source's iteration order
    assert shoal.freeze({1, 2}).thaw() == {1, 2}
    assert type(shoal.freeze({1, 2}).thaw()) is set
    assert type(shoal.freeze(frozenset({1, 2})).thaw()) is frozenset


def test_thaw_gives_plain_objects_all_the_way_down() -> None:
    d = _sample()
    t = shoal.freeze(d).thaw()
    assert type(t) is dict
    assert same(t, d)
    assert type(t["nested"]) is dict and type(t["nested"]["list"]) is list
    assert type(t["nested"]["list"][1]) is list and type(t["nested"]["tuple"][1]) is tuple
    assert type(t["set"]) is set and type(t["frozenset"]) is frozenset
    assert type(t["floats"]) is tuple
    t["nested"]["list"].append(4)  # plain and mutable
    assert shoal.freeze(collections.OrderedDict(a=1)).thaw().__class__ is dict


def test_dict_subclasses_freeze_as_their_items() -> None:
    dd = collections.defaultdict(int, {"a": 1})
    v = shoal.freeze(dd)
    assert v == {"a": 1}
    with pytest.raises(KeyError, match="missing"):
        v["missing"]  # a FrozenDict has no default factory
    assert shoal.freeze(collections.Counter("aab")) == {"a": 2, "b": 1}


def test_insertion_order_is_kept() -> None:
    keys = [f"k{i}" for i in range(1000)]
    keys.reverse()
    d = {k: i for i, k in enumerate(keys)}
    v = shoal.freeze(d)
    assert list(v) == keys
    assert list(v.keys()) == keys
    assert list(v.values()) == list(range(1000))
    assert list(v.items()) == list(d.items())
    assert list(reversed(v)) == list(reversed(d))
    s = {"z", "a", "m"}
    assert list(shoal.freeze(s)) == list(s)


def test_getitem_get_and_contains() -> None:
    d = _sample()
    v = shoal.freeze(d)
    for k in d:
        assert k in v
        assert same(v[k], d[k]) or v[k] == d[k]
        assert v.get(k) == d[k]
    assert "missing" not in v
    assert v.get("missing") is None and v.get("missing", 5) == 5
    assert b"text" not in v  # str and bytes differ
    assert "bkey" not in v and v[b"bkey"] == "bytes key"


@pytest.mark.asan
def test_missing_key_raises_key_error_with_the_key() -> None:
    v = shoal.freeze({"a": 1})
    for key in ("b", 2, (1, 2), b"a", None, 3.5):
        with pytest.raises(KeyError) as e:
            v[key]
        assert e.value.args == (key,)


@pytest.mark.asan
def test_unhashable_lookup_raises_type_error_as_python_does() -> None:
    v = shoal.freeze({"a": 1})
    with pytest.raises(TypeError, match="unhashable"):
        v[[1]]
    with pytest.raises(TypeError, match="unhashable"):
        [1] in v  # noqa: B015
    with pytest.raises(TypeError, match="unhashable"):
        v.get({})
    with pytest.raises(TypeError, match="unhashable"):
        [1] in shoal.freeze({1})  # noqa: B015


@pytest.mark.asan
def test_lookup_with_a_key_type_that_cannot_be_stored_is_a_plain_miss() -> None:
    v = shoal.freeze({"a": 1, 1: "one"})
    o = object()
    assert o not in v
    with pytest.raises(KeyError, match="object object at"):
        v[o]
    assert v.get(o, "default") == "default"
    assert Point(1, 2) not in v


@pytest.mark.asan
def test_numbers_that_are_equal_are_one_key() -> None:
    v = shoal.freeze({1: "one", 0.0: "zero", 2**60: "big", 10**30: "huge", 0.5: "half"})
    assert v[1] == v[1.0] == v[True] == "one"
    assert v[0] == v[-0.0] == v[False] == "zero"
    assert v[2**60] == v[2.0**60] == "big"
    assert v[10**30] == "huge" and float(10**30) not in v  # not equal: float rounds it
    assert v[0.5] == "half" and 1 / 2 in v
    assert shoal.freeze({True: "t"})[1] == "t"
    assert shoal.freeze({-0.0: "z"})[0] == "z"
    assert shoal.freeze({2.0**60: "f"})[2**60] == "f"
    assert list(shoal.freeze({True: 1}).keys()) == [True]
    assert type(next(iter(shoal.freeze({True: 1})))) is bool
    assert type(next(iter(shoal.freeze({1.0: 1})))) is float
    assert math.copysign(1, next(iter(shoal.freeze({-0.0: 1})))) == -1  # the key as written


@pytest.mark.asan
def test_lookup_with_numeric_types_equal_to_the_key_finds_it() -> None:
    # Python's dict finds them: their hash and == agree with int's and float's.
    v = shoal.freeze({1: "one", 1.5: "x"})
    assert v[np.int64(1)] == "one"
    assert v[np.float64(1.0)] == "one"
    assert v[decimal.Decimal(1)] == "one"
    assert v[fractions.Fraction(3, 2)] == "x"
    assert Color.RED in v


@pytest.mark.asan
def test_tuple_and_frozenset_keys_follow_python_equality() -> None:
    v = shoal.freeze({(1, "a"): "t", frozenset({1, 2}): "f", (): "empty", ((1,), (2,)): "tt"})
    assert v[(1.0, "a")] == v[(True, "a")] == "t"
    assert (1, b"a") not in v
    assert v[frozenset({2.0, 1})] == "f"
    assert v[()] == "empty"
    assert v[((1,), (2,))] == "tt"
    assert v[shoal.freeze((1, "a"))] == "t"  # a frozen tuple is an equal, equally hashed key
    for k in v:  # keys come back as they went in (or as frozen views): each is found
        assert k in v and v.get(k) is not None, k
    s = shoal.freeze({(1, "a"), frozenset({2}), ((3,), "b")})
    for k in s:
        assert k in s, k


@pytest.mark.asan
def test_str_bytes_and_unicode_keys_differ_and_match() -> None:
    keys = ["a", b"a", "é", "é".encode(), "\ud800", "\udfff", "a\ud800b", "🐍", "", b"", "\x00"]
    d = {k: i for i, k in enumerate(keys)}
    v = shoal.freeze(d)
    assert len(v) == len(keys)
    for i, k in enumerate(keys):
        assert v[k] == i
    assert list(v) == keys
    assert "\ud801" not in v


@pytest.mark.asan
def test_key_subclasses_are_stored_as_their_base_type() -> None:
    v = shoal.freeze({Color.RED: "red", Text("t"): "text", Number(2.5): "num"})
    assert [type(k) for k in v] == [int, str, float]
    assert list(v) == [1, "t", 2.5]
    assert v[1] == v[Color.RED] == "red"
    assert v["t"] == v[Text("t")] == "text"
    assert v[2.5] == "num"
    assert shoal.freeze({np.float64(0.25): 1}).keys() == {0.25}  # a float subclass
    assert type(next(iter(shoal.freeze({np.float64(0.25): 1})))) is float


@pytest.mark.parametrize(
    "key",
    [
        object(),
        Point(1, 2),
        decimal.Decimal(1),
        np.int64(1),
        (1, object()),
        frozenset({Point(0, 0)}),
    ],
    ids=["object", "dataclass", "Decimal", "np.int64", "tuple-of-object", "frozenset-of-dataclass"],
)
@pytest.mark.asan
def test_unsupported_key_types_raise_type_error_saying_so(key: Any) -> None:
    with pytest.raises(TypeError, match="key"):
        shoal.freeze({key: 1})
    with pytest.raises(TypeError, match="key"):
        shoal.freeze({"ok": {key: 1}})  # nested
    with pytest.raises(TypeError, match="a frozen dict key or set element must be"):
        shoal.freeze({key})  # set members are keys too


@pytest.mark.asan
def test_nan_keys_iterate_but_never_match() -> None:
    nan = float("nan")
    d = {nan: "n", "a": 1}
    v = shoal.freeze(d)
    assert len(v) == 2
    k = next(iter(v))
    assert math.isnan(k)
    assert math.nan not in v and float("nan") not in v  # noqa: PLW0177 - a distinct NaN object, as in a plain dict
    assert k not in v  # a new object on every access: never the stored one
    with pytest.raises(KeyError, match="nan"):
        v[float("nan")]
    assert v.get(float("nan")) is None
    assert [val for _, val in v.items()] == ["n", 1]
    s = shoal.freeze({nan, 1.0})
    assert len(s) == 2 and float("nan") not in s and 1 in s  # noqa: PLW0177


@pytest.mark.asan
def test_list_and_tuple_indexing_slicing_and_methods() -> None:
    plain = [10, "a", None, 2.5, [1], (2,), b"x", 10]
    for src in (plain, tuple(plain)):
        v = shoal.freeze(src)
        n = len(src)
        for i in range(-n, n):
            assert v[i] == src[i]
        assert v[np.int64(1)] == src[1]
        slices = [
            slice(1, 5),
            slice(None, None, -1),
            slice(-3, None),
            slice(0, 100, 3),
            slice(5, 1),
        ]
        for sl in slices:
            got = v[sl]
            assert type(got) is type(src), sl  # a plain list / tuple: a slice is new data
            assert got == src[sl]
        assert v.index(10) == 0 and v.index(10, 1) == 7 and v.index("a", 0, 2) == 1
        assert v.index([1]) == 4 and v.index((2,)) == 5
        with pytest.raises(ValueError, match=f"^'missing' is not in {type(v).__name__}$"):
            v.index("missing")
        with pytest.raises(ValueError, match=f"^10 is not in {type(v).__name__}$"):
            v.index(10, 1, 6)
        assert v.index(10, -1) == 7 and v.index(10, -100, 100) == 0
        assert v.count(10) == 2 and v.count("zz") == 0 and v.count([1]) == 1
        assert list(reversed(v)) == list(reversed(src))
        assert 2.5 in v and [1] in v and (2,) in v and "zz" not in v


@pytest.mark.parametrize("plain", [[1, "a", [2]], (1, "a", (2,))], ids=["list", "tuple"])
def test_list_and_tuple_views_concatenate_and_repeat_into_plain_objects(plain: Any) -> None:
    v = shoal.freeze(plain)
    other = type(plain)([None, 3])
    for got, want in [
        (v + other, plain + other),
        (other + v, other + plain),
        (v + v, plain + plain),
        (v * 2, plain * 2),
        (3 * v, 3 * plain),
        (v * 0, plain * 0),
        (v * -1, plain * -1),
        (v * np.int64(2), plain * 2),
    ]:
        assert type(got) is type(plain)  # new data: a plain list or tuple, as a slice is
        assert got == want
    kind = type(plain).__name__
    with pytest.raises(TypeError, match="can't multiply sequence by non-int of type 'float'"):
        v * 2.0
    with pytest.raises(
        TypeError, match=f"can't multiply sequence by non-int of type '{type(v).__name__}'"
    ):
        "x" * v
    wrong = (1,) if kind == "list" else [1]
    with pytest.raises(TypeError, match="unsupported operand type"):
        v + wrong


def test_index_out_of_range_raises_index_error_as_python_does() -> None:
    for src, kind in (([1, 2, 3], "list"), ((1, 2, 3), "tuple")):
        v = shoal.freeze(src)
        for i in (3, -4, 100):
            with pytest.raises(IndexError, match=f"{kind} index out of range"):
                v[i]
        for i in (2**63, -(2**70)):  # Python: "cannot fit 'int' into an index-sized integer"
            with pytest.raises(IndexError, match="cannot fit 'int' into an index-sized integer"):
                v[i]
        with pytest.raises(TypeError, match="indices must be integers or slices"):
            v["0"]


def test_dict_views_support_len_in_and_iteration() -> None:
    d = {"a": 1, "b": [2], 3: (4,)}
    v = shoal.freeze(d)
    ks, vs, its = v.keys(), v.values(), v.items()
    assert (len(ks), len(vs), len(its)) == (3, 3, 3)
    assert "a" in ks and 3 in ks and "z" not in ks
    assert 1 in vs and [2] in vs and (4,) in vs and 5 not in vs
    assert ("a", 1) in its and ("b", [2]) in its and ("a", 2) not in its
    assert list(ks) == list(d.keys())
    assert list(vs) == list(d.values())
    assert list(its) == list(d.items())


def test_repr_is_the_plain_objects_repr_in_the_views_name() -> None:
    assert repr(shoal.freeze({"a": 1})) == "FrozenDict({'a': 1})"
    assert repr(shoal.freeze([1, "a"])) == "FrozenList([1, 'a'])"
    assert repr(shoal.freeze((1,))) == "FrozenTuple((1,))"
    assert repr(shoal.freeze({})) == "FrozenDict({})"
    assert "'b'" in repr(shoal.freeze({"a": {"b": [1]}}))


@pytest.mark.asan
def test_hash_of_frozen_tuples_and_sets_equals_the_plain_ones() -> None:
    for t in [(), (1, "a", b"b", None, 2.5, 2**80), ((1, 2), frozenset({"x"})), (-1,), (True,)]:
        v = shoal.freeze(t)
        assert hash(v) == hash(t)
        assert {t: "found"}[v] == "found"  # usable where the tuple is
        assert {v: "found"}[t] == "found"
    for s in [frozenset(), frozenset({1, "a", (2, 3)}), frozenset({frozenset({1})})]:
        assert hash(shoal.freeze(s)) == hash(s)
        assert hash(shoal.freeze(set(s))) == hash(s)
    nested = shoal.freeze({"t": (1, ("x", b"y"))})
    assert hash(nested["t"]) == hash((1, ("x", b"y")))


def test_frozen_dicts_lists_and_tuples_holding_them_are_unhashable() -> None:
    for obj in ({"a": 1}, [1], (1, [2]), (1, {"a": 1})):
        with pytest.raises(TypeError, match="unhashable"):
            hash(shoal.freeze(obj))


def test_views_are_immutable() -> None:
    v: Any = shoal.freeze({"a": [1], "s": {1}})
    with pytest.raises(TypeError, match="'FrozenDict' object does not support item assignment"):
        v["a"] = 2
    with pytest.raises(TypeError, match="'FrozenDict' object does not support item deletion"):
        del v["a"]
    with pytest.raises(TypeError, match="'FrozenList' object does not support item assignment"):
        v["a"][0] = 2
    with pytest.raises(TypeError, match="'FrozenList' object doesn't support item deletion"):
        del v["a"][0]
    with pytest.raises(TypeError, match="'FrozenTuple' object does not support item assignment"):
        shoal.freeze((1,))[0] = 2
    for name in ("update", "pop", "setdefault", "clear"):
        assert not hasattr(v, name)
    for name in ("append", "extend", "insert", "pop", "sort"):
        assert not hasattr(v["a"], name)
    assert not hasattr(v["s"], "add")
    assert v == {"a": [1], "s": {1}}


# --- leaves --------------------------------------------------------------------------------------


def test_scalar_leaves_round_trip_with_their_types() -> None:
    ints = [0, 1, -1, 2**59 - 1, -(2**59), 2**59, -(2**59) - 1, 2**60, 2**63 - 1, 2**63, 2**64]
    ints += [-(2**63), -(2**64), 10**100, -(10**100), 2**4000 + 1, -(2**4000) - 1]
    floats = [0.0, -0.0, 1.5, math.inf, -math.inf, 5e-324, -1.7976931348623157e308, 1e-310]
    leaves: list[Any] = [None, True, False, *ints, *floats]
    v = shoal.freeze(leaves)
    for i, x in enumerate(leaves):
        assert same(v[i], x), (i, x, v[i])
    assert math.isnan(shoal.freeze([math.nan])[0])


def test_huge_int_round_trips() -> None:
    huge = 7**30000  # ~84,000 bits
    v = shoal.freeze({"h": huge, "n": -huge, huge: "as key"})
    assert v["h"] == huge and v["n"] == -huge and v[huge] == "as key"
    assert v.nbytes >= huge.bit_length() // 8


def test_text_and_bytes_leaves_including_lone_surrogates() -> None:
    texts = ["", "a", "é" * 1000, "日本語テキスト", "🐍🐍", "\x00\x01", "\ud800", "\udfff\ud800"]
    texts += ["a\ud83d", "\ud83d\ude00", "x" * 100_000]
    blobs = [b"", b"\x00", bytes(range(256)) * 100, b"\xed\xa0\x80"]
    v = shoal.freeze({"t": texts, "b": blobs})
    assert list(v["t"]) == texts and list(v["b"]) == blobs
    assert [type(x) for x in v["t"]] == [str] * len(texts)
    assert [type(x) for x in v["b"]] == [bytes] * len(blobs)


def test_empty_containers() -> None:
    empties: list[Any] = [{}, [], (), set(), frozenset(), {"a": {}, "b": [], "c": (), "d": set()}]
    for obj in empties:
        v = shoal.freeze(obj)
        assert v == obj and len(v) == len(obj) and same(v.thaw(), obj)
    assert list(shoal.freeze({})) == [] and not shoal.freeze([])
    assert shoal.freeze([[], [[]]]) == [[], [[]]]
    with pytest.raises(IndexError, match="list index out of range"):
        shoal.freeze([])[0]
    with pytest.raises(KeyError, match="'a'"):
        shoal.freeze({})["a"]


def test_shared_substructure_is_not_a_cycle() -> None:
    inner = [1, {"x": (2,)}]
    v = shoal.freeze({"a": inner, "b": inner, "c": [inner, inner]})
    assert v == {"a": inner, "b": inner, "c": [inner, inner]}


_CYCLES = r"""
import shoal, sys
kind = sys.argv[1]
if kind == "list":
    x = [1]; x.append(x)
elif kind == "dict":
    x = {"a": {}}; x["a"]["back"] = x
elif kind == "deep":
    x = [[[[]]]]; x[0][0][0].append(x)
else:
    t = [1]; x = (t,); t.append(x)
try:
    shoal.freeze(x)
except ValueError as e:
    print("ValueError:", e)
"""


@pytest.mark.parametrize("kind", ["list", "dict", "deep", "tuple"])
def test_a_cycle_raises_value_error(kind: str) -> None:
    r = run_python(_CYCLES, kind, timeout=300)
    assert r.returncode == 0, f"exit {r.returncode}: {r.stderr[-2000:]}"
    assert r.stdout.startswith("ValueError:"), r.stdout + r.stderr[-2000:]
    assert re.search(r"(?i)cycl|circular|recurs|contains itself|itself", r.stdout), r.stdout


_DEEP = r"""
import shoal, sys
depth, kind = int(sys.argv[1]), sys.argv[2]
x = [] if kind == "list" else {}
for _ in range(depth):
    x = [x] if kind == "list" else {"k": x}
try:
    v = shoal.freeze(x)
except (RecursionError, ValueError) as e:
    print("refused", type(e).__name__, e)
    sys.exit(0)
for _ in range(depth):
    v = v[0] if kind == "list" else v["k"]
assert len(v) == 0, v
print("frozen")
"""


@pytest.mark.parametrize("depth", [10_000, 200_000])
@pytest.mark.parametrize("kind", ["list", "dict"])
def test_deep_nesting_freezes_or_is_refused_never_crashes(depth: int, kind: str) -> None:
    r = run_python(_DEEP, str(depth), kind, timeout=300)
    assert r.returncode == 0, f"exit {r.returncode}: {r.stderr[-2000:]}"
    out = r.stdout.strip()
    assert out == "frozen" or out.startswith("refused"), out + r.stderr[-2000:]
    if out.startswith("refused"):
        assert re.search(r"(?i)deep|depth|nest|recurs", out), out


# --- ndarray leaves ------------------------------------------------------------------------------


def test_ndarray_leaves_are_read_only_and_zero_copy() -> None:
    a = np.arange(1000, dtype=np.float64).reshape(10, 100)
    f = np.asfortranarray(np.arange(12, dtype=np.int32).reshape(3, 4))
    strided = np.arange(100, dtype=np.int16)[::3]
    s = np.array([(1, 2.5)], dtype=[("i", "<i4"), ("f", "<f8")])
    v = shoal.freeze({"a": a, "f": f, "strided": strided, "s": s, "e": np.empty((0, 3))})
    for key, src in (("a", a), ("f", f), ("strided", strided), ("s", s)):
        x = v[key]
        assert type(x) is shoal.Array and x.segment is None  # it lives in the frozen image
        assert x.dtype == src.dtype and x.shape == src.shape and np.array_equal(x, src)
        assert not x.flags.writeable
        with pytest.raises(ValueError, match="read-only"):
            x[(0,) * x.ndim] = 0
        assert np.shares_memory(x, v[key])  # two accesses, one buffer: zero copy
        assert not np.shares_memory(x, src)  # a snapshot
    assert v["f"].flags.f_contiguous
    assert v["e"].shape == (0, 3)
    a[0, 0] = -1  # later changes to the source do not show
    assert v["a"][0, 0] == 0
    thawed = v.thaw()["a"]
    assert type(thawed) is np.ndarray and thawed.flags.writeable  # thaw owns its data
    assert np.array_equal(thawed, np.arange(1000.0).reshape(10, 100))
    assert not np.shares_memory(thawed, v["a"])


def _leaf_sum(a: Any, conn: Connection) -> None:
    conn.send((type(a).__name__, float(a.sum()), a.shape, bool(a.flags.writeable)))


def test_an_ndarray_leaf_pickles_as_a_reference_with_its_views(ctx: Any) -> None:
    big = np.arange(1_000_000, dtype=np.float64).reshape(1000, 1000)  # 8 MB
    v = shoal.freeze({"big": big, "small": np.arange(6, dtype=np.int16)})
    x = v["big"]
    for view in (x, x[10:20, ::-3], x.T, x[5], x[..., 7], x[3:3]):
        data = pickle.dumps(view, protocol=5)
        assert len(data) < 600, len(data)  # a reference, never the 8 MB
        back = pickle.loads(data)
        assert type(back) is shoal.Array and not back.flags.writeable
        assert back.shape == view.shape and np.array_equal(back, view)
        assert back.size == 0 or np.shares_memory(back, x)  # this process maps the image once
    assert np.array_equal(pickle.loads(pickle.dumps(v["small"])), np.arange(6))
    mine, theirs = ctx.Pipe()
    p = ctx.Process(target=_leaf_sum, args=(x[100:], theirs))
    p.start()
    assert mine.poll(DEADLINE)
    assert mine.recv() == ("Array", float(big[100:].sum()), (900, 1000), False)
    p.join(DEADLINE)
    assert p.exitcode == 0
    with pytest.raises(ValueError, match="part of a frozen object: pickle it"):
        x.handle()


def test_an_ndarray_leaf_of_a_loaded_file_pickles_as_the_file(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "arrays.shoal"
    shoal.save({"m": np.arange(12.0).reshape(3, 4)}, path)
    m = shoal.load(path)["m"]
    back = pickle.loads(pickle.dumps(m[:, 1:]))
    assert type(back) is shoal.Array and np.array_equal(back, np.arange(12.0).reshape(3, 4)[:, 1:])
    root = shoal.load(path)
    assert type(root["m"]) is shoal.Array
    shoal.save({"m": np.zeros(3)}, path)  # replaced: the old pickle no longer names it
    with pytest.raises(shoal.StaleHandleError, match="no longer the file"):
        pickle.loads(pickle.dumps(m))


def test_a_forged_leaf_pickle_raises_decode_error() -> None:
    from shoal import _frozen

    v = shoal.freeze({"a": np.arange(10, dtype=np.int64), "l": [1, 2]})
    fn, (where, ref, view) = v["a"].__reduce__()
    assert fn is _frozen._rebuild_leaf
    assert np.array_equal(fn(where, ref, view), np.arange(10))
    _, _, strides, descr = view
    for bad_view, message in (
        ((0, (11,), strides, descr), "does not fit its frozen leaf"),
        ((80, (1,), strides, descr), "does not fit its frozen leaf"),
        ((-8, (1,), strides, descr), "does not fit its frozen leaf"),
        ((0, (10,), strides, "'|O'"), "holds Python objects"),
    ):
        with pytest.raises(shoal.DecodeError, match=message):
            fn(where, ref, bad_view)
    list_ref = v["l"]._ref
    with pytest.raises(shoal.DecodeError, match="not an ndarray leaf"):
        fn(where, list_ref, view)
    with pytest.raises(ValueError, match="not a container or ndarray reference"):
        fn(where, ref + 1, view)


def test_numpy_scalars_are_native_leaves_and_keep_their_type(tmp_path: pathlib.Path) -> None:
    scalars = {
        "f8": np.float64(1.5),
        "f4": np.float32(-0.25),
        "i4": np.int32(3),
        "u8": np.uint64(2**64 - 1),
        "b": np.bool_(True),
        "c": np.complex64(1 + 2j),
        "dt": np.datetime64("2020-01-02"),
        "s": np.str_("text"),
    }
    v = shoal.freeze(scalars, allow_pickle=False)  # no pickle involved
    for key, val in scalars.items():
        assert type(v[key]) is type(val) and v[key] == val, key
    path = tmp_path / "scalars.shoal"
    shoal.save(scalars, path, allow_pickle=False)
    loaded = shoal.load(path)  # no allow_pickle needed
    assert all(type(loaded[k]) is type(x) and loaded[k] == x for k, x in scalars.items())
    assert shoal.freeze(np.int16(7)) == 7 and type(shoal.freeze(np.int16(7))) is np.int16


# --- pickled leaves ------------------------------------------------------------------------------


def _pickled_leaves() -> dict[str, Any]:
    return {
        "decimal": decimal.Decimal("1.10"),
        "enum": Color.GREEN,
        "date": datetime.date(2020, 1, 2),
        "point": Point(1, 2),
        "complex": 1 + 2j,
        "bytearray": bytearray(b"ab"),
        "namedtuple": Pair(1, "b"),
        "str subclass": Text("t"),
    }


def test_other_leaf_types_are_pickled_and_keep_their_type() -> None:
    d = _pickled_leaves()
    v = shoal.freeze(d)
    for key, val in d.items():
        if key == "namedtuple":
            assert v[key] == val
            continue
        assert type(v[key]) is type(val), key
        assert v[key] == val, key
    assert v.thaw()["point"] == Point(1, 2)


@pytest.mark.parametrize("key", list(_pickled_leaves()))
def test_allow_pickle_false_refuses_other_leaf_types(key: str) -> None:
    val = _pickled_leaves()[key]
    with pytest.raises(TypeError, match=re.escape(type(val).__name__)):
        shoal.freeze({"x": [val]}, allow_pickle=False)


def test_allow_pickle_false_accepts_every_native_type() -> None:
    d = _sample()
    d["array"] = np.arange(3)
    v = shoal.freeze(d, allow_pickle=False)
    assert same(v.thaw(), d)


def test_an_unpicklable_leaf_raises() -> None:
    with pytest.raises(TypeError, match="pickle"):
        shoal.freeze({"lock": threading.Lock()})


# --- pickling, handles, attach -------------------------------------------------------------------


def test_pickled_view_is_a_small_handle() -> None:
    d: dict[Any, Any] = {i: str(i) * 10 for i in range(1 << 16)}
    d["inner"] = {"deep": list(range(10_000))}
    v = shoal.freeze(d)
    assert v.nbytes > 1 << 20
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        blob = pickle.dumps(v, protocol=protocol)
        assert len(blob) < HANDLE_MAX, (protocol, len(blob))
        assert pickle.loads(blob) == d
        inner = pickle.dumps(v["inner"], protocol=protocol)
        assert len(inner) < HANDLE_MAX
        back = pickle.loads(inner)
        assert type(back).__name__ == "FrozenDict" and back == d["inner"]
        deep = pickle.loads(pickle.dumps(v["inner"]["deep"], protocol=protocol))
        assert type(deep).__name__ == "FrozenList" and deep == list(range(10_000))


def test_copy_and_deepcopy_return_the_view_itself() -> None:
    v = shoal.freeze({"a": [1, 2]})
    assert copy.copy(v) is v and copy.deepcopy(v) is v
    inner = v["a"]
    assert copy.copy(inner) is inner and copy.deepcopy(inner) is inner
    holder = copy.deepcopy({"v": v})
    assert holder["v"] is v


def test_nbytes_is_the_whole_image_and_handle_attaches() -> None:
    payload = b"x" * 100_000
    v = shoal.freeze({"p": payload, "inner": [1, 2, 3]})
    assert isinstance(v.nbytes, int) and 100_000 <= v.nbytes < 200_000
    assert v["inner"].nbytes == v.nbytes
    h = v.handle()
    assert isinstance(h, str) and h
    w = shoal.attach(h)
    assert type(w).__name__ == "FrozenDict" and w == {"p": payload, "inner": [1, 2, 3]}


def test_attach_gives_an_array_for_an_array_handle() -> None:
    a = shoal.share(np.arange(10.0))
    b = shoal.attach(a.handle())
    assert isinstance(b, shoal.Array) and np.array_equal(b, np.arange(10.0))


def test_attach_rejects_a_malformed_handle() -> None:
    with pytest.raises(shoal.DecodeError, match="not a shoal handle: it must start with 'shoal1:'"):
        shoal.attach("not a handle")


def test_share_freezes_trees_and_shares_arrays() -> None:
    v = shoal.share({"a": [1]})
    assert type(v).__name__ == "FrozenDict" and v == {"a": [1]}
    assert type(shoal.share([1, 2])).__name__ == "FrozenList"
    assert isinstance(shoal.share(np.zeros(3)), shoal.Array)


# --- across processes ----------------------------------------------------------------------------


def _child_reads(view: Any, keys: list[Any], conn: Connection) -> None:
    conn.send(
        {
            "type": type(view).__name__,
            "values": [view[k] for k in keys],
            "len": len(view),
            "equal": view == INHERITED.get("expect", view),
            "thawed": view.thaw(),
        }
    )
    conn.close()


def _cache(n: int) -> dict[int, str]:
    return {i: bin(i) for i in range(n)}


def test_view_travels_as_a_process_argument(ctx: Any) -> None:
    d = {"cache": _cache(5000), "names": ["a", "b"], (1, "t"): b"tuple key"}
    v = shoal.freeze(d)
    mine, theirs = ctx.Pipe()
    p = ctx.Process(target=_child_reads, args=(v, ["names", (1, "t")], theirs))
    p.start()
    theirs.close()
    r = _recv(mine)
    _join(p)
    assert r["type"] == "FrozenDict" and r["len"] == 3
    assert r["values"][0] == ["a", "b"] and r["values"][1] == b"tuple key"
    assert r["thawed"] == d
    # A nested view as the argument.
    mine, theirs = ctx.Pipe()
    p = ctx.Process(target=_child_reads, args=(v["cache"], [0, 4999, 1.0], theirs))
    p.start()
    theirs.close()
    r = _recv(mine)
    _join(p)
    assert r["type"] == "FrozenDict" and r["values"] == ["0b0", bin(4999), "0b1"]


def _count_ones(cache: Any, i: int) -> int:
    return int(cache[i].count("1"))


def test_pool_map_with_the_view_as_argument_seed_001(ctx: Any) -> None:
    n = 1 << 14
    cache = shoal.freeze(_cache(n))
    with ctx.Pool(2) as pool:
        counts = pool.map(functools.partial(_count_ones, cache), range(n), chunksize=512)
    assert counts == [i.bit_count() for i in range(n)]


def _make_frozen(n: int) -> tuple[int, Any]:
    return os.getpid(), shoal.freeze({"pid": os.getpid(), "cache": _cache(n), "s": {"x", "y"}})


@pytest.fixture
def long_pins(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pins that outlast a slow machine: these tests read only after their creator exited."""
    monkeypatch.setenv("SHOAL_PIN_TTL", "120")


def test_pool_worker_creates_returns_and_exits_the_parent_still_reads(
    ctx: Any, long_pins: None
) -> None:
    with ctx.Pool(1, maxtasksperchild=1) as pool:
        worker, v = pool.apply(_make_frozen, (3000,))
        pool.close()
        pool.join()
    assert wait_until(lambda: not _alive(worker))
    assert type(v).__name__ == "FrozenDict"
    assert v["pid"] == worker and v["cache"] == _cache(3000) and v["s"] == {"x", "y"}
    assert v.thaw() == {"pid": worker, "cache": _cache(3000), "s": {"x", "y"}}


def _queue_echo(q_in: Any, q_out: Any) -> None:
    v = q_in.get(timeout=DEADLINE)
    q_out.put((type(v).__name__, v["list"][2], v["list"], shoal.freeze({"made": "in child"})))


def test_view_travels_through_a_queue_both_ways(ctx: Any) -> None:
    v = shoal.freeze({"list": [1, 2, {"three": 3}]})
    q_in, q_out = ctx.Queue(), ctx.Queue()
    p = ctx.Process(target=_queue_echo, args=(q_in, q_out))
    p.start()
    q_in.put(v)
    name, third, lst, made = q_out.get(timeout=DEADLINE)
    _join(p)
    assert name == "FrozenDict"
    assert type(third).__name__ == "FrozenDict" and third == {"three": 3}
    assert type(lst).__name__ == "FrozenList" and lst == [1, 2, {"three": 3}]
    assert type(made).__name__ == "FrozenDict" and made == {"made": "in child"}


def _pipe_echo(conn: Connection) -> None:
    v = conn.recv()
    conn.send((v["t"], v["t"][1], hash(v["t"]) == hash(("a", ("b", 1))), v.thaw()))
    conn.close()


def test_view_travels_through_a_pipe(ctx: Any) -> None:
    d = {"t": ("a", ("b", 1))}
    mine, theirs = ctx.Pipe()
    p = ctx.Process(target=_pipe_echo, args=(theirs,))
    p.start()
    theirs.close()
    mine.send(shoal.freeze(d))
    t, t1, hash_ok, thawed = _recv(mine)
    _join(p)
    assert type(t).__name__ == "FrozenTuple" and t == ("a", ("b", 1)) and t1 == ("b", 1)
    assert hash_ok and thawed == d


def _inherited_reads(conn: Connection) -> None:
    v = INHERITED["view"]
    conn.send((type(v).__name__, v["k"], v == INHERITED["expect"], v.thaw()))
    conn.close()


def test_view_is_inherited_over_fork() -> None:
    ctx = mp.get_context("fork")
    d = {"k": [1, "two"], "cache": _cache(100)}
    INHERITED["view"], INHERITED["expect"] = shoal.freeze(d), d
    try:
        mine, theirs = ctx.Pipe()
        p = ctx.Process(target=_inherited_reads, args=(theirs,))
        p.start()
        theirs.close()
        name, k, equal, thawed = _recv(mine)
        _join(p)
    finally:
        INHERITED.clear()
    assert name == "FrozenDict" and k == [1, "two"] and equal and thawed == d


# --- PYTHONHASHSEED: one table, probed by processes that hash str differently -----------------------

_KEYS = r"""
def keys_of(i):
    return [
        (f"s{i}", ("str", i)),
        (f"s{i}".encode(), ("bytes", i)),
        (f"é{i}🐍", ("unicode", i)),
        ((i, f"t{i}", b"b"), ("tuple", i)),
        (frozenset({f"f{i}", i}), ("frozenset", i)),
        ((f"n{i}", (b"x", frozenset({f"y{i}"}))), ("nested", i)),
    ]

def expected(n):
    d = {}
    for i in range(n):
        d.update(keys_of(i))
    d["tup"] = ("x", b"y", 1, ("z",))
    d["fset"] = frozenset({"p", "q", b"r"})
    d["strs"] = {f"m{i}" for i in range(n)}
    return d
"""

_PROBE = (
    _KEYS
    + r"""
import json, os, sys, shoal
n = int(sys.argv[2])
v = shoal.attach(sys.argv[1])
bad = []
for i in range(n):
    for k, val in keys_of(i):
        got = v.get(k)
        if got != val:
            bad.append(repr((k, got)))
    if f"absent{i}" in v or f"m{i}" not in v["strs"] or f"s{i}" in v["strs"]:
        bad.append(f"membership {i}")
if hash(v["tup"]) != hash(("x", b"y", 1, ("z",))) or hash(v["fset"]) != hash(frozenset({"p", "q", b"r"})):
    bad.append("hash")
if v.thaw() != expected(n):
    bad.append("thaw")
print(json.dumps({"seed": os.environ.get("PYTHONHASHSEED"), "hash_s0": hash("s0"), "bad": bad[:10]}))
"""
)

_MAKER = (
    _KEYS
    + r"""
import sys, shoal
n = int(sys.argv[1])
v = shoal.freeze(expected(n))
print(v.handle(), flush=True)
sys.stdin.readline()  # hold it until the parent has read it
"""
)


def _keys_module() -> dict[str, Any]:
    ns: dict[str, Any] = {}
    exec(_KEYS, ns)  # noqa: S102 - the same source the child processes run
    return ns


@pytest.mark.parametrize("seed", ["1", "2", "random"])
@pytest.mark.asan
def test_children_with_other_hash_seeds_find_every_key(seed: str) -> None:
    n = 2000
    v = shoal.freeze(_keys_module()["expected"](n))
    env = {**os.environ, "PYTHONHASHSEED": seed}
    r = run_python(_PROBE, v.handle(), str(n), env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)
    assert out["seed"] == seed
    assert out["bad"] == []


def test_a_table_built_under_another_hash_seed_is_probed_here() -> None:
    n = 2000
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    with subprocess.Popen(
        [sys.executable, "-c", _MAKER, str(n)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    ) as maker:
        assert maker.stdin is not None and maker.stdout is not None
        try:
            handle = maker.stdout.readline().strip()
            assert handle, "the maker printed no handle"
            v = shoal.attach(handle)
            keys = _keys_module()
            for i in range(n):
                for k, val in keys["keys_of"](i):
                    assert v[k] == val, k
            assert hash(v["tup"]) == hash(("x", b"y", 1, ("z",)))
            assert v == keys["expected"](n)
        finally:
            maker.stdin.write("done\n")
            maker.stdin.close()
            maker.wait(DEADLINE)
    assert maker.returncode == 0


# --- save / load ---------------------------------------------------------------------------------


def test_save_load_round_trip(tmp_path: pathlib.Path) -> None:
    d = _sample()
    d["array"] = np.arange(12, dtype=np.int64).reshape(3, 4)
    path = tmp_path / "sample.shoal"
    shoal.save(d, path)
    v = shoal.load(path)
    assert type(v).__name__ == "FrozenDict"
    assert same(v.thaw(), d)
    assert not v["array"].flags.writeable
    assert v[(1, "t")] == "tuple key" and v[1.0] == "int key"
    # A view saves the same way, and str paths work.
    path2 = str(tmp_path / "again.shoal")
    shoal.save(shoal.freeze(d), path2)
    assert same(shoal.load(path2).thaw(), d)


def test_save_load_every_container_root(tmp_path: pathlib.Path) -> None:
    for i, obj in enumerate([[1, "a"], (1, (2,)), {1, "x"}, frozenset({b"y"}), {}, []]):
        path = tmp_path / f"root{i}.shoal"
        shoal.save(obj, path)
        v = shoal.load(path)
        assert v == obj and same(v.thaw(), obj)


def test_save_load_an_ndarray(tmp_path: pathlib.Path) -> None:
    a = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    path = tmp_path / "array.shoal"
    shoal.save(a, path)
    b = shoal.load(path)
    assert type(b) is shoal.Array and b.dtype == a.dtype and np.array_equal(a, b)
    assert not b.flags.writeable


def test_load_of_pickled_leaves_needs_allow_pickle(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "pickles.shoal"
    shoal.save({"d": decimal.Decimal("2.5"), "plain": [1]}, path)
    with pytest.raises(ValueError, match="allow_pickle"):
        v = shoal.load(path)
        v["d"]  # refused at load or, at the latest, on access
    v = shoal.load(path, allow_pickle=True)
    assert v["d"] == decimal.Decimal("2.5") and v["plain"] == [1]


def test_load_a_missing_file_raises_file_not_found(tmp_path: pathlib.Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such frozen file: '.*nope.shoal'"):
        shoal.load(tmp_path / "nope.shoal")


def test_load_of_foreign_files_raises_decode_error(tmp_path: pathlib.Path) -> None:
    np.save(tmp_path / "numpy.npy", np.arange(10))
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "text").write_text("hello, this is not a frozen image\n" * 10)
    (tmp_path / "random").write_bytes(np.random.default_rng(1).bytes(4096))
    (tmp_path / "zeros").write_bytes(bytes(4096))
    for name in ("numpy.npy", "text", "random", "zeros"):
        with pytest.raises(
            shoal.DecodeError, match="not a shoal frozen image: bad magic at offset 0"
        ):
            shoal.load(tmp_path / name)
    with pytest.raises(shoal.DecodeError, match="is 0 bytes: too small for a frozen image"):
        shoal.load(tmp_path / "empty")


_OPEN_FIFO = r"""
import sys, shoal
from shoal import _shoal
try:
    if sys.argv[1] == "load":
        shoal.load(sys.argv[2])
    elif sys.argv[1] == "open_named":
        _shoal.Segment.open_named("fifo")
    else:
        print("listed", [(e["name"], e["valid"]) for e in _shoal.list_named()])
except Exception as e:
    print(f"{type(e).__name__}: {e}")
"""


@pytest.mark.parametrize("how", ["load", "open_named", "list_named"])
def test_a_fifo_is_refused_never_waited_on(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    # open(2) of a FIFO for reading waits for a writer, which may never come: shoal.load, a named
    # object's open and `shoal ls` (which opens every named object) must refuse it instead. In a
    # child, so that a hang fails the test at a generous deadline instead of hanging the run.
    named = tmp_path / "named"
    named.mkdir(mode=0o700)
    os.mkfifo(named / "fifo", 0o600)
    monkeypatch.setenv("SHOAL_NAMED_DIR", str(named))
    try:
        r = subprocess.run(
            [sys.executable, "-c", _OPEN_FIFO, how, str(named / "fifo")],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{how} of a FIFO was still blocked in open() after 60 s")
    assert r.returncode == 0, r.stderr[-2000:]
    expect = {
        "load": r"^DecodeError: .*fifo' is not a regular file",
        "open_named": r"^AccessDeniedError: .*fifo is not a private regular file",
        "list_named": r"^listed \[\('fifo', False\)\]",
    }[how]
    assert re.search(expect, r.stdout), r.stdout + r.stderr[-2000:]


def _saved(tmp_path: pathlib.Path) -> bytearray:
    path = tmp_path / "good.shoal"
    shoal.save({"a": [1, 2, "three"], "b": b"bytes"}, path)
    return bytearray(path.read_bytes())


@pytest.mark.parametrize(
    ("field", "offset", "fmt", "value", "message"),
    [
        ("magic", 0, "<Q", 0x1234, "magic|not a frozen|foreign"),
        ("version", 8, "<I", 2, "version"),
        ("flags", 12, "<I", 1 << 7, "flag"),
        ("image_size", 16, "<Q", 1 << 40, "size|truncat"),
        ("reserved", 48, "<Q", 1, "reserved"),
        ("reserved2", 56, "<Q", 1, "reserved"),
    ],
)
def test_load_checks_each_header_field(
    tmp_path: pathlib.Path, field: str, offset: int, fmt: str, value: int, message: str
) -> None:
    data = _saved(tmp_path)
    struct.pack_into(fmt, data, offset, value)
    path = tmp_path / f"bad-{field}.shoal"
    path.write_bytes(bytes(data))
    # A version or flag from a newer shoal is incompatible rather than corrupt: either error.
    with pytest.raises((shoal.DecodeError, shoal.IncompatibleSegmentError), match=f"(?i){message}"):
        shoal.load(path).thaw()


_CORRUPT = r"""
import json, math, random, sys
from collections.abc import Mapping, Sequence, Set
import numpy as np
import shoal

def walk(v, depth=0):
    if depth > 64:
        return
    if isinstance(v, Mapping):
        len(v)
        for k in v:
            walk(k, depth + 1)
            walk(v[k], depth + 1)
        list(v.items())
    elif isinstance(v, Set):
        for k in v:
            walk(k, depth + 1)
            assert (k in v) or (k != k) or True
    elif isinstance(v, Sequence) and not isinstance(v, (str, bytes)):
        for i in range(len(v)):
            walk(v[i], depth + 1)
        list(v)
    elif isinstance(v, np.ndarray):
        v.tobytes()

path, mode = sys.argv[1], sys.argv[2]
good = open(path, "rb").read()
expect = shoal.load(path).thaw()
walk(shoal.load(path))  # the intact file reads through, every key found
cases = []
if mode == "truncate":
    cases = [("cut", good[: len(good) * k // 16]) for k in range(16)]
else:
    rng = random.Random(int(sys.argv[3]))
    for _ in range(int(sys.argv[4])):
        b = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        cases.append(("flip", bytes(b)))
counts = {"decode_error": 0, "equal": 0, "different": 0, "pickle_refused": 0, "key_error": 0}
unexpected = []
for n, (kind, data) in enumerate(cases):
    print(f"case {n}", file=sys.stderr, flush=True)
    bad = path + ".bad"
    with open(bad, "wb") as f:
        f.write(data)
    try:
        v = shoal.load(bad)
        walk(v)
        t = v.thaw()
        counts["equal" if repr(t) == repr(expect) else "different"] += 1
    except (shoal.DecodeError, shoal.IncompatibleSegmentError):
        counts["decode_error"] += 1  # incompatible: a flipped version or flag bit
    except ValueError as e:
        if "allow_pickle" in str(e):
            counts["pickle_refused"] += 1
        else:
            unexpected.append(f"case {n}: ValueError: {e}")
    except KeyError:
        counts["key_error"] += 1  # a flipped stored hash: the key iterates, its lookup misses
    except Exception as e:
        unexpected.append(f"case {n}: {type(e).__name__}: {e}")
    finally:
        v = None
print(json.dumps({"counts": counts, "unexpected": unexpected[:20]}))
"""


def _corruptible(tmp_path: pathlib.Path) -> pathlib.Path:
    d: dict[Any, Any] = {
        "ints": list(range(-50, 50)) + [2**70, -(2**65)],
        "text": ["a", "héllo", "日本", "\ud800", "x" * 300],
        "bytes": [b"\x00\x01", b"y" * 200],
        "floats": [0.5, -0.0, math.inf],
        "nested": {"t": (1, (2, "3")), "s": {1, 2, "x"}, "fs": frozenset({(1, 2)})},
        "array": np.arange(64, dtype=np.int32).reshape(8, 8),
        (1, "k"): None,
        b"bk": True,
    }
    d.update({f"key{i}": i for i in range(200)})
    path = tmp_path / "corruptible.shoal"
    shoal.save(d, path)
    return path


def _corruption_run(*args: str) -> dict[str, Any]:
    r = run_python(_CORRUPT, *args, timeout=300)
    last = r.stderr.strip().splitlines()[-1:] if r.stderr.strip() else []
    assert r.returncode == 0, f"exit status {r.returncode} (a crash?) at {last}: {r.stderr[-2000:]}"
    out: dict[str, Any] = json.loads(r.stdout)
    assert out["unexpected"] == [], out
    return out


@pytest.mark.asan
def test_truncated_files_raise_decode_error_never_crash(tmp_path: pathlib.Path) -> None:
    out = _corruption_run(str(_corruptible(tmp_path)), "truncate")
    c = out["counts"]
    # Every cut is shorter than the image its header announces.
    assert c["decode_error"] == 16, c


@pytest.mark.asan
def test_flipped_bytes_raise_decode_error_or_read_never_crash(tmp_path: pathlib.Path) -> None:
    out = _corruption_run(str(_corruptible(tmp_path)), "flip", "1", "400")
    c = out["counts"]
    assert sum(c.values()) == 400
    assert c["decode_error"] > 0, c  # the checks ran


# --- golden files --------------------------------------------------------------------------------


def _golden_ndarray(dtype: str, shape: tuple[int, ...], order: str, data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if order == "F" else "C")


def _golden_expected(txt: str) -> Any:
    """The value a golden file holds, from its description: '#' comment lines, then the root in
    Python-like text, where ``ndarray(dtype=, shape=, order=, data=raw bytes)`` is an array
    leaf and ``pickle(bytes)`` a pickled leaf (these are this repository's own test data)."""
    src = "\n".join(line for line in txt.splitlines() if not line.startswith("#")).strip()
    namespace = {
        "nan": math.nan,
        "inf": math.inf,
        "ndarray": _golden_ndarray,
        "pickle": pickle.loads,
    }
    return eval(src, namespace)  # test data of this repository


def _golden_files() -> list[pathlib.Path]:
    if not GOLDEN.is_dir():
        return []
    return sorted(p for p in GOLDEN.iterdir() if p.suffix != ".txt" and p.is_file())


@pytest.mark.asan
def test_golden_files_exist_each_with_a_description() -> None:
    files = _golden_files()
    assert files, f"no golden files in {GOLDEN}"
    for p in files:
        assert p.with_suffix(".txt").exists() or pathlib.Path(str(p) + ".txt").exists(), p


@pytest.mark.parametrize("path", _golden_files(), ids=[p.name for p in _golden_files()])
@pytest.mark.asan
def test_golden_file_loads_as_described(path: pathlib.Path) -> None:
    txt_path = path.with_suffix(".txt")
    if not txt_path.exists():
        txt_path = pathlib.Path(str(path) + ".txt")
    txt = txt_path.read_text(encoding="utf-8")
    expected = _golden_expected(txt)
    pickles = "pickle(" in txt
    if pickles:
        with pytest.raises(ValueError, match="allow_pickle"):
            shoal.load(path).thaw()
    v = shoal.load(path, allow_pickle=pickles)
    got = v.thaw() if hasattr(v, "thaw") else v
    assert same(got, expected), (path.name, got, expected)
    if isinstance(v, Mapping):
        for k in expected:
            if not _nan(k):  # NaN keys never match
                assert same(v[k], expected[k]) or v[k] == expected[k]


@pytest.mark.asan
def test_golden_files_are_probed_by_a_process_with_another_hash_seed() -> None:
    files = [p for p in _golden_files() if "pickle(" not in p.with_suffix(".txt").read_text()]
    assert files, f"no golden files in {GOLDEN}"
    code = (
        "import sys, shoal\n"
        "from collections.abc import Mapping\n"
        "for p in sys.argv[1:]:\n"
        "    v = shoal.load(p)\n"
        "    if isinstance(v, Mapping):\n"
        "        for k in v:\n"
        "            assert k != k or k in v, (p, k)\n"
        "print('ok')\n"
    )
    r = run_python(code, *map(str, files), env={**os.environ, "PYTHONHASHSEED": "7"}, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-3000:]


def test_load_is_lazy_constant_time_for_a_big_file(tmp_path: pathlib.Path) -> None:
    # O(1) load: the mapping is not read; only what is touched becomes resident. Checked by
    # memory, not time: loading a 64 MiB file adds (almost) nothing to this process's RSS.
    from shoal._tools.measure import proc_mem

    path = tmp_path / "big.shoal"
    shoal.save({"blob": b"\x01" * (64 << 20), "small": 1}, path)
    before = proc_mem().rss
    v = shoal.load(path)
    assert v["small"] == 1
    grew = proc_mem().rss - before
    assert grew < 16 << 20, grew
    assert len(v["blob"]) == 64 << 20


@pytest.mark.asan
def test_iterating_ints_never_changes_an_int_someone_holds() -> None:
    # FrozenList iteration rewrites an int it made earlier when only the iterator holds it
    # (frozen_bind.cpp next_int): every int anybody kept must keep its value.
    data = [-(2**29), -7, 300, 301, 2**29, 2**30, 2**40, 5, 1000, -1000] * 50 + list(range(2000))
    fl = shoal.freeze(data)
    kept = list(fl)
    assert kept == data
    pairs = list(zip(fl, fl, strict=True))
    assert pairs == list(zip(data, data, strict=True))
    it = iter(fl)
    held = [next(it) for _ in range(5)]
    assert held == data[:5]
    seen: dict[int, int] = {}
    for i, x in enumerate(fl):
        seen[i] = x  # a reference kept in a dict
        if i % 3 == 0:
            _ = x + 1  # a temporary made from it
    assert [seen[i] for i in range(len(data))] == data
    assert sum(fl) == sum(data)
    assert [x for x in fl if x > 299] == [x for x in data if x > 299]


# --- inputs and messages a new user meets ---------------------------------------------------------


def test_none_is_a_leaf_for_freeze_share_and_save(tmp_path: pathlib.Path) -> None:
    assert shoal.freeze(None) is None  # as freeze(5) is 5
    assert shoal.share(None) is None
    path = tmp_path / "none.shoal"
    shoal.save(None, path)
    assert shoal.load(path) is None
    assert shoal.freeze({None: None})[None] is None


def test_a_leaf_that_will_not_pickle_says_what_happened_and_what_to_do() -> None:
    with pytest.raises(TypeError, match=r"cannot share a function: .* falls back to pickling"):
        shoal.freeze([lambda: 1])
    with pytest.raises(TypeError, match=r"memoryview: .*bytes\(x\), or numpy.frombuffer"):
        shoal.share(memoryview(b"ab"))
    with pytest.raises(TypeError, match="allow_pickle=False refuses every non-native leaf"):
        shoal.freeze({"lock": threading.Lock()})
