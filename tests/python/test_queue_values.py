"""shoal.Queue's value encoding (encoding 3): plain values -- exact None, bool, int, float, str,
bytes, and lists, tuples, dicts, sets and frozensets of them -- travel in the shared value
codec's format (a frozen image), encoded and thawed in C++ by the binding; everything else is
pickled. Design note: docs/design/queue.md, "Message encodings"."""

from __future__ import annotations

import collections
import enum
import math
import multiprocessing as mp
import random
from typing import Any, NamedTuple

import pytest
from conftest import DEADLINE

import shoal

np = pytest.importorskip("numpy")

pytestmark = pytest.mark.usefixtures("runtime_dir")

_VALUE = 3


def _same(a: Any, b: Any) -> bool:
    """Equal, with the same type at every level (1 is not True, a tuple is not a list), NaN
    equal to NaN and -0.0 told from 0.0."""
    if type(a) is not type(b):
        return False
    if type(a) is float:
        return (math.isnan(a) and math.isnan(b)) or (
            a == b and math.copysign(1, a) == math.copysign(1, b)
        )
    if type(a) in (list, tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if type(a) is dict:
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


PLAIN: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    2**59 - 1,
    -(2**59),
    2**60,
    2**64,
    -(2**200),
    10**400,
    0.0,
    -0.0,
    1.5,
    float("inf"),
    float("-inf"),
    float("nan"),
    "",
    "ascii",
    "é ü 中文 🐍",
    "lone \udc80 surrogate \ud800",
    b"",
    b"\x00\xff" * 40,
    (),
    [],
    {},
    set(),
    frozenset(),
    (1, "a", 2.0),
    [True, 1, 1.0, False, 0, 0.0],
    (1, [2, (3, [4, {"k": (5,)}])]),
    {"b": 1, "a": 2, 3: "c", (1, "t"): None, frozenset({1}): [], b"k": 1.5, None: 0, 2.5: 1},
    {1, "a", (2, 3), frozenset({4}), None, b"b"},
    frozenset({1, (2, "x")}),
    {"nested": {"deep": [{"x": (1, 2)}, set(), frozenset({"y"})]}},
    list(range(1000)),
    tuple(range(-500, 500)),
    ["s" * i for i in range(50)],
]


def test_every_plain_value_round_trips_with_its_types_in_the_value_encoding() -> None:
    q = shoal.Queue()
    for v in PLAIN:
        assert q._put_value(v, 0) is True
        enc, got = q._get(0, True)
        assert enc == _VALUE
        assert _same(got, v), (v, got)
        q.put(v)
        assert _same(q.get(), v)


def test_dict_order_and_a_shared_subtree_come_back_as_pickle_gives_them() -> None:
    q = shoal.Queue()
    d = {k: i for i, k in enumerate("zyxwvutsrq")}
    q.put(d)
    assert list(q.get()) == list(d)
    inner = [1, 2]
    q.put([inner, inner, (inner,)])
    got = q.get()
    assert got[0] is got[1] is got[2][0]  # one object, as pickle keeps it
    got[0].append(3)
    assert got == [[1, 2, 3], [1, 2, 3], ([1, 2, 3],)]


def test_a_big_value_goes_out_of_band_and_its_block_is_freed() -> None:
    q = shoal.Queue(ring_bytes=1 << 16)
    v = [list(range(i, i + 100)) for i in range(2000)]
    q.put(v)
    assert q.get() == v
    assert q._check()["out_of_band"] == 0 and q._check()["stray_blocks"] == 0


class _Color(enum.IntEnum):
    RED = 1


class _Point(NamedTuple):
    x: int
    y: int


class _Str(str):
    pass


class _Key:
    def __hash__(self) -> int:
        return 7

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Key)


def _cycle() -> list[Any]:
    a: list[Any] = [1]
    a.append(a)
    return a


def _deep(n: int) -> list[Any]:
    v: list[Any] = []
    for _ in range(n):
        v = [v]
    return v


NOT_PLAIN: list[Any] = [
    _Color.RED,
    (_Color.RED,),
    _Point(1, 2),
    _Str("s"),
    [_Str("s")],
    collections.OrderedDict(a=1),
    collections.defaultdict(list, a=[1]),
    {_Key(): 1},
    {1: object},
    bytearray(b"ba"),
    (1, bytearray(b"ba")),
    np.arange(4),
    (1, np.arange(3)),
    1 + 2j,
    ValueError("x"),
]


@pytest.mark.parametrize("v", NOT_PLAIN, ids=lambda v: type(v).__name__)
def test_what_the_codec_does_not_take_is_pickled_with_its_types(v: Any) -> None:
    q = shoal.Queue()
    assert q._put_value(v, 0) is NotImplemented
    q.put(v)
    got = q.get()
    assert type(got) is type(v)
    if isinstance(v, np.ndarray):
        assert (got == v).all()
    elif isinstance(v, ValueError):
        assert got.args == v.args
    elif type(v) is tuple and len(v) == 2 and isinstance(v[1], np.ndarray):
        assert (got[1] == v[1]).all()
    elif type(v) is dict and type(next(iter(v))) is _Key:
        assert list(got.values()) == [1]
    else:
        assert got == v
        if type(v) in (tuple, list):
            assert [type(x) for x in got] == [type(x) for x in v]


def test_a_cycle_is_pickled() -> None:
    q = shoal.Queue()
    v = _cycle()
    assert q._put_value(v, 0) is NotImplemented
    q.put(v)
    got = q.get()
    assert got[0] == 1 and got[1] is got
    t: tuple[list[Any]] = ([],)
    t[0].append(t)  # a root tuple reached again through a list
    assert q._put_value(t, 0) is NotImplemented
    q.put(t)
    got = q.get()
    assert got[0][0] is got


