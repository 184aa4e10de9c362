"""shoal.Dict's nested state (issue 15, item 2) and its keys: a dict stored into a Dict becomes a
new shoal.Dict held by reference, so nested mutation is seen by every process (fork, spawn,
forkserver); a shoal object stored is a reference to that same object; pop/del let the entry's
reference go while the object lives on for whoever holds it; a writer SIGKILLed among reference
writes leaves every named object alive; the nested dict's memory goes when the last holder and
the parent let go. Keys are a FrozenDict's (tuples, frozensets, big ints), hashed alike. No
timing assertions."""

from __future__ import annotations

import copy
import gc
import multiprocessing as mp
import os
import pickle
import signal
import warnings
from fractions import Fraction
from typing import Any

import pytest
from conftest import DEADLINE, describe_here, shmem_baseline, wait_until

import shoal
from shoal import _shoal
from shoal._tools.measure import machine_shmem

pytestmark = pytest.mark.usefixtures("runtime_dir")

MIB = 1 << 20
SLACK = 4 * MIB


def _join(p: Any) -> None:
    p.join(DEADLINE)
    assert p.exitcode == 0, f"child failed: {p.exitcode}"


def _objects(session: str) -> dict[str, dict[str, Any]]:
    return {o["id"]: o for o in describe_here(session)["objects"]}


# ---- nested containers stay live --------------------------------------------------------------


def test_nested_dict_is_a_live_shoal_dict() -> None:
    d = shoal.Dict()
    d["a"] = {}
    d["a"]["x"] = 1
    assert d == {"a": {"x": 1}} and isinstance(d["a"], shoal.Dict)
    assert d["a"] is d["a"]  # one Python object per shared dict while it lives
    d["a"]["n"] = {"deep": {"er": 2}}
    d["a"]["n"]["deep"]["er"] += 1
    assert d["a"]["n"]["deep"]["er"] == 3
    assert repr(d) == "{'a': {'x': 1, 'n': {'deep': {'er': 3}}}}"


def test_each_store_converts_afresh_and_a_shoal_dict_is_stored_as_itself() -> None:
    d = shoal.Dict()
    plain = {"x": 1}
    d["a"] = plain
    d["b"] = plain
    plain["y"] = 2  # later changes to the original are not seen
    assert d["a"] == {"x": 1} and "y" not in d["b"]
    d["a"]["z"] = 3
    assert "z" not in d["b"]  # two stores, two new dicts
    e = shoal.Dict(v=0)
    d["c"] = e
    d["d"] = e
    e["v"] = 5
    assert d["c"]["v"] == d["d"]["v"] == 5 and d["c"] is d["d"]
    # A plain dict that holds itself becomes a shoal.Dict that holds itself.
    cyc: dict[str, Any] = {"k": 1}
    cyc["self"] = cyc
    d["cyc"] = cyc
    assert d["cyc"]["self"] is d["cyc"] and d["cyc"]["self"]["k"] == 1


def test_pop_and_del_let_the_reference_go_the_dict_living_on() -> None:
    d = shoal.Dict()
    d["a"] = {"x": 1}
    inner = d.pop("a")
    assert isinstance(inner, shoal.Dict) and inner == {"x": 1}
    inner["y"] = 2  # still a working shared dict: this process holds it
    assert inner == {"x": 1, "y": 2} and "a" not in d
    d["b"] = inner
    d["c"] = inner
    del d["b"]
    assert d["c"]["y"] == 2
    k, v = d.popitem()
    assert k == "c" and v is inner
    d["e"] = inner
    d.clear()
    assert inner["x"] == 1
    d._check()


def test_repr_eq_copy_and_deepcopy_of_nested_state() -> None:
    d = shoal.Dict()
    d[1] = d
    assert repr(d) == "{1: {...}}"
    assert d == d[1] and d[1] is d
    d2 = shoal.Dict()
    d2[1] = d2
    d2["n"] = {"x": [1, 2]}
    assert d2 != d
    assert shoal.Dict(a={"x": 1}) == {"a": {"x": 1}} == shoal.Dict(a={"x": 1})
    assert shoal.Dict(a={"x": 1}) != {"a": {"x": 2}}
    c = d2.copy()  # shallow, as dict.copy: the nested dict is the same one
    assert c["n"] is d2["n"] and c[1] is d2
    c["n"]["y"] = 1
    assert d2["n"]["y"] == 1
    deep = copy.deepcopy(d2)  # new nested dicts; the cycle stays a cycle
    deep["n"]["z"] = 1
    assert "z" not in d2["n"] and deep[1] is deep


