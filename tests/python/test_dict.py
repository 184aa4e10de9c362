"""shoal.Dict (issue 15): dict's semantics side by side with a real dict (and a seeded
model-based random test), values by pickling, several processes reading and writing one Dict
under fork, spawn and forkserver, ``d.lock``, a writer SIGKILLed mid-stream, pickling, attach,
hold, Pool arguments and Ctrl-C. No timing assertions."""

from __future__ import annotations

import copy
import enum
import multiprocessing as mp
import os
import pickle
import random
import signal
import threading
import warnings
from collections.abc import Mapping, MutableMapping
from fractions import Fraction
from typing import Any

import pytest
from conftest import DEADLINE, ctrl_c_until_done, take_ctrl_c, wait_until

import shoal

pytestmark = pytest.mark.usefixtures("runtime_dir")


def _join(p: Any) -> None:
    p.join(DEADLINE)
    assert p.exitcode is not None, "child did not finish"


# ---- dict's semantics, side by side -----------------------------------------------------------


def test_basic_methods_match_dict() -> None:
    d, r = shoal.Dict(), {}
    for x in (d, r):
        x["a"] = 1
        x[2] = "two"
        x[3.5] = None
        x[None] = b"bytes"
        x[b"k"] = True
        x["a"] = 10  # an overwrite keeps the place
    assert list(d) == list(r) and list(d.items()) == list(r.items())
    assert len(d) == len(r) == 5
    assert d["a"] == 10 and d[None] == b"bytes" and d.get("zz") is None and d.get("zz", 7) == 7
    assert "a" in d and "zz" not in d and b"a" not in d
    with pytest.raises(KeyError) as ei:
        d["missing"]
    assert ei.value.args == ("missing",)
    del d[2]
    del r[2]
    with pytest.raises(KeyError):
        del d[2]
    assert d.pop("a") == r.pop("a") == 10
    assert d.pop("a", "dflt") == "dflt"
    with pytest.raises(KeyError):
        d.pop("a")
    assert d.setdefault("s", [1]) == r.setdefault("s", [1]) == [1]
    assert d.setdefault("s", 0) == [1]
    assert d.setdefault("n") is None and r.setdefault("n") is None
    assert d.popitem() == r.popitem()
    assert d == r and not (d != r)  # noqa: SIM202
    assert repr(d) == repr(r)
    d.clear()
    assert len(d) == 0 and list(d) == [] and repr(d) == "{}"
    with pytest.raises(KeyError, match="empty"):
        d.popitem()


def test_equal_numbers_are_one_key() -> None:
    d = shoal.Dict()
    d[1] = "int"
    d[1.0] = "float"
    d[True] = "bool"
    assert len(d) == 1 and list(d) == [1] and type(next(iter(d))) is int
    assert d[1] == d[1.0] == d[True] == "bool"
    d[0.5] = "half"
    assert 0.5 in d and d[0.5] == "half"
    assert d.pop(True) == "bool" and 1 not in d
    # str and bytes never equal; int subclass keys are their int value.

    class Color(enum.IntEnum):
        RED = 7

    d[Color.RED] = "red"
    assert d[7] == "red" and type(list(d)[-1]) is int
    assert "x" not in d and b"x" not in d


def test_key_types() -> None:
    d = shoal.Dict()
    for bad in ([1], {1: 2}, {1}):
        with pytest.raises(TypeError, match="unhashable"):
            d[bad] = 1
        with pytest.raises(TypeError, match="unhashable"):
            bad in d  # noqa: B015
        with pytest.raises(TypeError, match="unhashable"):
            d.get(bad)
    for unsupported in (Fraction(1, 3), (1, Fraction(1, 3)), frozenset({Fraction(1, 3)})):
        with pytest.raises(TypeError, match="shoal.Dict keys"):
            d[unsupported] = 1
        # Absent when looked up: no stored key can equal it.
        assert unsupported not in d
        assert d.get(unsupported, "no") == "no"
        with pytest.raises(KeyError):
            d[unsupported]
        assert d.pop(unsupported, 5) == 5
    assert len(d) == 0
    big = 2**63 - 1
    d[big] = "max"
    d[-(2**63)] = "min"
    assert d[big] == "max" and d[-(2**63)] == "min"


