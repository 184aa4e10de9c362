"""shoal.List (issue 15): list's semantics side by side with a real list (and a hypothesis test
against a plain list), values by pickling, several processes reading and writing one List under
fork, spawn and forkserver, ``lst.lock``, writers SIGKILLed in the middle of big slice
assignments and sorts, pickling, attach, hold, Pool arguments and queues. No timing
assertions."""

from __future__ import annotations

import copy
import multiprocessing as mp
import os
import pickle
import signal
import threading
import warnings
from collections.abc import MutableSequence, Sequence
from fractions import Fraction
from typing import Any

import pytest
from conftest import DEADLINE, ctrl_c_until_done, take_ctrl_c, wait_until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shoal

pytestmark = pytest.mark.usefixtures("runtime_dir")


def _join(p: Any) -> None:
    p.join(DEADLINE)
    assert p.exitcode is not None, "child did not finish"


# ---- list's semantics, side by side -----------------------------------------------------------


def test_basic_methods_match_list() -> None:
    lst, r = shoal.List(), []
    for x in (lst, r):
        x.append(1)
        x.append("two")
        x.extend([3.5, None, b"bytes", True, 2**70, (1, 2)])
        x.insert(0, "first")
        x.insert(-1, "before last")
        x.insert(100, "end")
        x[2] = "TWO"
        x[-1] = "END"
    assert list(lst) == r and len(lst) == len(r) == 11
    assert lst[0] == "first" and lst[-1] == "END" and lst[7] == 2**70
    with pytest.raises(IndexError, match="list index out of range"):
        lst[11]
    with pytest.raises(IndexError, match="list index out of range"):
        lst[-12]
    with pytest.raises(IndexError, match="assignment index out of range"):
        lst[11] = 0
    with pytest.raises(TypeError, match="list indices must be integers or slices, not str"):
        lst["a"]
    assert lst.pop() == r.pop() and lst.pop(0) == r.pop(0) and lst.pop(-3) == r.pop(-3)
    with pytest.raises(IndexError, match="pop index out of range"):
        lst.pop(50)
    lst.remove(3.5)
    r.remove(3.5)
    with pytest.raises(ValueError, match="not in list"):
        lst.remove("absent")
    assert lst.index(None) == r.index(None) and lst.count(True) == r.count(True)
    with pytest.raises(ValueError, match="is not in list"):
        lst.index("absent")
    assert "TWO" in lst and "absent" not in lst and 1.0 in lst
    del lst[1]
    del r[1]
    assert lst == r and not (lst != r)  # noqa: SIM202
    assert repr(lst) == repr(r)
    lst.reverse()
    r.reverse()
    assert lst == r and list(reversed(lst)) == list(reversed(r))
    lst.clear()
    assert len(lst) == 0 and list(lst) == [] and repr(lst) == "[]" and not lst
    with pytest.raises(IndexError, match="pop from empty list"):
        lst.pop()


SLICES = [
    slice(None),
    slice(2, 5),
    slice(-3, None),
    slice(None, None, -1),
    slice(8, 1, -3),
    slice(1, None, 4),
    slice(100, 200),
    slice(-100, 2),
    slice(5, 2),
    slice(None, None, -(2**70)),
    slice(-(2**70), 2**70, 3),
]


@pytest.mark.parametrize("s", SLICES, ids=str)
def test_slices_read_assign_and_delete_as_list(s: slice) -> None:
    base = list(range(10))
    lst = shoal.List(base)
    assert lst[s] == base[s] and type(lst[s]) is list
    n = len(base[s])
    for values in ([], ["x"], ["a", "b", "c"], [f"v{i}" for i in range(n)]):
        lst[:] = base
        r = list(base)
        try:
            r[s] = values
        except ValueError as e:
            with pytest.raises(ValueError, match=str(e)):
                lst[s] = values
            assert lst == base
            continue
        lst[s] = values
        assert lst == r, (s, values)
    lst[:] = base
    r = list(base)
    del r[s]
    del lst[s]
    assert lst == r
    with pytest.raises(ValueError, match="slice step cannot be zero"):
        lst[::0]