def test_a_dict_holding_references_pickles_as_handles() -> None:
    d = shoal.Dict()
    d["a"] = {"x": 1}
    d["me"] = d
    back = pickle.loads(pickle.dumps(d))
    assert back["a"]["x"] == 1
    back["a"]["x"] = 2
    assert d["a"]["x"] == 2
    assert back["me"]["me"]["a"] is back["a"]


def test_arrays_sync_objects_and_frozen_roots_are_stored_by_reference() -> None:
    d = shoal.Dict()
    arr = shoal.zeros(10)
    d["arr"] = arr
    arr[3] = 7.0
    assert d["arr"][3] == 7.0
    d["arr"][4] = 8.0  # the same shared array, writable
    assert arr[4] == 8.0
    v = shoal.Value("i", 0)
    d["v"] = v
    d["v"].value = 41
    assert v.value == 41
    lock = shoal.Lock()
    d["lock"] = lock
    with d["lock"]:
        assert not lock.acquire(False)
    f = shoal.freeze({"k": [1, 2]})
    d["f"] = f
    assert d["f"] == {"k": [1, 2]} and isinstance(d["f"], shoal.FrozenDict)
    # A slice is not the whole array: stored as its pickle (a copy of the view's handle).
    d["part"] = arr[2:5]
    assert list(d["part"]) == [0.0, 7.0, 8.0]


def _child_nested_writes(d: Any, e: Any) -> None:
    d["a"]["x"] = 1  # nested mutation through the parent's dict
    d["lst"] = {"y": 0}
    d["lst"]["y"] = 2
    e["from_child"] = True
    d["arr"][0] = 9.0
    d["val"].value = 3.5


def test_nested_mutation_is_seen_by_another_process(ctx: mp.context.BaseContext) -> None:
    d = shoal.Dict()
    d["a"] = {}
    e = shoal.Dict()
    d["e"] = e
    d["arr"] = shoal.zeros(4)
    d["val"] = shoal.Value("d", 0.0)
    p = ctx.Process(target=_child_nested_writes, args=(d, e))
    p.start()
    _join(p)
    assert d["a"]["x"] == 1 and d["lst"]["y"] == 2
    assert e["from_child"] is True and d["e"]["from_child"] is True
    assert d["arr"][0] == 9.0 and d["val"].value == 3.5


# ---- keys: a FrozenDict's -------------------------------------------------------------------


def test_tuple_frozenset_and_big_int_keys_hash_as_in_a_frozen_dict() -> None:
    keys: list[Any] = [
        (1, "a"),
        ((1, 2), (b"x", None)),
        frozenset({1, 2}),
        frozenset({(1, 2), "s"}),
        2**64,
        -(2**100),
        (),
        (2**70, 1.5),
    ]
    f = shoal.freeze({k: i for i, k in enumerate(keys)})
    d = shoal.Dict({k: i for i, k in enumerate(keys)})
    for i, k in enumerate(keys):
        assert d[k] == i and k in d
    # A key read from a FrozenDict (a FrozenTuple, a FrozenSet) is found in the Dict...
    for fk in f:
        assert d[fk] == f[fk]
    # ...and a key read back from the Dict (a plain tuple, frozenset, int) in the FrozenDict.
    for dk in d:
        assert f[dk] == d[dk] and type(dk) in (tuple, frozenset, int)
    # Equal numbers inside: one key, as in dict.
    d[(1.0, "a")] = "float"
    assert d[(1, "a")] == "float" and len(d) == len(keys)
    assert d[2.0**70, 1.5] == 7
    assert next(iter(d.keys())) == (1, "a")
    d._check()


def test_bad_keys_are_type_errors() -> None:
    d = shoal.Dict()
    with pytest.raises(TypeError, match="unhashable"):
        d[(1, [2])] = 1
    with pytest.raises(TypeError, match="unhashable"):
        (1, [2]) in d  # noqa: B015
    with pytest.raises(TypeError, match="shoal.Dict keys"):
        d[(1, Fraction(1, 2))] = 1
    assert (1, Fraction(1, 2)) not in d and d.get((1, Fraction(1, 2))) is None
    with pytest.raises(TypeError, match="unhashable"):
        d[shoal.Dict()] = 1  # a Dict is unhashable, as dict


# ---- lifetime: references, kills and memory ---------------------------------------------------