def test_depth_bound_deep_values_use_the_codec_deeper_ones_are_left_to_pickle() -> None:
    q = shoal.Queue()
    v = _deep(900)
    assert q._put_value(v, 0) is True
    assert q.get() == v
    # Deeper than the thaw bound: not value-encoded (pickle then decides: past Python's
    # recursion limit it raises RecursionError, as multiprocessing.Queue's pickling does).
    assert q._put_value(_deep(1100), 0) is NotImplemented


def _put_plain(q: Any) -> None:
    for v in PLAIN:
        q.put(v)


def test_plain_values_cross_processes(ctx: mp.context.BaseContext) -> None:
    q = shoal.Queue()
    p = ctx.Process(target=_put_plain, args=(q,))
    p.start()
    got = [q.get(timeout=DEADLINE) for _ in PLAIN]
    p.join(DEADLINE)
    assert p.exitcode == 0
    assert all(_same(g, v) for g, v in zip(got, PLAIN))


def _image(v: Any, tmp_path: Any) -> bytes:
    path = tmp_path / "v.shoal"
    shoal.save(v, path)
    return bytes(path.read_bytes())


def test_a_corrupt_value_message_is_decode_error_and_the_queue_goes_on(tmp_path: Any) -> None:
    q = shoal.Queue()
    good = _image({"a": [1, 2.5, "x" * 40, (b"b", 2**100)], "s": {1, 2}}, tmp_path)
    rng = random.Random(1)
    cases = [b"", b"\x00" * 8, b"x" * 200, good[:63], good[: len(good) // 2]]
    for _ in range(300):
        m = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            m[rng.randrange(len(m))] = rng.randrange(256)
        cases.append(bytes(m))
    decoded = 0
    for c in cases:
        assert q._put(c, _VALUE, 0)
        q.put("after")
        try:
            q.get()
            decoded += 1
        except shoal.ShoalError:
            pass  # DecodeError, or IncompatibleSegmentError for a forged header version
        assert q.get() == "after"
    assert decoded < len(cases)


def test_a_value_message_never_unpickles(tmp_path: Any) -> None:
    # An image holding a pickled leaf (shoal.save pickles a Fraction) is refused, not loaded:
    # the value encoding carries plain values only.
    import fractions

    q = shoal.Queue()
    q._put(_image([1, fractions.Fraction(1, 3)], tmp_path), _VALUE, 0)
    with pytest.raises(shoal.DecodeError, match="pickle"):
        q.get()
    q.put(1)
    assert q.get() == 1


def test_get_many_mixes_encodings() -> None:
    q = shoal.Queue()
    vals: list[Any] = [b"raw", (1, 2), _Color.RED, {"a": 1}, np.arange(2)]
    for v in vals:
        q.put(v)
    got = q.get_many()
    assert [type(g) for g in got] == [type(v) for v in vals]
    assert got[:4] == vals[:4] and (got[4] == vals[4]).all()


# ---- shoal.Pipe / Connection: the same value encoding ------------------------------------------


def _send_plain(conn: Any) -> None:
    for v in PLAIN:
        conn.send(v)
    for v in NOT_PLAIN[:6]:
        conn.send(v)
    conn.close()


def test_a_connection_sends_plain_values_in_the_value_encoding(
    ctx: mp.context.BaseContext,
) -> None:
    r, w = shoal.Pipe(duplex=False)
    p = ctx.Process(target=_send_plain, args=(w,))
    p.start()
    w.close()
    got = [r.recv() for _ in PLAIN]
    assert all(_same(g, v) for g, v in zip(got, PLAIN))
    rest = [r.recv() for _ in NOT_PLAIN[:6]]
    assert [type(x) for x in rest] == [type(v) for v in NOT_PLAIN[:6]]
    assert rest == NOT_PLAIN[:6]
    with pytest.raises(EOFError):
        r.recv()
    p.join(DEADLINE)
    assert p.exitcode == 0


def test_recv_bytes_of_a_value_message_is_its_pickle_as_the_stdlib_s() -> None:
    import pickle

    a, b = shoal.Pipe()
    a.send({"k": (1, 2.5)})
    assert pickle.loads(b.recv_bytes()) == {"k": (1, 2.5)}
    a.send([1, "x"])
    buf = bytearray(100)
    n = b.recv_bytes_into(buf)
    assert pickle.loads(buf[:n]) == [1, "x"]
    a.send_bytes(pickle.dumps((3, "raw pickle")))
    assert b.recv() == (3, "raw pickle")  # send_bytes of a pickle, then recv: the stdlib's pairing


def test_a_signal_handler_that_puts_while_a_put_waits_does_not_change_its_message() -> None:
    # The waiting put retries after each signal with its own encoded bytes, whatever the
    # handler encoded and put on the same thread meanwhile.
    import signal

    q, other = shoal.Queue(1), shoal.Queue()
    q.put("occupant")
    calls: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        calls.append(signum)
        if len(calls) == 1:
            other.put(("from the handler", list(range(100))))
            assert q.get_nowait() == "occupant"  # room for the waiting put

    old = signal.signal(signal.SIGALRM, handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        q.put(("the waiting put", "x" * 50), timeout=DEADLINE)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert calls
    assert q.get_nowait() == ("the waiting put", "x" * 50)
    assert other.get_nowait() == ("from the handler", list(range(100)))