def test_values_natively_and_by_pickling() -> None:
    d = shoal.Dict()
    values: list[Any] = [
        None,
        True,
        False,
        0,
        -(2**63),
        2**63 - 1,
        2**100,
        1.5,
        float("inf"),
        "",
        "héllo",
        "x" * 10_000,
        b"",
        b"\x80\x05K\x01.",  # bytes that look like a pickle stay bytes
        (1, 2),
        [1, [2]],
        {"a": {"b": 1}},
        {1, 2},
        Fraction(1, 3),
        "\udc80",  # a lone surrogate: no UTF-8, pickled
    ]
    for i, v in enumerate(values):
        d[i] = v
    for i, v in enumerate(values):
        got = d[i]
        if type(v) in (dict, list):  # a new shoal.Dict/List, by reference (test_dict_nesting.py)
            assert got == v and isinstance(got, (shoal.Dict, shoal.List)), (i, v, got)
            continue
        assert got == v and type(got) is type(v), (i, v, got)
    # A stored value is a copy: later changes to the original are not seen.
    lst = [1]
    d["l"] = lst
    lst.append(2)
    assert d["l"] == [1]  # each store converts afresh: the original's changes are not seen
    got = d["l"]
    got.append(3)  # a live shoal.List: seen
    assert d["l"] == [1, 3]


class _Point:
    def __init__(self, x: int) -> None:
        self.x = x

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Point) and other.x == self.x


def test_user_class_stored_by_value_and_allow_pickle_false() -> None:
    d = shoal.Dict()
    p = _Point(1)
    d["p"] = p
    p.x = 2
    assert d["p"] == _Point(1) and d["p"] is not p
    strict = shoal.Dict(allow_pickle=False)
    strict["ok"] = "str"
    strict[2] = (1, ("t", 2**64))  # tuples of key types and big ints: natively
    assert strict[2] == (1, ("t", 2**64))
    for v in ({1}, _Point(1), (1, [2])):
        with pytest.raises(TypeError, match="allow_pickle=False"):
            strict["bad"] = v
    assert "bad" not in strict
    assert not strict.allow_pickle and d.allow_pickle


def test_constructor_update_fromkeys_copy_or() -> None:
    assert shoal.Dict({"a": 1}, b=2) == {"a": 1, "b": 2}
    assert shoal.Dict([("a", 1), ("b", 2)]) == dict([("a", 1), ("b", 2)])  # noqa: C406
    assert shoal.Dict(shoal.Dict(x=1)) == {"x": 1}
    with pytest.raises(TypeError):
        shoal.Dict([1, 2])
    with pytest.raises(ValueError, match="length 3"):
        shoal.Dict([(1, 2, 3)])
    with pytest.raises(TypeError, match="at most 1"):
        shoal.Dict({}, {})
    d = shoal.Dict(a=1)
    d.update({"b": 2}, c=3)
    d.update([("d", 4)])
    d.update(e=5)
    assert list(d.items()) == [("a", 1), ("b", 2), ("c", 3), ("d", 4), ("e", 5)]
    f = shoal.Dict.fromkeys("abc", 0)
    assert isinstance(f, shoal.Dict) and f == dict.fromkeys("abc", 0)
    c = d.copy()
    assert isinstance(c, shoal.Dict) and c == d and c.handle() != d.handle()
    c["z"] = 1
    assert "z" not in d
    assert isinstance(copy.copy(d), shoal.Dict)
    deep = copy.deepcopy(d)
    deep["only_in_deep"] = 1
    assert isinstance(deep, shoal.Dict) and "only_in_deep" not in d
    u = d | {"a": 100, "y": 1}
    assert isinstance(u, shoal.Dict) and u == {**d, "a": 100, "y": 1}
    assert ({"q": 1} | d) == {"q": 1, **d}
    d |= {"a": 0}
    assert d["a"] == 0
    d |= [("w", 1)]  # |= takes what update takes, as dict's
    assert d["w"] == 1
    with pytest.raises(TypeError):
        d | [("x", 1)]


