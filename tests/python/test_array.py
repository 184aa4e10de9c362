"""shoal.Array: numpy arrays in shared memory, in one process and across processes.

What is proved here:
- `share(x)` is a read-only snapshot (numpy's writeable flag is off for good, the pages are
  mapped read-only); `empty/zeros/full` and `share(x, writable=True)` are writable.
- Every dtype numpy can lay out without Python objects round-trips bit for bit (numeric, bool,
  complex, datetime/timedelta, fixed-width bytes and str, structured, nested), in C and F
  order, from non-contiguous input, 0-d and empty; object dtypes are refused.
- Views and slices stay shoal.Array and pickle to small handles; results that own new memory
  are plain ndarrays. numpy's usual protocols (repr, len, iteration, __array__, the buffer
  protocol, np.asarray) behave as on an ndarray.
- Handles travel as Process/Pool/ProcessPoolExecutor arguments and results, through Queue and
  Pipe, and are inherited over fork, under fork, spawn and forkserver (the `ctx` fixture); an
  array whose creator has exited is still readable through the handle it sent.
- Memory is freed when the last process drops the array (serial: reads the machine's Shmem).

Child processes run module-level functions (spawn and forkserver import this module) and answer
over a Pipe or a Queue.
"""

from __future__ import annotations

import concurrent.futures
import copy
import functools
import gc
import multiprocessing as mp
import os
import pickle
import re
import subprocess
import sys
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
import pytest
from conftest import DEADLINE, describe_here, wait_until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shoal
from shoal import _shoal
from shoal._tools.measure import machine_shmem, mem_available

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB
BIG = 64 * MIB  # big enough to see in Shmem (a smaller one drowns in other processes' pages)
SLACK = 4 * MIB  # how far above its baseline Shmem may stay
UNDER_ASAN = "asan" in os.environ.get("LD_PRELOAD", "")

# Set by a test just before it forks: what a forked child inherits (never set at import time,
# so spawn and forkserver children start without it).
INHERITED: dict[str, Any] = {}


def _recv(conn: Connection) -> Any:
    assert conn.poll(DEADLINE), "the child did not answer"
    return conn.recv()


def _join(p: Any) -> None:
    p.join(DEADLINE)
    assert p.exitcode == 0, f"child exited with {p.exitcode}"


def _pattern(shape: tuple[int, ...], dtype: Any = np.float64, seed: int = 0) -> np.ndarray:
    n = int(np.prod(shape))
    return ((np.arange(n, dtype=np.int64) * 7 + seed) % 1000).astype(dtype).reshape(shape)


def _shared_with(res: Any, a: shoal.Array) -> bool:
    return isinstance(res, shoal.Array) and res.segment is a.segment


# --- in one process: snapshots and writable arrays --------------------------------------------


@pytest.mark.asan
def test_share_is_a_read_only_snapshot() -> None:
    x = _pattern((4, 5))
    a = shoal.share(x)
    assert type(a) is shoal.Array
    assert a.segment is not None and a.segment.read_only
    assert np.array_equal(a, x) and a.dtype == x.dtype and a.shape == x.shape
    assert not np.shares_memory(a, x)
    x[0, 0] = -1  # a snapshot: later changes to the source do not show
    assert a[0, 0] == 0
    assert not a.flags.writeable
    with pytest.raises(ValueError, match="cannot set WRITEABLE flag to True"):
        a.flags.writeable = True
    with pytest.raises(ValueError, match="assignment destination is read-only"):
        a[0, 0] = 1
    with pytest.raises(ValueError, match="read-only"):
        a += 1
    with pytest.raises(ValueError, match="read-only"):
        a[1:, ::2].fill(3)  # views of a snapshot are read-only too
    with pytest.raises(TypeError, match="cannot modify read-only memory"):
        memoryview(a)[0, 0] = 1.0
    raw = np.frombuffer(a.segment, np.uint8)  # the segment's own buffer is read-only too
    with pytest.raises(ValueError, match="cannot set WRITEABLE flag to True"):
        raw.setflags(write=True)
    assert np.array_equal(a, _pattern((4, 5)))


@pytest.mark.asan
def test_share_writable_and_the_creators_are_writable() -> None:
    x = _pattern((3, 4), np.int32)
    w = shoal.share(x, writable=True)
    assert w.flags.writeable and not w.segment.read_only
    assert np.array_equal(w, x)
    w[1:, ::2] = -5
    assert (w[1:, ::2] == -5).all() and np.array_equal(w[0], x[0])

    z = shoal.zeros((2, 3), np.int16)
    assert (type(z), z.shape, z.dtype, z.flags.writeable) == (shoal.Array, (2, 3), np.int16, True)
    assert not z.any()
    e = shoal.empty(7)  # float64 by default, as numpy; shared pages start zeroed
    assert (e.shape, e.dtype) == ((7,), np.float64)
    f = shoal.full((2, 2), 2.5)
    assert f.dtype == np.float64 and (f == 2.5).all()
    s = shoal.full(3, "abc")
    assert s.dtype == np.dtype("<U3") and list(s) == ["abc"] * 3
    i = shoal.full(np.int64(4), 9, dtype=np.uint8)
    assert (i.shape, i.dtype, int(i.sum())) == ((4,), np.uint8, 36)

    fz = shoal.zeros((3, 4), "f4", order="F")
    assert fz.flags.f_contiguous and not fz.flags.c_contiguous
    cz = shoal.zeros([3, 4], "f4", order="C")
    assert cz.flags.c_contiguous and not cz.flags.f_contiguous
    with pytest.raises(ValueError, match="order must be 'C' or 'F', not 'K'"):
        shoal.zeros(3, order="K")
    with pytest.raises(ValueError, match=r"negative dimensions are not allowed: \(2, -1\)"):
        shoal.zeros((2, -1))