def test_slice_assignment_from_itself_and_iterables() -> None:
    lst = shoal.List([1, 2, 3])
    lst[1:1] = lst
    assert lst == [1, 1, 2, 3, 2, 3]
    lst[:] = (str(i) for i in range(3))
    assert lst == ["0", "1", "2"]
    with pytest.raises(TypeError, match="can only assign an iterable"):
        lst[:] = 5
    lst += lst
    assert lst == ["0", "1", "2"] * 2
    lst.extend(lst)
    assert len(lst) == 12


def test_sort_with_key_reverse_and_stability() -> None:
    data = [(3, "a"), (1, "b"), (3, "c"), (2, "d"), (1, "e")]
    for kwargs in (
        {},
        {"reverse": True},
        {"key": lambda t: t[0]},
        {"key": lambda t: t[0], "reverse": True},
    ):
        lst, r = shoal.List(data), list(data)
        lst.sort(**kwargs)  # type: ignore[arg-type]
        r.sort(**kwargs)  # type: ignore[arg-type]
        assert lst == r, kwargs
    mixed = shoal.List([1, "a"])
    with pytest.raises(TypeError):
        mixed.sort()
    assert mixed == [1, "a"]  # a comparison that raises leaves the list as it was
    words = shoal.List(["b", "A", "c"])
    words.sort(key=str.lower)
    assert words == ["A", "b", "c"]
    assert words._check()[0] == 3


def test_operators_compare_add_and_multiply_as_list() -> None:
    lst = shoal.List([1, 2])
    assert lst + [3] == [1, 2, 3] and type(lst + [3]) is shoal.List
    assert [0] + lst == [0, 1, 2] and type([0] + lst) is shoal.List
    assert lst + shoal.List([9]) == [1, 2, 9]
    with pytest.raises(TypeError):
        lst + (3,)  # list + tuple is TypeError, as for list
    assert lst * 2 == [1, 2, 1, 2] and 2 * lst == [1, 2, 1, 2] and lst * 0 == []
    assert lst < [1, 3] and lst <= [1, 2] and lst > [1] and lst >= [0, 5]
    assert lst == shoal.List([1, 2]) and lst != [1, 2, 3] and lst != (1, 2)
    same = lst
    lst *= 3
    assert same is lst and lst == [1, 2] * 3
    lst *= 0
    assert lst == []
    with pytest.raises(TypeError):
        hash(lst)


def test_values_natively_and_by_pickling() -> None:
    values = [
        None,
        True,
        0,
        -(2**63),
        2**63 - 1,
        2**64,
        1.5,
        float("inf"),
        "é",
        b"\0",
        Fraction(1, 3),
        [1, [2]],
        {"a": 1},
        (1,),
        "\ud800",
    ]
    lst = shoal.List(values)
    assert list(lst) == values
    got = lst[10]
    assert isinstance(got, Fraction) and got == Fraction(1, 3)
    inner = lst[11]
    inner.append(3)  # a nested list is a live shoal.List (test_dict_nesting.py)
    assert lst[11] == [1, [2], 3] and isinstance(inner, shoal.List)
    strict = shoal.List(allow_pickle=False)
    strict.append(1)
    with pytest.raises(TypeError, match=r"^shoal\.List\(allow_pickle=False\)"):
        strict.append(Fraction(1, 3))
    with pytest.raises(TypeError, match=r"^shoal\.List\(allow_pickle=False\)"):
        strict.extend([2, {3}])
    assert strict == [1]  # extend is all or nothing
    assert lst._check()[0] == len(values)