def test_views_match_dict() -> None:
    d = shoal.Dict(a=1, b=2, c=3)
    r = {"a": 1, "b": 2, "c": 3}
    keys = d.keys()
    assert len(keys) == 3 and "a" in keys and ("a", 1) in d.items()
    assert ("a", 2) not in d.items() and 2 in d.values()
    assert d.keys() & {"a", "z"} == r.keys() & {"a", "z"}
    assert d.keys() | {"z"} == r.keys() | {"z"}
    assert d.keys() - {"a"} == r.keys() - {"a"}
    assert d.keys() ^ {"a", "z"} == r.keys() ^ {"a", "z"}
    assert d.items() & {("a", 1)} == r.items() & {("a", 1)}
    assert d.keys() == r.keys() and d.items() == r.items()
    assert list(reversed(d)) == list(reversed(r))
    assert list(reversed(d.keys())) == ["c", "b", "a"]
    assert list(reversed(d.values())) == [3, 2, 1]
    assert list(reversed(d.items())) == list(reversed(r.items()))
    d["new"] = 4  # views are live
    assert "new" in keys and len(keys) == 4
    assert repr(d.keys()) == "dict_keys(['a', 'b', 'c', 'new'])"
    assert d.items().mapping["a"] == 1 and d.values().mapping == d


def test_changing_the_size_while_iterating_raises_as_dict() -> None:
    for make in (shoal.Dict, dict):
        d: Any = make(a=1, b=2)
        with pytest.raises(RuntimeError, match="changed size during iteration"):
            for k in d:
                d[k + "x"] = 0
        d = make(a=1, b=2)
        with pytest.raises(RuntimeError, match="changed size during iteration"):
            for _ in d.items():
                d.pop("b")
        d = make(a=1, b=2)
        for k in d:  # an overwrite does not change the size
            d[k] = 5
        assert dict(d) == {"a": 5, "b": 5}


class Counter(shoal.Dict):
    def __missing__(self, key: Any) -> int:
        return 0

    def bump(self, key: Any) -> None:
        with self.lock:
            self[key] = self[key] + 1


def test_mapping_protocol_equality_hash_and_subclass() -> None:
    d = shoal.Dict(a=1)
    assert isinstance(d, MutableMapping) and isinstance(d, Mapping)
    assert d == {"a": 1} and {"a": 1} == d and d != {"a": 2} and d != {"a": 1, "b": 2}
    assert d == shoal.Dict(a=1) and d != [("a", 1)]
    assert d == shoal.freeze({"a": 1}) and shoal.freeze({"a": 1}) == d
    with pytest.raises(TypeError, match="unhashable"):
        hash(d)

    c = Counter()
    c.bump("x")
    c.bump("x")
    assert c["x"] == 2 and c["nope"] == 0
    assert isinstance(Counter.fromkeys([1]), Counter)
    c2 = pickle.loads(pickle.dumps(c))
    assert type(c2) is Counter and c2["x"] == 2

    class NoInit(shoal.Dict):
        def __init__(self) -> None:
            pass

    with pytest.raises(TypeError, match="not initialised"):
        len(NoInit())


class _WithAttrs(shoal.Dict):
    pass


def test_subclass_instances_with_attributes_survive_gc() -> None:
    # nanobind's own traverse read a managed __dict__ at tp_dictoffset -1 (a crash in GC).
    import gc

    objs = []
    for i in range(50):
        o = _WithAttrs(i=i)
        o.note = [o]  # an attribute, and a cycle through it
        objs.append(o)
    it = iter(objs[0])
    gc.collect()
    assert next(it) == "i" and objs[7]["i"] == 7 and objs[7].note[0] is objs[7]
    del objs, it, o
    gc.collect()