def test_share_of_a_snapshot_is_itself_and_anything_else_is_copied() -> None:
    a = shoal.share(np.arange(4))
    assert shoal.share(a) is a
    assert shoal.share(a[1:]).segment is a.segment  # a view of a snapshot is one too
    w = shoal.share(a, writable=True)  # a writable copy of a snapshot
    assert w.segment is not a.segment and w.flags.writeable
    # A writable array whose numpy flag was turned off is not a snapshot: its segment can still
    # be written by any process that maps it, so share() copies and seals.
    z = shoal.zeros(4)
    z.flags.writeable = False
    s = shoal.share(z)
    assert s is not z and s.segment.read_only and not z.segment.read_only


def test_a_snapshot_is_mapped_read_only_in_a_fresh_process() -> None:
    a = shoal.share(np.arange(1000, dtype=np.int64))
    code = (
        "import ctypes, pickle, resource, sys\n"
        "import numpy as np\n"
        "resource.setrlimit(resource.RLIMIT_CORE, (0, 0))\n"
        "a = pickle.loads(bytes.fromhex(sys.argv[1]))\n"
        "print(int(a.sum()), a.flags.writeable, flush=True)\n"
        "ctypes.memset(a.__array_interface__['data'][0], 0, 8)\n"
        "print('wrote', flush=True)\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, pickle.dumps(a).hex()],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )
    assert r.stdout.split() == [str(999 * 1000 // 2), "False"], r.stderr
    assert r.returncode == -11, r.stderr  # SIGSEGV: the pages are PROT_READ
    assert a[0] == 0 and a[999] == 999


def test_capacity_is_checked_before_anything_is_reserved(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOAL_MAX_BYTES", str(8 * MIB))
    with pytest.raises(
        shoal.OutOfSpaceError, match="raise SHOAL_MAX_BYTES or release objects first"
    ):
        shoal.zeros((1024, 1024, 2))  # 16 MiB
    with pytest.raises(shoal.OutOfSpaceError, match="SHOAL_MAX_BYTES"):
        shoal.share(np.zeros(2 * MIB))
    assert shoal.zeros(MIB // 8).nbytes == MIB  # under the limit: fine


_LOW_RLIMIT_AS = r"""
import resource, signal, sys
import numpy as np
import shoal
how = sys.argv[1]
shoal.zeros(10)  # the session and its broker start under today's limits
data = np.ones(1 << 30, np.uint8) if how == "share" else None
vm = int([l for l in open("/proc/self/status") if l.startswith("VmSize:")][0].split()[1]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + (256 << 20), resource.RLIM_INFINITY))
# The witness of the order: from here on, sizing a file past 1 MiB fails (EFBIG; the signal is
# ignored), so an error about the segment's file would mean its pages came before the check.
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, resource.RLIM_INFINITY))
try:
    shoal.share(data) if how == "share" else shoal.zeros(1 << 30, dtype=np.uint8)
    print("created")
except shoal.ShoalError as e:
    print(type(e).__name__, e)
"""


@pytest.mark.parametrize("how", ["zeros", "share"])
def test_a_mapping_the_address_space_limit_forbids_is_refused_before_reserving(how: str) -> None:
    # 1 GiB under an RLIMIT_AS with 256 MiB of room: refused by the check made before the
    # segment's file is sized or any page reserved (the mapping's own failure came only after
    # the whole GiB had been reserved; under the RLIMIT_FSIZE witness, sizing fails first).
    r = subprocess.run(
        [sys.executable, "-c", _LOW_RLIMIT_AS, how],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert re.fullmatch(
        r"OutOfSpaceError cannot map 1073742\d+ bytes: this process's address space is full "
        r"\(RLIMIT_AS, ulimit -v: \d+ bytes; or vm\.max_map_count\); raise the limit or share a "
        r"smaller object\. Nothing was reserved\n",
        r.stdout,
    ), r.stdout


def test_impossible_sizes_are_invalid_arguments() -> None:
    for shape in [(2**40, 2**40, 2**40), (2**40, 0, 2**40), (2**31, 2**31, 0)]:
        # numpy refuses each of these with ValueError("array is too big; ..."): so does shoal,
        # before it makes anything, a zero dimension included.
        with pytest.raises(ValueError, match="array is too big"):
            np.zeros(shape)
        with pytest.raises(shoal.InvalidArgumentError, match=r"array is too big: shape \("):
            shoal.zeros(shape)
    with pytest.raises(shoal.InvalidArgumentError, match="is too large"):
        shoal.zeros((2**40, 2**14), np.float64)  # 2**57 bytes: a shape numpy takes
    with pytest.raises(shoal.InvalidArgumentError, match="at most 16 dimensions, got 17"):
        shoal.zeros((1,) * 17)


# --- dtypes, orders, shapes --------------------------------------------------------------------

NESTED = np.dtype(
    [("id", "<u4"), ("pos", [("x", "<f8"), ("y", "<f8")], (2,)), ("name", "S5"), ("ok", "?")]
)
DTYPES = [
    *["b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8", "c8", "c16"],
    np.longdouble,
    np.clongdouble,
    ">i4",  # non-native byte order is a dtype like any other
    ">f8",
    "M8[ns]",
    "M8[D]",
    "m8[s]",
    "S7",
    "U5",
    "V6",
    [("a", "<i4"), ("b", "<f8")],
    np.dtype([("a", "u1"), ("b", "<i8")], align=True),  # padded
    np.dtype([("s", [("a", "u1"), ("b", "<i8")])], align=True),
    NESTED,
]


def _dtype_id(d: Any) -> str:
    dt = np.dtype(d)
    if dt.names is None:
        return dt.str
    return ("aligned-" if dt.isalignedstruct else "") + "struct-" + "-".join(dt.names)


def _sample(dt: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    """Every byte set (padding included), so that a bitwise comparison sees every byte."""
    n = int(np.prod(shape)) * dt.itemsize
    raw = ((np.arange(n, dtype=np.int64) * 37 + 11) % 251).astype(np.uint8)
    if dt.kind == "b":
        raw %= 2
    if dt.kind == "U":  # only valid code points
        raw = ((np.arange(n // 4, dtype=np.uint32) % 26) + ord("a")).view(np.uint8)
    return raw.view(dt).reshape(shape)


def _leaf_bytes(arr: np.ndarray) -> list[bytes]:
    """The bytes of every (nested) field: all the data, none of an aligned struct's padding,
    which numpy itself does not always copy."""
    if arr.dtype.names is None:
        return [arr.tobytes()]
    return [b for name in arr.dtype.names for b in _leaf_bytes(arr[name])]


@pytest.mark.asan
@pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
def test_every_non_object_dtype_round_trips_bitwise(dtype: Any) -> None:
    dt = np.dtype(dtype)
    x = _sample(dt, (3, 4))
    for a in (shoal.share(x), shoal.share(x, writable=True)):
        assert a.dtype == dt and a.shape == x.shape
        assert _leaf_bytes(a) == _leaf_bytes(x)
        b = pickle.loads(pickle.dumps(a))
        assert type(b) is shoal.Array and b.dtype == dt and _leaf_bytes(b) == _leaf_bytes(x)
        v = pickle.loads(pickle.dumps(a[1:, ::-2]))  # a view keeps its dtype and strides
        assert v.dtype == dt and _leaf_bytes(v) == _leaf_bytes(x[1:, ::-2])
    z = shoal.zeros((2, 3), dt)
    assert z.dtype == dt and z.tobytes() == bytes(z.nbytes)


@pytest.mark.asan
def test_fields_of_structured_arrays_are_views_that_pickle() -> None:
    x = np.zeros(4, NESTED)
    x["id"] = [1, 2, 3, 4]
    x["pos"]["y"] = np.arange(8.0).reshape(4, 2)
    x["name"] = [b"a", b"bb", b"ccc", b"dddd"]
    a = shoal.share(x, writable=True)
    ys = a["pos"]["y"]
    assert _shared_with(ys, a) and ys.shape == (4, 2)
    b = pickle.loads(pickle.dumps(ys))
    assert b.dtype == np.float64 and np.array_equal(b, x["pos"]["y"])
    b[3, 1] = -1.0  # the unpickled view writes the shared record
    assert a[3]["pos"]["y"][1] == -1.0
    assert pickle.loads(pickle.dumps(a["name"])).tolist() == [b"a", b"bb", b"ccc", b"dddd"]
    assert pickle.loads(pickle.dumps(a[["id", "ok"]])).dtype.names == ("id", "ok")


@pytest.mark.asan
def test_c_f_and_non_contiguous_input() -> None:
    f = np.asfortranarray(_pattern((30, 20)))
    a = shoal.share(f)
    assert a.flags.f_contiguous and not a.flags.c_contiguous and np.array_equal(a, f)
    b = pickle.loads(pickle.dumps(a))
    assert b.strides == f.strides and np.array_equal(b, f)

    big = _pattern((60, 40))
    x = big[5:50:3, ::-4]  # neither C nor F contiguous
    assert not x.flags.c_contiguous and not x.flags.f_contiguous
    s = shoal.share(x)
    assert np.array_equal(s, x) and s.flags.c_contiguous and not np.shares_memory(s, big)
    # Copied once into a segment of just the right size (header + elements), not padded copies.
    assert x.nbytes <= s.segment.size < x.nbytes + 4 * KIB
    t = pickle.loads(pickle.dumps(s.T))
    assert np.array_equal(t, x.T)


@pytest.mark.asan
def test_zero_d_and_empty_arrays() -> None:
    s = shoal.share(np.array(3.5))
    assert (type(s), s.shape, s.ndim, s[()]) == (shoal.Array, (), 0, 3.5)
    assert float(s) == 3.5 and repr(s) == "shoal.Array(3.5, dtype=float64)"
    b = pickle.loads(pickle.dumps(s))
    assert b.shape == () and b[()] == 3.5 and b.segment.read_only
    z = shoal.zeros(())
    z[()] = 7
    assert pickle.loads(pickle.dumps(z))[()] == 7.0

    for shape in [(0,), (0, 3), (4, 0, 2)]:
        e = shoal.share(np.empty(shape, np.int32))
        assert e.shape == shape and e.size == 0 and e.segment is not None
        assert pickle.loads(pickle.dumps(e)).shape == shape
        assert _shared_with(e[:], e)  # an empty slice is still a view of the segment
        assert pickle.loads(pickle.dumps(e[:])).shape == shape
    assert repr(shoal.zeros((0, 3))) == "shoal.Array([], shape=(0, 3), dtype=float64)"
    assert repr(shoal.zeros(0, np.int8)) == "shoal.Array([], dtype=int8)"
    assert len(shoal.zeros((0, 3))) == 0 and list(shoal.zeros(0)) == []


@pytest.mark.asan
def test_object_dtypes_are_refused_with_a_pointer_to_freeze() -> None:
    msg = r"cannot hold dtype object .*use shoal\.freeze\(\)"
    with pytest.raises(TypeError, match=msg):
        shoal.share(np.array([1, "a", None], dtype=object))
    with pytest.raises(TypeError, match=msg):
        shoal.zeros(3, object)
    with pytest.raises(TypeError, match=r"cannot hold dtype \[\('a', '<i4'\), \('o', 'O'\)\]"):
        shoal.share(np.zeros(2, [("a", "<i4"), ("o", "O")]))


# --- views, results, pickles, numpy protocols ------------------------------------------------

SHARED, PLAIN = True, False
OPS: list[tuple[str, Callable[[Any], Any], bool]] = [
    ("slice", lambda a: a[1:, ::2], SHARED),
    ("row", lambda a: a[2], SHARED),
    ("reversed", lambda a: a[::-1, ::-1], SHARED),
    ("newaxis", lambda a: a[None, :, 1], SHARED),
    ("ellipsis", lambda a: a[...], SHARED),
    ("T", lambda a: a.T, SHARED),
    ("transpose", lambda a: np.transpose(a), SHARED),
    ("reshape", lambda a: a.reshape(5, 12), SHARED),
    ("ravel", lambda a: a.ravel(), SHARED),
    ("squeeze", lambda a: a[None].squeeze(), SHARED),
    ("np.squeeze", lambda a: np.squeeze(a[:1]), SHARED),
    ("view-dtype", lambda a: a.view(np.int64), SHARED),
    ("astype-no-copy", lambda a: a.astype(np.float64, copy=False), SHARED),
    ("diagonal", lambda a: a.diagonal(), SHARED),
    ("swapaxes", lambda a: a.swapaxes(0, 1), SHARED),
    ("asanyarray", lambda a: np.asanyarray(a), SHARED),
    ("a + 1", lambda a: a + 1, PLAIN),
    ("np.sin", lambda a: np.sin(a), PLAIN),
    ("a.copy()", lambda a: a.copy(), PLAIN),
    ("np.copy", lambda a: np.copy(a), PLAIN),
    ("copy.copy", lambda a: copy.copy(a), PLAIN),
    ("copy.deepcopy", lambda a: copy.deepcopy(a), PLAIN),
    ("astype", lambda a: a.astype(np.float32), PLAIN),
    ("flatten", lambda a: a.flatten(), PLAIN),
    ("ravel of T", lambda a: a.T.ravel(), PLAIN),
    ("reshape of T", lambda a: a.T.reshape(60), PLAIN),
    ("fancy index", lambda a: a[[0, 2]], PLAIN),
    ("mask", lambda a: a[a > 3], PLAIN),
    ("take", lambda a: a.take([1, 2], axis=0), PLAIN),
    ("repeat", lambda a: a.repeat(2), PLAIN),
    ("sum(axis)", lambda a: a.sum(axis=0), PLAIN),
    ("argsort", lambda a: a.argsort(), PLAIN),
    ("dot", lambda a: a.dot(a.T), PLAIN),
    ("matmul", lambda a: a @ a.T, PLAIN),
    ("concatenate", lambda a: np.concatenate([a, a]), PLAIN),
    ("np.array", lambda a: np.array(a), PLAIN),
]


@pytest.mark.asan
def test_views_stay_shared_and_new_results_are_plain_ndarrays() -> None:
    a = shoal.share(_pattern((6, 10)), writable=True)
    for name, op, shared in OPS:
        res = op(a)
        if shared:
            assert _shared_with(res, a), name
            assert np.shares_memory(res, a), name
            # Its pickle is a handle of the same segment, whatever the view.
            b = pickle.loads(pickle.dumps(res))
            assert type(b) is shoal.Array and b.segment.id == a.segment.id, name
            assert np.array_equal(b, res) and b.strides == res.strides, name
        else:
            assert type(res) is np.ndarray, f"{name}: {type(res)}"
    # Scalars are scalars.
    assert type(a[1, 2]) is np.float64 and type(a.sum()) is np.float64
    # In-place operations keep the array (and write the shared memory).
    a += 1
    assert type(a) is shoal.Array and a[0, 0] == 1.0
    np.add(a, 1, out=a)
    assert a[0, 0] == 2.0


@pytest.mark.asan
def test_the_c_hooks_serve_subclasses_and_survive_tampering() -> None:
    """__array_finalize__ and __getitem__ are C functions on the class: a subclass reaches them
    through super(), and a tampered `_shoal_ref` makes plain results or a clear error, never a
    crash or a view that claims a segment it does not lie in."""

    class Tagged(shoal.Array):
        def __array_finalize__(self, obj: Any) -> None:
            super().__array_finalize__(obj)
            self.tag = getattr(obj, "tag", "fresh")

        def __getitem__(self, key: Any) -> Any:
            return super().__getitem__(key)

    a = shoal.share(_pattern((6, 10)))
    t = a.view(Tagged)
    row = t[2]
    assert type(row) is Tagged and row.tag == "fresh" and row.segment is a.segment
    assert np.array_equal(row, a[2])
    assert shoal.Array.__array_finalize__(a[1], a) is None  # callable from the class too

    b = shoal.share(_pattern((6, 10)), writable=True)
    seg = b.segment
    b._shoal_ref = "not a tuple"  # type: ignore[assignment]
    assert type(b[1]) is np.ndarray and type(b[1:3]) is np.ndarray
    b._shoal_ref = (seg, -1, 5)  # type: ignore[assignment]
    with pytest.raises(OverflowError, match="negative int"):
        b[1]
    # Elsewhere in memory: a view of another array never adopts this one's segment.
    other = np.zeros((6, 10))
    assert shoal.Array._shoal_adopt(other.view(shoal.Array), a) is False


@pytest.mark.asan
@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_pickles_are_small_handles_whatever_the_size(protocol: int) -> None:
    # 2 MiB: big enough that a pickle carrying the data could not pass, small enough not to
    # disturb the Shmem figures of serial-minded examples running beside this test.
    for n in (3, 256 * KIB):
        a = shoal.full(n, 1.5)
        for obj in (a, a[1::2], shoal.share(a), a.reshape(-1, 1).T):
            blob = pickle.dumps(obj, protocol=protocol)
            assert len(blob) < 400, (n, len(blob))
            b = pickle.loads(blob)
            assert type(b) is shoal.Array and b.shape == obj.shape and b.strides == obj.strides
        buffers: list[pickle.PickleBuffer] = []
        if protocol >= 5:  # never sent out of band: there is nothing to send but the handle
            blob = pickle.dumps(a, protocol=5, buffer_callback=buffers.append)
            assert buffers == [] and len(blob) < 400
        b = pickle.loads(pickle.dumps(a, protocol=protocol))
        b[-1] = 42.0  # the same memory, not a copy
        assert a[-1] == 42.0
    # A result that owns its memory pickles as a plain ndarray (with its data).
    plain = pickle.loads(pickle.dumps(a + 1))
    assert type(plain) is np.ndarray and plain[-1] == 43.0


@pytest.mark.asan
def test_numpy_protocols_behave_as_on_an_ndarray() -> None:
    a = shoal.share(np.array([[1, 2, 3], [4, 5, 6]], dtype=np.int64), writable=True)
    assert repr(a) == "shoal.Array([[1, 2, 3],\n             [4, 5, 6]], dtype=int64)"
    assert str(a) == "[[1 2 3]\n [4 5 6]]"
    assert len(a) == 2 and a.size == 6 and a.nbytes == 48
    rows = list(a)
    assert [type(r) for r in rows] == [shoal.Array, shoal.Array] and rows[1].tolist() == [4, 5, 6]
    assert [int(v) for v in a.flat] == [1, 2, 3, 4, 5, 6]
    assert a.tolist() == [[1, 2, 3], [4, 5, 6]]

    arr = a.__array__()
    assert type(arr) is np.ndarray and np.shares_memory(arr, a)
    b = np.asarray(a)
    assert type(b) is np.ndarray and np.shares_memory(b, a)
    b[0, 0] = 10  # np.asarray is a view, not a copy
    assert a[0, 0] == 10
    assert isinstance(a, np.ndarray) and np.asanyarray(a) is a

    with memoryview(a) as mv:
        assert (mv.format, mv.shape, mv.itemsize, mv.readonly) == ("l", (2, 3), 8, False)
        assert mv.tobytes() == a.tobytes()
        mv[1, 2] = -6  # the buffer protocol writes the shared memory
    assert a[1, 2] == -6
    with memoryview(shoal.share(a)) as mv:
        assert mv.readonly and mv.tolist() == [[10, 2, 3], [4, 5, -6]]
    assert np.frombuffer(a, np.int64).tolist() == [10, 2, 3, 4, 5, -6]
    assert (a == a.copy()).all() and a.max() == 10 and a.mean() == 3.0
    assert np.sort(a, axis=None).tolist() == [-6, 2, 3, 4, 5, 10]


@pytest.mark.asan
def test_handles_attach_and_forged_views_are_refused() -> None:
    a = shoal.share(_pattern((4, 5)), writable=True)
    h = a.handle()
    assert isinstance(h, str) and len(h) < 200
    b = shoal.Array.attach(h)
    assert b.segment.id == a.segment.id and np.array_equal(b, a)
    b[0, 0] = -1
    assert a[0, 0] == -1
    with pytest.raises(ValueError, match="does not live in shared memory"):
        np.zeros(3).view(shoal.Array).handle()

    seg = _shoal.Segment.create(4096)
    with pytest.raises(shoal.InvalidArgumentError, match="segment does not hold an array"):
        shoal.Array.attach(seg.handle())

    # A pickled view names (offset, shape, strides) in the element area; a forged one that
    # reaches outside it (into the header before it, or past the end) is refused.
    handle = a.segment.handle()
    for offset, shape, strides in [(8, (20,), (8,)), (0, (21,), (8,)), (152, (21,), (-8,))]:
        with pytest.raises(shoal.DecodeError, match="does not fit the 160-byte array"):
            _shoal.rebuild_array(handle, offset, shape, strides, "'<f8'")
    with pytest.raises(shoal.DecodeError, match="offset -8 is outside the 160-byte array"):
        _shoal.rebuild_array(handle, -8, (1,), (8,), "'<f8'")
    with pytest.raises(shoal.DecodeError, match="unreadable dtype description"):
        _shoal.rebuild_array(handle, 0, (1,), (8,), "__import__('os')")
    r = _shoal.rebuild_array(handle, 152, (20,), (-8,), "'<f8'")  # the whole array, reversed
    assert np.array_equal(r, a.ravel()[::-1])
    # A forged dtype that holds Python objects would make numpy read addresses out of shared
    # memory; a shape numpy cannot allocate, or that is not ints, is refused as well.
    for descr in ("'|O'", "[('x', '<f8'), ('o', '|O')]"):
        with pytest.raises(shoal.DecodeError, match="holds Python objects"):
            _shoal.rebuild_array(handle, 0, (1,), (8,), descr)
    with pytest.raises(shoal.DecodeError, match="cannot be made"):
        _shoal.rebuild_array(handle, 0, (2**40, 2**40), (0, 0), "'<f8'")
    for shape, strides in [((1.5,), (8,)), ((1,), None), ((1,), (2**70,)), ((1,) * 33, (8,) * 33)]:
        with pytest.raises(shoal.DecodeError, match="array view"):
            _shoal.rebuild_array(handle, 0, shape, strides, "'<f8'")
    with pytest.raises(TypeError, match="1 to 5 arguments"):
        _shoal.rebuild_array()
    with pytest.raises(TypeError, match="a shoal handle is a str"):
        _shoal.rebuild_array(b"shoal1:")
    # A pickled view names the builtin itself (its module is shoal._shoal).
    assert b"shoal._shoal" in pickle.dumps(a[1:])


@pytest.mark.asan
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    offset=st.integers(-16, 200),
    dims=st.lists(st.tuples(st.integers(0, 30), st.integers(-200, 200)), min_size=0, max_size=4),
    descr=st.sampled_from(["'<f8'", "'|u1'", "'<i4'", "[('a', '<i2'), ('b', '|u1')]", "'|V0'"]),
)
def test_forged_views_are_refused_or_stay_inside_the_array(
    offset: int, dims: list[tuple[int, int]], descr: str
) -> None:
    """Any (offset, shape, strides, dtype) a pickle can carry either raises DecodeError or gives
    a view whose every element lies in the 160-byte element area (read under ASan: an element
    outside it would be a read past the mapping or into the header)."""
    target = _forge_target()
    handle = target.segment.handle(pin=False)
    shape, strides = tuple(d for d, _ in dims), tuple(s for _, s in dims)
    try:
        v = _shoal.rebuild_array(handle, offset, shape, strides, descr)
    except shoal.DecodeError:
        return
    assert isinstance(v, shoal.Array) and v.shape == shape
    base = target.__array_interface__["data"][0]
    start = v.__array_interface__["data"][0]
    if v.size:
        lo = start + sum(s * (d - 1) for d, s in dims if s < 0)
        hi = start + sum(s * (d - 1) for d, s in dims if s > 0) + v.itemsize
        assert base <= lo and hi <= base + 160
    v.tobytes()  # reads every element


@functools.cache
def _forge_target() -> shoal.Array:
    return shoal.share(np.arange(20, dtype=np.float64))


# --- across processes ----------------------------------------------------------------------


def _child_reads_and_writes(
    conn: Connection, w: shoal.Array, wview: shoal.Array, snap: shoal.Array, sview: shoal.Array
) -> None:
    try:
        snap.flags.writeable = True
    except ValueError as e:
        refused = str(e)
    else:
        refused = "allowed"
    conn.send(
        (
            type(w).__name__,
            w.flags.writeable,
            snap.flags.writeable,
            refused,
            snap.tobytes(),
            sview.tolist(),
        )
    )
    wview[...] = -7  # through the view the parent sent: only those elements change
    w[0, 0] = 99
    conn.send("written")
    conn.close()


def test_a_process_argument_maps_the_same_memory(ctx: mp.context.BaseContext) -> None:
    w = shoal.zeros((4, 6), np.int64)
    snap = shoal.share(_pattern((5, 5), np.int32))
    parent, child = ctx.Pipe()
    p = ctx.Process(target=_child_reads_and_writes, args=(child, w, w[1:, ::2], snap, snap[::2, 1]))
    p.start()
    child.close()
    kind, w_writable, s_writable, refused, raw, sview = _recv(parent)
    assert (kind, w_writable, s_writable) == ("Array", True, False)
    assert refused == "cannot set WRITEABLE flag to True of this array"
    assert raw == snap.tobytes() and sview == snap[::2, 1].tolist()
    assert _recv(parent) == "written"
    _join(p)
    expected = np.zeros((4, 6), np.int64)
    expected[1:, ::2] = -7
    expected[0, 0] = 99
    assert np.array_equal(w, expected)


def _task_sum(a: shoal.Array) -> tuple[str, float]:
    return type(a).__name__, float(a.sum())


def _task_make(n: int, snapshot: bool) -> shoal.Array:
    a = shoal.zeros(n, np.float64)
    a[:] = np.arange(n)
    return shoal.share(a) if snapshot else a[::-1]


def test_pool_arguments_and_results(ctx: mp.context.BaseContext) -> None:
    a = shoal.share(_pattern((4, 1000)))
    # maxtasksperchild=1: every worker exits right after its task, so each result below was
    # created by a process that is gone when the parent reads it.
    pool = ctx.Pool(2, maxtasksperchild=1)
    try:
        sums = pool.map(_task_sum, [a[i] for i in range(4)], chunksize=2)
        # chunksize given: without it, map divides by len(pool._pool), which CPython 3.13.0
        # can read as 0 while it replaces the workers maxtasksperchild=1 retired (a stdlib race).
        made = pool.starmap(_task_make, [(1000, False), (2000, True)], chunksize=1)
        pool.close()
        pool.join()
    finally:
        pool.terminate()
    assert sums == [("Array", float(a[i].sum())) for i in range(4)]
    rev, snap = made
    assert type(rev) is shoal.Array and rev.flags.writeable
    assert np.array_equal(rev, np.arange(1000.0)[::-1])
    assert type(snap) is shoal.Array and not snap.flags.writeable
    assert np.array_equal(snap, np.arange(2000.0))
    rev[0] = -1.0  # still a live mapping of the (exited) worker's array
    assert rev[0] == -1.0


def _contents(a: shoal.Array) -> tuple[bytes, str, bool, bool]:
    return a.tobytes(), str(a.dtype), a.flags.writeable, type(a) is shoal.Array


def test_a_connected_worker_attaches_fast_whatever_the_dtype(ctx: mp.context.BaseContext) -> None:
    """A worker already connected to the broker attaches from the handle's hint and reads the
    array header from the copy pread at attach; a structured dtype whose description is longer
    than that copy is read from the mapping instead. Both give the same arrays."""
    many = np.dtype([(f"field{i}", "<i4") for i in range(40)])
    long_descr = np.zeros(3, many)
    long_descr["field39"] = [7, 8, 9]
    assert len(repr(np.lib.format.dtype_to_descr(many))) > 512
    arrays = [
        shoal.share(_pattern((3, 4))),
        shoal.share(long_descr),
        shoal.full((2, 5), 3, np.int16, order="F"),
        shoal.share(_pattern((6, 2)))[::2, 1],
    ]
    session = arrays[0].segment.session
    with ctx.Pool(1) as pool:
        pool.apply(_contents, (arrays[0],))  # the worker's first attach connects it
        before = describe_here(session)["ring_holds"]
        for a in arrays:
            assert pool.apply(_contents, (a,)) == (
                a.tobytes(),
                str(a.dtype),
                a.flags.writeable,
                True,
            )
        assert describe_here(session)["ring_holds"] == before + len(arrays)


def test_process_pool_executor_arguments_and_results(ctx: mp.context.BaseContext) -> None:
    a = shoal.share(_pattern((3, 500)), writable=True)
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as ex:
        sums = list(ex.map(_task_sum, [a[0], a[1:], a.T]))
        made = ex.submit(_task_make, 300, True).result(timeout=DEADLINE)
    expected = [float(a[0].sum()), float(a[1:].sum()), float(a.sum())]
    assert sums == [("Array", s) for s in expected]
    assert type(made) is shoal.Array and np.array_equal(made, np.arange(300.0))


def _child_echoes(q_in: Any, q_out: Any, conn: Connection) -> None:
    a = q_in.get(timeout=DEADLINE)
    conn.send(a[::2])  # a view of what it received, back through the Pipe
    a[0] = -1.0
    own = shoal.full(1000, 4.0)
    q_out.put(own)  # an array this child created; it exits before the parent reads it
    conn.send(shoal.share(np.arange(10)))
    conn.close()


def test_queue_and_pipe_carry_handles(ctx: mp.context.BaseContext) -> None:
    q_in, q_out = ctx.Queue(), ctx.Queue()
    parent, child = ctx.Pipe()
    p = ctx.Process(target=_child_echoes, args=(q_in, q_out, child))
    p.start()
    child.close()
    a = shoal.share(np.arange(100.0), writable=True)
    q_in.put(a)
    view = _recv(parent)
    snap = _recv(parent)
    _join(p)  # the child is gone: what it sent is pinned until attached
    own = q_out.get(timeout=DEADLINE)
    assert type(view) is shoal.Array and view.segment.id == a.segment.id
    assert view.tolist() == [-1.0] + list(np.arange(2.0, 100.0, 2))  # the child's write shows
    assert type(snap) is shoal.Array and snap.tolist() == list(range(10))
    assert not snap.flags.writeable
    assert type(own) is shoal.Array and own.shape == (1000,) and (own == 4.0).all()
    own[:] = 5.0
    assert float(own.sum()) == 5000.0


def _child_uses_inherited(conn: Connection) -> None:
    snap, w = INHERITED["snap"], INHERITED["w"]
    conn.send((type(snap).__name__, snap.flags.writeable, float(snap.sum())))
    w[:] = np.arange(10)
    conn.send("written")
    conn.close()


def test_a_forked_child_inherits_a_module_global() -> None:
    ctx = mp.get_context("fork")
    INHERITED["snap"] = shoal.share(np.full(1000, 2.0))
    INHERITED["w"] = shoal.zeros(10, np.int8)
    try:
        parent, child = ctx.Pipe()
        p = ctx.Process(target=_child_uses_inherited, args=(child,))
        p.start()
        child.close()
        assert _recv(parent) == ("Array", False, 2000.0)
        assert _recv(parent) == "written"
        _join(p)
        assert INHERITED["w"].tolist() == list(range(10))
    finally:
        INHERITED.clear()


# --- memory is freed with the last process that maps it (serial: reads Shmem) -----------------


def _shmem_at_most(limit: int) -> bool:
    gc.collect()
    return machine_shmem() <= limit


def _shmem_at_least(limit: int) -> bool:
    # Polled too: in CI serial tests run alone, but on a shared machine other processes' Shmem
    # comes and goes.
    return wait_until(lambda: machine_shmem() >= limit)


def _child_holds_until_told(conn: Connection, a: shoal.Array) -> None:
    conn.send(float(a[-1]))
    assert conn.poll(DEADLINE)
    conn.recv()
    conn.send(float(a.sum()))  # still mapped here after the parent dropped it
    conn.close()


@pytest.mark.serial
def test_memory_is_freed_when_the_last_process_drops_it(ctx: mp.context.BaseContext) -> None:
    base = machine_shmem()
    a = shoal.full(BIG // 8, 1.0)
    assert _shmem_at_least(base + BIG - SLACK)
    parent, child = ctx.Pipe()
    p = ctx.Process(target=_child_holds_until_told, args=(child, a))
    p.start()
    child.close()
    assert _recv(parent) == 1.0
    del a  # the parent lets go first; the child still maps it
    gc.collect()
    assert _shmem_at_least(base + BIG - SLACK)
    parent.send("go")
    assert _recv(parent) == float(BIG // 8)
    _join(p)
    assert wait_until(lambda: _shmem_at_most(base + SLACK)), (machine_shmem() - base) // MIB


def _task_make_big(nbytes: int) -> shoal.Array:
    return shoal.full(nbytes // 8, 3.0)


@pytest.mark.serial
def test_a_pool_workers_array_outlives_it_and_is_freed_after(
    ctx: mp.context.BaseContext,
) -> None:
    base = machine_shmem()
    pool = ctx.Pool(1, maxtasksperchild=1)
    try:
        a = pool.apply(_task_make_big, (BIG,))
        pool.close()
        pool.join()  # the worker that created it has exited
    finally:
        pool.terminate()
    assert a.nbytes == BIG and a[0] == 3.0 and a[-1] == 3.0
    assert _shmem_at_least(base + BIG - SLACK)
    del a
    assert wait_until(lambda: _shmem_at_most(base + SLACK)), (machine_shmem() - base) // MIB


def _child_reads_points(conn: Connection, a: shoal.Array) -> None:
    n = a.shape[0]
    conn.send((a.nbytes, int(a[0]), int(a[n // 2]), int(a[-1]), int(a[n // 2 + 1])))
    conn.close()


@pytest.mark.serial
@pytest.mark.slow
@pytest.mark.skipif(UNDER_ASAN, reason="5 GiB under ASan's shadow memory is too much")
def test_a_5_gib_array_is_shared_with_a_spawned_child() -> None:
    if mem_available() < 8 * GIB:
        pytest.skip(f"needs 8 GiB available, the machine has {mem_available() / GIB:.1f} GiB")
    base = machine_shmem()
    n = 5 * GIB // 8
    a = shoal.zeros(n, np.int64)  # sizes are 64-bit: more than 2**32 bytes, 2**29 elements
    assert _shmem_at_least(base + 5 * GIB - SLACK)  # reserved at creation, not on first touch
    a[0], a[n // 2], a[-1] = 11, 22, 33
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    p = ctx.Process(target=_child_reads_points, args=(child, a))
    p.start()
    child.close()
    assert _recv(parent) == (5 * GIB, 11, 22, 33, 0)
    _join(p)
    del a
    assert wait_until(lambda: _shmem_at_most(base + SLACK)), (machine_shmem() - base) // MIB


@pytest.mark.parametrize("shape", [2.5, (2.9, 3), "3", [2, 1.0]])
def test_a_shape_must_be_integers_as_numpy_says(shape: Any) -> None:
    with pytest.raises(TypeError, match="object cannot be interpreted as an integer"):
        shoal.zeros(shape)
    with pytest.raises(TypeError):
        np.zeros(shape)  # numpy refuses the same shapes


def test_a_shape_takes_what_numpy_takes() -> None:
    assert shoal.zeros(np.int64(3)).shape == (3,)
    assert shoal.empty([2, np.uint8(2)]).shape == (2, 2)
    assert shoal.full((True, 2), 1).shape == (1, 2)