class Tagged(shoal.List):
    def __init__(self, *args: Any, tag: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tag = tag


def test_protocols_subclass_copy_and_generic_alias() -> None:
    lst = shoal.List([1, 2])
    assert isinstance(lst, MutableSequence) and isinstance(lst, Sequence)
    c = lst.copy()
    assert type(c) is shoal.List and c == lst and c.handle() != lst.handle()
    assert copy.copy(lst) == lst and copy.deepcopy(lst) == lst
    assert shoal.List[int] is not None

    t = Tagged([3], tag="x")
    t.append(4)
    assert t == [3, 4] and t.tag == "x" and isinstance(t, shoal.List)
    t2 = pickle.loads(pickle.dumps(t))
    assert type(t2) is Tagged and t2 == [3, 4]

    class Broken(shoal.List):
        def __init__(self) -> None:
            pass

    with pytest.raises(TypeError, match="must call super"):
        len(Broken())


def test_iteration_is_by_index_and_ends() -> None:
    lst = shoal.List(range(5))
    it = iter(lst)
    assert next(it) == 0
    lst.append(5)  # seen, as list's iterator sees it
    assert list(it) == [1, 2, 3, 4, 5]
    assert list(it) == []
    seen = []
    for x in lst:
        seen.append(x)
        if x == 0:
            del lst[0]  # as list: the walk goes on by index
    assert seen == [0, 2, 3, 4, 5]


def test_threads_of_one_process_share_the_lock() -> None:
    lst = shoal.List([0])

    def bump() -> None:
        for _ in range(300):
            with lst.lock:
                lst[0] = lst[0] + 1

    ts = [threading.Thread(target=bump) for _ in range(3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert lst[0] == 900


# The operations a hypothesis program applies to a shoal.List and a plain list alike.
_values = st.one_of(st.integers(-5, 5), st.text(max_size=3), st.none(), st.floats(allow_nan=False))
_indices = st.integers(-12, 12)
_slices = st.builds(
    slice,
    st.one_of(st.none(), _indices),
    st.one_of(st.none(), _indices),
    st.one_of(st.none(), st.integers(-4, 4).filter(bool)),
)
_ops = st.one_of(
    st.tuples(st.just("append"), _values),
    st.tuples(st.just("extend"), st.lists(_values, max_size=4)),
    st.tuples(st.just("insert"), _indices, _values),
    st.tuples(st.just("setitem"), _indices, _values),
    st.tuples(st.just("delitem"), _indices),
    st.tuples(st.just("pop"), _indices),
    st.tuples(st.just("setslice"), _slices, st.lists(_values, max_size=5)),
    st.tuples(st.just("delslice"), _slices),
    st.tuples(st.just("getslice"), _slices),
    st.tuples(st.just("remove"), _values),
    st.tuples(st.just("reverse")),
    st.tuples(st.just("sort"), st.booleans()),
    st.tuples(st.just("clear")),
    st.tuples(st.just("imul"), st.integers(0, 2)),
)


def _apply(x: Any, op: tuple[Any, ...]) -> Any:
    name = op[0]
    if name == "append":
        return x.append(op[1])
    if name == "extend":
        return x.extend(op[1])
    if name == "insert":
        return x.insert(op[1], op[2])
    if name == "setitem":
        x[op[1]] = op[2]
        return None
    if name == "delitem":
        del x[op[1]]
        return None
    if name == "pop":
        return x.pop(op[1])
    if name == "setslice":
        x[op[1]] = op[2]
        return None
    if name == "delslice":
        del x[op[1]]
        return None
    if name == "getslice":
        return x[op[1]]
    if name == "remove":
        return x.remove(op[1])
    if name == "reverse":
        return x.reverse()
    if name == "sort":
        return x.sort(key=repr, reverse=op[1])
    if name == "clear":
        return x.clear()
    x *= op[1]
    return None


def _builtin(e: Exception) -> type:
    return next(t for t in (IndexError, ValueError, TypeError) if isinstance(e, t))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_values, max_size=8), st.lists(_ops, max_size=25))
def test_hypothesis_matches_a_plain_list(start: list[Any], ops: list[tuple[Any, ...]]) -> None:
    lst, r = shoal.List(start), list(start)
    for op in ops:
        want: Any
        try:
            want = ("ok", _apply(r, op))
        except (IndexError, ValueError, TypeError) as e:
            want = ("err", _builtin(e))
        try:
            got: Any = ("ok", _apply(lst, op))
        except (IndexError, ValueError, TypeError) as e:
            got = ("err", _builtin(e))  # shoal.InvalidArgumentError is a ValueError
        assert got == want, op
        assert list(lst) == r, op
    assert lst._check()[0] == len(r)


# ---- processes ---------------------------------------------------------------------------


def _appender(lst: Any, tag: str, n: int) -> None:
    for i in range(n):
        lst.append(f"{tag}{i}")


def test_processes_see_each_others_writes(ctx: mp.context.BaseContext) -> None:
    lst = shoal.List(["parent"])
    ps = [ctx.Process(target=_appender, args=(lst, t, 200)) for t in ("p", "q")]
    for p in ps:
        p.start()
    for p in ps:
        _join(p)
        assert p.exitcode == 0
    assert len(lst) == 401 and lst[0] == "parent"
    for t in ("p", "q"):
        mine = [x for x in lst[1:] if x.startswith(t)]
        assert mine == [f"{t}{i}" for i in range(200)]  # each writer's appends, in order
    lst._check()


def _increment(lst: Any, n: int) -> None:
    for _ in range(n):
        with lst.lock:
            lst[0] = lst[0] + 1


def test_lock_makes_compound_updates_exact(ctx: mp.context.BaseContext) -> None:
    lst = shoal.List([0])
    ps = [ctx.Process(target=_increment, args=(lst, 200)) for _ in range(2)]
    for p in ps:
        p.start()
    _increment(lst, 200)
    for p in ps:
        _join(p)
        assert p.exitcode == 0
    assert lst[0] == 600


def _big_writes_forever(lst: Any, started: Any, seed: int) -> None:
    # Every operation leaves the list a permutation of range(N) (slice assignments of whole
    # runs, sorts, reverses, rotations), so a half-done one is visible as a broken permutation.
    import random

    rng = random.Random(seed)
    n = len(lst)
    started.set()
    while True:
        what = rng.random()
        if what < 0.3:
            lst.sort(key=lambda v: (v * 7919) % n)
        elif what < 0.5:
            lst.sort()
        elif what < 0.7:
            lst.reverse()
        elif what < 0.85:
            with lst.lock:
                k = rng.randrange(n)
                lst[:] = lst[k:] + lst[:k]
        else:
            lst[::2] = sorted(lst[::2], reverse=True)


def test_a_writer_killed_in_big_slice_assignments_and_sorts_leaves_the_list_whole(
    ctx: mp.context.BaseContext,
) -> None:
    n = 20000
    lst = shoal.List(range(n))
    for round_ in range(3):
        started = shoal.Event()
        p = ctx.Process(target=_big_writes_forever, args=(lst, started, round_))
        p.start()
        assert started.wait(DEADLINE)
        before = lst._stats()["replaces"]
        assert wait_until(lambda b=before: lst._stats()["replaces"] > b + 3)  # type: ignore[misc]
        # Readers in this process meanwhile: every snapshot is a permutation.
        for _ in range(3):
            assert sorted(lst[:]) == list(range(n))
        assert p.pid is not None
        os.kill(p.pid, signal.SIGKILL)
        _join(p)
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            lst.append(-1)
        assert all(issubclass(x.category, shoal.OwnerDiedWarning) for x in w)
        assert lst.pop() == -1
        size, _, _ = lst._check()
        assert size == n
        assert sorted(lst) == list(range(n))


def _hold_lock_and_die(lst: Any, held: Any) -> None:
    lst.lock.acquire()
    lst.append("half")  # a compound update under the lock: not rolled back
    held.set()
    os.kill(os.getpid(), signal.SIGKILL)


def test_next_writer_gets_owner_died_warning(ctx: mp.context.BaseContext) -> None:
    lst, held = shoal.List(), shoal.Event()
    p = ctx.Process(target=_hold_lock_and_die, args=(lst, held))
    p.start()
    assert held.wait(DEADLINE)
    _join(p)
    with pytest.warns(shoal.OwnerDiedWarning, match="shoal.List"):
        lst.append("next")
    assert lst == ["half", "next"]
    lst._check()


def _hold_lock(lst: Any, held: Any) -> None:
    lst.lock.acquire()
    held.set()
    threading.Event().wait(DEADLINE)


def test_lock_timeout_and_readers_never_wait(ctx: mp.context.BaseContext) -> None:
    lst, held = shoal.List([1, 2]), shoal.Event()
    p = ctx.Process(target=_hold_lock, args=(lst, held))
    p.start()
    try:
        assert held.wait(DEADLINE)
        assert lst.lock.acquire(False) is False
        assert lst.lock.acquire(True, 0.05) is False
        assert lst[0] == 1 and lst[:] == [1, 2] and 2 in lst and len(lst) == 2  # reads go on
        assert repr(lst.lock) == "<shoal.List.lock count=0>"
    finally:
        p.kill()
        _join(p)


def _wait_on_list_lock(lst: Any, ready: Any, result: Any, how: str) -> None:
    take_ctrl_c()
    ready.set()
    try:
        if how == "acquire":
            lst.lock.acquire()
        else:
            lst.append("written")  # a write waits for the lock the same way
        result.value = 1  # must not happen: the parent holds the lock
    except KeyboardInterrupt:
        result.value = 2 if lst.lock._count == 0 else 3


@pytest.mark.parametrize("how", ["acquire", "write"])
def test_ctrl_c_interrupts_a_blocked_lock_acquire(ctx: mp.context.BaseContext, how: str) -> None:
    lst = shoal.List()
    ready, result = shoal.Event(), shoal.Value("i", 0)
    assert lst.lock.acquire()
    try:
        p = ctx.Process(target=_wait_on_list_lock, args=(lst, ready, result, how))
        p.start()
        ctrl_c_until_done(p, ready, result)
        assert result.value == 2
        assert lst.lock._count == 1 and "written" not in lst
    finally:
        lst.lock.release()


# ---- pickling, attach, hold, Pool, queues ------------------------------------------------


def _read_and_write(lst: Any) -> Any:
    lst.append(os.getpid())
    return lst[0]


def _from_queue(q: Any) -> None:
    lst = q.get(timeout=DEADLINE)
    lst.append("queued")


def test_pool_arguments_and_queues(ctx: mp.context.BaseContext) -> None:
    lst = shoal.List([[1, 2]])
    with ctx.Pool(2) as pool:
        assert pool.map(_read_and_write, [lst] * 6) == [[1, 2]] * 6
        with shoal.hold(lst):
            assert pool.map(_read_and_write, [lst] * 4) == [[1, 2]] * 4
    assert len(lst) == 11
    q = ctx.Queue()
    p = ctx.Process(target=_from_queue, args=(q,))
    p.start()
    q.put(lst)
    _join(p)
    assert p.exitcode == 0 and lst[-1] == "queued"


def test_pickle_attach_and_hold() -> None:
    lst = shoal.List([1])
    l2 = pickle.loads(pickle.dumps(lst))
    assert type(l2) is shoal.List and l2 is not lst
    l2.append(2)
    assert lst == [1, 2]
    a = shoal.attach(lst.handle())
    assert isinstance(a, shoal.List) and a == [1, 2]
    d = shoal.attach(shoal.Dict(x=1).handle())
    assert isinstance(d, shoal.Dict)
    strict = shoal.List(allow_pickle=False)
    assert pickle.loads(pickle.dumps(strict)).allow_pickle is False
    with shoal.hold(lst) as h:
        assert h.active
        assert pickle.loads(pickle.dumps(lst)) == lst
    # A heap whose root names something else (or nothing) attaches as the heap itself.
    heap = shoal._shoal.Heap.create()
    assert isinstance(shoal.attach(heap.handle()), shoal._shoal.Heap)
    block = heap.allocate(64)
    heap.write(block, b"NOTALIST" + bytes(56))
    heap.root = block
    assert isinstance(shoal.attach(heap.handle()), shoal._shoal.Heap)