def test_threads_of_one_process_share_the_lock() -> None:
    # A thread waiting for the lock (d.lock or a write) releases the GIL: the holder can go on.
    d = shoal.Dict(n=0)

    def work() -> None:
        for _ in range(300):
            with d.lock:
                d["n"] = d["n"] + 1
            d[threading.get_ident()] = 1  # a plain write, also waiting while another holds it

    ts = [threading.Thread(target=work) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(DEADLINE)
    assert not any(t.is_alive() for t in ts)
    assert d["n"] == 1200


def test_model_based_random_operations_match_dict() -> None:
    rng = random.Random(15002)
    d, r = shoal.Dict(), {}
    keys: list[Any] = [0, 1, 2, 3, 1.0, 2.5, True, False, None, "a", "b", "", b"a", b"", 2**40]
    vals: list[Any] = [0, -1, "s", b"b", 1.5, None, (1,), [2], "long" * 50]
    for step in range(3000):
        op = rng.randrange(9)
        k, v = rng.choice(keys), rng.choice(vals)
        if op <= 2:
            d[k] = v
            r[k] = v
        elif op == 3:
            assert (k in d) == (k in r)
            assert d.get(k, "dflt") == r.get(k, "dflt")
        elif op == 4:
            assert d.pop(k, "no") == r.pop(k, "no")
        elif op == 5 and rng.random() < 0.3:
            if r:
                assert d.popitem() == r.popitem()
            else:
                with pytest.raises(KeyError):
                    d.popitem()
        elif op == 6:
            assert d.setdefault(k, v) == r.setdefault(k, v)
        elif op == 7 and rng.random() < 0.02:
            d.clear()
            r.clear()
        elif op == 8:
            try:
                del r[k]
            except KeyError:
                with pytest.raises(KeyError):
                    del d[k]
            else:
                del d[k]
        if step % 97 == 0:
            assert list(d.items()) == list(r.items()) and len(d) == len(r)
    assert list(d.items()) == list(r.items())
    assert d._check()[0] == len(r)


# ---- processes ---------------------------------------------------------------------------


def _writer(d: Any, tag: str, n: int) -> None:
    for i in range(n):
        d[f"{tag}{i}"] = i
    d[f"{tag}done"] = True


def test_processes_see_each_others_writes(ctx: mp.context.BaseContext) -> None:
    d = shoal.Dict()
    d["parent"] = "hello"
    ps = [ctx.Process(target=_writer, args=(d, t, 200)) for t in ("p", "q")]
    for p in ps:
        p.start()
    for p in ps:
        _join(p)
        assert p.exitcode == 0
    assert len(d) == 1 + 2 * 201
    assert d["p199"] == 199 and d["q0"] == 0 and d["pdone"] is True
    d._check()


def _increment(d: Any, n: int) -> None:
    for _ in range(n):
        with d.lock:
            d["n"] = d["n"] + 1  # read, then write: exact only under the lock


def test_lock_makes_compound_updates_exact(ctx: mp.context.BaseContext) -> None:
    d = shoal.Dict(n=0)
    ps = [ctx.Process(target=_increment, args=(d, 300)) for _ in range(3)]
    for p in ps:
        p.start()
    _increment(d, 300)
    for p in ps:
        _join(p)
        assert p.exitcode == 0
    assert d["n"] == 1200


def test_lock_is_an_rlock() -> None:
    d = shoal.Dict()
    lock = d.lock
    assert lock.acquire() and lock.acquire(False) and lock.acquire(True, 0.1)
    assert lock._count == 3
    d["x"] = 1  # writes take it recursively
    for _ in range(3):
        lock.release()
    assert lock._count == 0
    with pytest.raises(shoal.InvalidArgumentError):
        lock.release()
    with d.lock:
        d["y"] = 2
    assert d == {"x": 1, "y": 2}


def _hold_lock(d: Any, held: Any) -> None:
    d.lock.acquire()
    held.set()
    threading.Event().wait(DEADLINE)


def test_lock_timeout_and_readers_never_wait(ctx: mp.context.BaseContext) -> None:
    d, held = shoal.Dict(a=1), shoal.Event()
    p = ctx.Process(target=_hold_lock, args=(d, held))
    p.start()
    try:
        assert held.wait(DEADLINE)
        assert d.lock.acquire(False) is False
        assert d.lock.acquire(True, 0.05) is False
        assert d["a"] == 1 and "a" in d and len(d) == 1 and list(d) == ["a"]  # reads go on
    finally:
        p.kill()
        _join(p)


def _write_forever(d: Any, started: Any) -> None:
    i = 0
    started.set()
    while True:
        d[i % 500] = "v" * (i % 50)
        if i % 3 == 0:
            d.pop((i * 7) % 500, None)
        i += 1


def test_a_writer_killed_mid_stream_leaves_the_dict_consistent(
    ctx: mp.context.BaseContext,
) -> None:
    d = shoal.Dict()
    for round_ in range(3):
        started = shoal.Event()
        p = ctx.Process(target=_write_forever, args=(d, started))
        p.start()
        assert started.wait(DEADLINE)
        assert wait_until(lambda: len(d) > 50)
        assert p.pid is not None
        os.kill(p.pid, signal.SIGKILL)
        _join(p)
        # The next writer repairs whatever the killed one was doing. It warns only when the
        # child died holding the lock (likely, not certain: it may die between two writes).
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            d[f"after{round_}"] = round_
        assert all(issubclass(x.category, shoal.OwnerDiedWarning) for x in w)
        size, _, _ = d._check()
        assert size == len(d) == len(list(d))
        assert d[f"after{round_}"] == round_
        for k, v in d.items():
            if isinstance(k, str):
                assert k.startswith("after")
            else:
                assert isinstance(v, str) and set(v) <= {"v"}


def _hold_lock_and_die(d: Any, held: Any) -> None:
    d.lock.acquire()
    d["half"] = "done"  # a compound update under the lock: not rolled back
    held.set()
    os.kill(os.getpid(), signal.SIGKILL)


def test_next_writer_gets_owner_died_warning(ctx: mp.context.BaseContext) -> None:
    d, held = shoal.Dict(), shoal.Event()
    p = ctx.Process(target=_hold_lock_and_die, args=(d, held))
    p.start()
    assert held.wait(DEADLINE)
    _join(p)
    with pytest.warns(shoal.OwnerDiedWarning, match="shoal.Dict"):
        d["next"] = 1
    assert d == {"half": "done", "next": 1}
    # Through the lock object, and `with` releases when the warning is an error.
    held2 = shoal.Event()
    p = ctx.Process(target=_hold_lock_and_die, args=(d, held2))
    p.start()
    assert held2.wait(DEADLINE)
    _join(p)
    with warnings.catch_warnings():
        warnings.simplefilter("error", shoal.OwnerDiedWarning)
        with pytest.raises(shoal.OwnerDiedWarning), d.lock:
            pytest.fail("the body must not run")
    assert d.lock._count == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error", shoal.OwnerDiedWarning)  # reported once, not again
        assert d.lock.acquire(False) is True
    d.lock.release()
    d._check()


def _wait_on_dict_lock(d: Any, ready: Any, result: Any, how: str) -> None:
    take_ctrl_c()
    ready.set()
    try:
        if how == "acquire":
            d.lock.acquire()
        else:
            d["written"] = 1  # a write waits for the lock the same way
        result.value = 1  # must not happen: the parent holds the lock
    except KeyboardInterrupt:
        result.value = 2 if d.lock._count == 0 else 3


@pytest.mark.parametrize("how", ["acquire", "write"])
def test_ctrl_c_interrupts_a_blocked_lock_acquire(ctx: mp.context.BaseContext, how: str) -> None:
    d = shoal.Dict()
    ready, result = shoal.Event(), shoal.Value("i", 0)
    assert d.lock.acquire()
    try:
        p = ctx.Process(target=_wait_on_dict_lock, args=(d, ready, result, how))
        p.start()
        ctrl_c_until_done(p, ready, result)
        assert result.value == 2
        assert d.lock._count == 1 and "written" not in d
    finally:
        d.lock.release()


# ---- pickling, attach, hold, Pool, queues ------------------------------------------------


def _read_and_write(d: Any) -> Any:
    d[os.getpid()] = "seen"
    return d["from_parent"]


def test_pool_arguments_and_queues(ctx: mp.context.BaseContext) -> None:
    d = shoal.Dict(from_parent=[1, 2])
    with ctx.Pool(2) as pool:
        assert pool.map(_read_and_write, [d] * 6) == [[1, 2]] * 6
        with shoal.hold(d):
            assert pool.map(_read_and_write, [d] * 4) == [[1, 2]] * 4
    assert sum(1 for v in d.values() if v == "seen") >= 1
    q = ctx.Queue()
    p = ctx.Process(target=_from_queue, args=(q,))
    p.start()
    q.put(d)
    _join(p)
    assert p.exitcode == 0 and d["queued"] == "yes"


def _from_queue(q: Any) -> None:
    d = q.get(timeout=DEADLINE)
    d["queued"] = "yes"


def test_pickle_attach_and_hold() -> None:
    d = shoal.Dict(a=1)
    d2 = pickle.loads(pickle.dumps(d))
    assert type(d2) is shoal.Dict and d2 is not d
    d2["b"] = 2
    assert d["b"] == 2
    a = shoal.attach(d.handle())
    assert isinstance(a, shoal.Dict) and a == {"a": 1, "b": 2}
    strict = shoal.Dict(allow_pickle=False)
    assert pickle.loads(pickle.dumps(strict)).allow_pickle is False
    with shoal.hold(d) as h:
        assert h.active
        assert pickle.dumps(d) == pickle.dumps(d)  # a held handle: the same text each time
        assert pickle.loads(pickle.dumps(d)) == d
    # A plain heap still attaches as a heap.
    heap = shoal._shoal.Heap.create()
    assert isinstance(shoal.attach(heap.handle()), shoal._shoal.Heap)