@pytest.mark.serial
def test_the_nested_dict_goes_when_the_last_holder_and_the_parent_let_go() -> None:
    keep = _shoal.Segment.create(4096)  # keeps the session (and its broker) up
    os.environ["SHOAL_SESSION"] = keep.session
    try:
        baseline = shmem_baseline()
        d = shoal.Dict()
        d["a"] = {"big": b"x" * (32 * MIB)}
        assert machine_shmem() - baseline >= 30 * MIB, "the nested dict is not in Shmem"
        inner = d["a"]
        del d["a"]  # the parent lets go; this process still holds it
        assert len(inner["big"]) == 32 * MIB
        d["b"] = inner  # and the parent refers to it again
        del inner
        gc.collect()
        assert len(d["b"]["big"]) == 32 * MIB
        del d
        gc.collect()
        assert wait_until(lambda: set(_objects(keep.session)) == {keep.id})
        assert describe_here(keep.session)["total_bytes"] == 4096 + 64
        assert wait_until(lambda: machine_shmem() - baseline <= SLACK, 3 * DEADLINE), (
            f"Shmem is {(machine_shmem() - baseline) / MIB:.1f} MiB above its baseline"
        )
    finally:
        del os.environ["SHOAL_SESSION"]


def _nested_writes_forever(d: Any, started: Any) -> None:
    i = 0
    started.set()
    while True:
        k = i % 40
        d[k] = {"i": i, "sub": {"j": i}}  # a new dict, by reference
        if i % 3 == 0:
            d.pop((i * 7) % 40, None)
        if i % 5 == 0 and k in d:
            d["shared"] = d[k]  # a second reference to one dict
        if i % 11 == 0:
            d.pop("shared", None)
        i += 1


def _kill_among_reference_writes(ctx: mp.context.BaseContext) -> None:
    d = shoal.Dict()
    for round_ in range(3):
        started = shoal.Event()
        p = ctx.Process(target=_nested_writes_forever, args=(d, started))
        p.start()
        assert started.wait(DEADLINE)
        assert wait_until(lambda: len(d) > 20)
        assert p.pid is not None
        os.kill(p.pid, signal.SIGKILL)
        p.join(DEADLINE)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", shoal.OwnerDiedWarning)
            d[f"after{round_}"] = {"r": round_}
        size, _, _ = d._check()  # R1-R3 included: every live reference is held
        assert size == len(d)
        # Nothing freed that is still named: every nested dict maps and reads whole.
        for k, v in d.items():
            if isinstance(k, int) or k == "shared":
                assert isinstance(v, shoal.Dict) and v["sub"]["j"] == v["i"]
        assert d[f"after{round_}"]["r"] == round_


def test_a_writer_killed_among_reference_writes_leaves_every_named_dict_alive(
    ctx: mp.context.BaseContext,
) -> None:
    keep = _shoal.Segment.create(4096)
    os.environ["SHOAL_SESSION"] = keep.session
    try:
        _kill_among_reference_writes(ctx)  # its Dict, Processes and Events are gone after it
        session = keep.session
        gc.collect()
        # Once the parent goes nothing it referred to is left (a reference a death kept goes
        # with the dict).
        assert wait_until(lambda: set(_objects(session)) == {keep.id}), _objects(session)
    finally:
        del os.environ["SHOAL_SESSION"]


# ---- lists: the same, through shoal.List ------------------------------------------------------


def _child_list_writes(lst: Any, d: Any) -> None:
    lst[0]["y"] = 2  # a dict inside a list
    lst[1].append("from child")  # a list inside a list
    d["l"][0]["z"] = 3  # a dict inside a list inside a dict
    lst.append({"new": True})


def test_nested_lists_are_live_in_another_process(ctx: mp.context.BaseContext) -> None:
    lst = shoal.List([{"x": 1}, [1]])
    assert isinstance(lst[0], shoal.Dict) and isinstance(lst[1], shoal.List)
    d = shoal.Dict(l=[{}])
    p = ctx.Process(target=_child_list_writes, args=(lst, d))
    p.start()
    _join(p)
    assert lst == [{"x": 1, "y": 2}, [1, "from child"], {"new": True}]
    assert d == {"l": [{"z": 3}]}
    popped = lst.pop(1)
    assert popped == [1, "from child"]  # the object lives on in the popper's hands
    lst.append(lst)
    assert repr(lst) == "[{'x': 1, 'y': 2}, {'new': True}, [...]]"
    lst._check()
