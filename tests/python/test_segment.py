"""shoal._shoal.Segment: create, attach, the buffer protocol, sealing, pickling, closing, and
every way a handle can be wrong (malformed, truncated, forged, stale), plus the capacity
checks (SHOAL_MAX_BYTES, MemAvailable).

Cross-process tests run under fork, spawn and forkserver (the `ctx` fixture) and in an
unrelated process started with subprocess that gets the handle as a string. Sizes 0 and
above 4 GiB are tested elsewhere; crash and lifetime scenarios are in test_lifetime.py.
"""

from __future__ import annotations

import ctypes
import json
import multiprocessing as mp
import os
import pickle
import re
import signal
import struct
import subprocess
import sys
import zlib
from collections.abc import Iterator
from functools import lru_cache
from multiprocessing.connection import Connection

import numpy as np
import pytest
from conftest import DEADLINE, describe_here, run_python, wait_until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shoal
from shoal import _shoal
from shoal._tools.measure import mem_available

KIB = 1024
MIB = 1024 * KIB
HANDLE_LEN = 133
HINTED_LEN = 163  # a pinned handle: HANDLE_LEN bytes, then the broker's pid and descriptor

# --- helpers ----------------------------------------------------------------------------------


@lru_cache(maxsize=8)
def _pattern(size: int, seed: int) -> bytes:
    """`size` bytes that differ for every seed (size: a multiple of 256)."""
    assert size % 256 == 0
    return bytes((i * 131 + seed * 17 + 1) & 0xFF for i in range(256)) * (size // 256)


def _fill(seg: _shoal.Segment, seed: int) -> None:
    with memoryview(seg) as mv:
        mv[:] = _pattern(len(mv), seed)


def _holds(seg: _shoal.Segment, seed: int) -> bool:
    with memoryview(seg) as mv:
        return zlib.crc32(mv) == zlib.crc32(_pattern(len(mv), seed))


def _object(session: str, object_id: str) -> dict | None:
    for o in describe_here(session)["objects"]:
        if o["id"] == object_id:
            return o
    return None


def _forge(
    session: str, obj: str, pin: int = 0, size: int = 4096, kind: int = 0, flags: int = 0
) -> str:
    """A handle with a valid checksum and whatever fields the caller wants."""
    body = f"shoal1:{session}:{obj}:{pin:016x}:{size:016x}:{kind:08x}:{flags:08x}"
    return f"{body}:{zlib.crc32(body.encode()):08x}"


def _shoal_memfds() -> tuple[int, int]:
    """(mappings, descriptors) of shoal segments in this process."""
    with open("/proc/self/maps") as f:
        maps = sum(1 for line in f if "/memfd:shoal" in line)
    fds = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            fds += os.readlink(f"/proc/self/fd/{fd}").startswith("/memfd:shoal")
        except OSError:
            pass  # the descriptor listdir itself used
    return maps, fds


@pytest.fixture
def seg() -> Iterator[_shoal.Segment]:
    s = _shoal.Segment.create(64 * KIB)
    _fill(s, 1)
    yield s
    s.close()


# --- child processes (module level, so that spawn can import them) ---------------------------


def _child_reads_then_writes(conn: Connection, seg: _shoal.Segment) -> None:
    conn.send((seg.id, seg.size, seg.read_only, _holds(seg, 1)))
    _fill(seg, 2)
    conn.send("written")
    conn.close()


def _child_tries_to_seal(conn: Connection, seg: _shoal.Segment) -> None:
    try:
        seg.seal()
    except shoal.ShoalError as e:
        conn.send((type(e).__name__, str(e), seg.read_only))
    else:
        conn.send(("sealed", "", seg.read_only))
    conn.close()


def _recv(conn: Connection) -> object:
    assert conn.poll(DEADLINE), "the child did not answer"
    return conn.recv()


# --- create, attach, share -------------------------------------------------------------------


def test_create_gives_a_zeroed_writable_segment_of_the_requested_size() -> None:
    s = _shoal.Segment.create(3 * 4096 + 100)
    assert s.size == len(s) == 3 * 4096 + 100
    assert not s.read_only and not s.closed
    assert s.kind == 0
    assert len(s.id) == 32 and len(s.session) == 32
    assert s.session == _shoal.current_session()
    with memoryview(s) as mv:
        assert mv.nbytes == s.size and mv.format == "B" and not mv.readonly
        assert mv.tobytes() == bytes(s.size)
    assert _object(s.session, s.id)["refs"] == 1
    s.close()


def test_create_rejects_an_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown segment kind"):
        _shoal.Segment.create(4096, kind=99)


def test_attach_in_the_same_process_maps_the_same_memory(seg: _shoal.Segment) -> None:
    other = _shoal.Segment.attach(seg.handle())
    assert other.id == seg.id and other.size == seg.size
    with memoryview(other) as mv:
        mv[:5] = b"hello"
    with memoryview(seg) as mv:
        assert mv[:5].tobytes() == b"hello"
    # One process holds one broker reference however many copies it has.
    assert _object(seg.session, seg.id)["refs"] == 1
    other.close()


def test_a_child_maps_the_same_physical_memory(
    ctx: mp.context.BaseContext, seg: _shoal.Segment
) -> None:
    parent, child = ctx.Pipe()
    p = ctx.Process(target=_child_reads_then_writes, args=(child, seg))
    p.start()
    child.close()
    assert _recv(parent) == (seg.id, seg.size, False, True)
    assert _recv(parent) == "written"
    p.join(DEADLINE)
    assert p.exitcode == 0
    assert _holds(seg, 2)  # the child's writes landed in our mapping


_ATTACH_READ_WRITE = r"""
import sys, zlib
from shoal import _shoal
seg = _shoal.Segment.attach(sys.argv[1])
with memoryview(seg) as mv:
    print(seg.id, seg.size, seg.read_only, zlib.crc32(mv), flush=True)
    mv[:7] = b"written"
"""


def test_an_unrelated_process_attaches_by_handle_string(seg: _shoal.Segment) -> None:
    h = seg.handle()
    assert isinstance(h, str) and len(h) == HINTED_LEN and h.startswith("shoal1:")
    assert h[HANDLE_LEN : HANDLE_LEN + 4] == ";h1:"
    assert len(seg.handle(pin=False)) == HANDLE_LEN
    r = run_python(_ATTACH_READ_WRITE, h)
    assert r.returncode == 0, r.stderr
    crc = zlib.crc32(_pattern(seg.size, 1))
    assert r.stdout.split() == [seg.id, str(seg.size), "False", str(crc)]
    with memoryview(seg) as mv:
        assert mv[:7].tobytes() == b"written"


# --- buffer protocol, sealing ----------------------------------------------------------------

_PyBUF_WRITABLE = 0x0001
_getbuffer = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.py_object, ctypes.c_void_p, ctypes.c_int)(
    ("PyObject_GetBuffer", ctypes.pythonapi)
)
_releasebuffer = ctypes.PYFUNCTYPE(None, ctypes.c_void_p)(("PyBuffer_Release", ctypes.pythonapi))


def _get_writable_buffer(obj: object) -> None:
    """Ask for a writable buffer exactly as C code does, and release it at once."""
    view = (ctypes.c_byte * 256)()  # a Py_buffer is 80 bytes on 64-bit
    _getbuffer(obj, ctypes.addressof(view), _PyBUF_WRITABLE)
    _releasebuffer(ctypes.addressof(view))


def test_buffer_exports_are_counted_and_shared_with_numpy(seg: _shoal.Segment) -> None:
    assert seg.exports == 0
    a = np.frombuffer(seg, dtype=np.uint8)
    assert a.flags.writeable and a.nbytes == seg.size
    mv = memoryview(seg)
    assert seg.exports == 2
    a[10:13] = [7, 8, 9]
    assert mv[10:13].tolist() == [7, 8, 9]
    mv.release()
    del a
    assert seg.exports == 0
    _get_writable_buffer(seg)  # a writable buffer is granted while the segment is unsealed
    assert seg.exports == 0


def test_a_sealed_segment_refuses_every_write(seg: _shoal.Segment) -> None:
    seg.seal()
    assert seg.read_only
    assert "read-only" in repr(seg)
    assert _shoal.decode_handle(seg.handle(pin=False))["read_only"] is True
    with memoryview(seg) as mv:
        assert mv.readonly
        with pytest.raises(TypeError, match="cannot modify read-only memory"):
            mv[0] = 1
    with pytest.raises(
        BufferError,
        match=r"segment is read-only \(sealed\): it cannot export "
        r"a writable buffer",
    ):
        _get_writable_buffer(seg)
    with pytest.raises(TypeError, match="read-write bytes-like object"):
        struct.pack_into("B", seg, 0, 1)
    a = np.frombuffer(seg, dtype=np.uint8)
    assert not a.flags.writeable
    with pytest.raises(ValueError, match="WRITEABLE"):
        a.flags.writeable = True
    del a
    assert seg.exports == 0
    assert _holds(seg, 1)  # nothing was written
    seg.seal()  # sealing twice is harmless
    assert _object(seg.session, seg.id)["read_only"] is True


def test_seal_is_refused_while_buffers_are_exported(seg: _shoal.Segment) -> None:
    mv = memoryview(seg)
    with pytest.raises(
        BufferError, match="cannot seal a segment while (writable )?buffers are exported"
    ):
        seg.seal()
    assert not seg.read_only
    mv.release()
    seg.seal()
    assert seg.read_only


def test_only_the_creator_can_seal(ctx: mp.context.BaseContext, seg: _shoal.Segment) -> None:
    # A forked child inherits the mapping but not the right to seal; a spawned one attaches.
    parent, child = ctx.Pipe()
    p = ctx.Process(target=_child_tries_to_seal, args=(child, seg))
    p.start()
    child.close()
    assert _recv(parent) == (
        "InvalidArgumentError",
        "only the process that created a segment can seal it read-only",
        False,
    )
    p.join(DEADLINE)
    assert p.exitcode == 0
    assert not seg.read_only


_ATTACH_SEALED_THEN_WRITE_RAW = r"""
import ctypes, resource, sys, zlib
import numpy as np
from shoal import _shoal
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
seg = _shoal.Segment.attach(sys.argv[1])
a = np.frombuffer(seg, dtype=np.uint8)
print(seg.read_only, a.flags.writeable, zlib.crc32(a), flush=True)
ctypes.memset(a.ctypes.data, 0x55, 1)  # below Python: the page itself must be read-only
print("wrote", flush=True)
"""


def test_a_sealed_segment_is_mapped_read_only_in_a_fresh_process(seg: _shoal.Segment) -> None:
    seg.seal()
    r = run_python(_ATTACH_SEALED_THEN_WRITE_RAW, seg.handle())
    crc = zlib.crc32(_pattern(seg.size, 1))
    assert r.stdout.split() == ["True", "False", str(crc)], r.stderr
    assert r.returncode == -signal.SIGSEGV, r.stderr
    assert _holds(seg, 1)


# --- pickling, closing, repr -----------------------------------------------------------------


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_pickle_is_a_small_pinned_handle(protocol: int) -> None:
    s = _shoal.Segment.create(1 * MIB)
    with memoryview(s) as mv:
        mv[: 4 * KIB] = b"DATA" * KIB
    blob = pickle.dumps(s, protocol=protocol)
    assert len(blob) < 300
    assert b"DATADATA" not in blob  # a handle, never the bytes
    assert _object(s.session, s.id)["pins"] == 1
    t = pickle.loads(blob)
    assert type(t) is _shoal.Segment
    assert (t.id, t.size, t.session) == (s.id, s.size, s.session)
    with memoryview(t) as mv:
        assert mv[:8].tobytes() == b"DATADATA"
        mv[:4] = b"back"
    with memoryview(s) as mv:
        assert mv[:8].tobytes() == b"backDATA"
    assert _object(s.session, s.id)["pins"] == 0  # attaching used the pin
    t.close()
    s.close()


def test_close_with_a_live_memoryview_raises_buffer_error(seg: _shoal.Segment) -> None:
    mv = memoryview(seg)
    a = np.frombuffer(seg, dtype=np.uint8)
    with pytest.raises(
        BufferError,
        match=r"cannot close a segment with 2 exported buffer\(s\); "
        "release the memoryviews/arrays first",
    ):
        seg.close()
    assert not seg.closed
    assert mv[0] == _pattern(seg.size, 1)[0]  # the mapping is still there
    del a
    with pytest.raises(BufferError, match=r"with 1 exported buffer\(s\)"):
        seg.close()
    mv.release()
    seg.close()
    assert seg.closed
    seg.close()  # idempotent
    assert seg.closed


def test_a_closed_segment_refuses_use_and_releases_its_reference() -> None:
    s = _shoal.Segment.create(4096)
    h = s.handle(pin=False)
    session, oid = s.session, s.id
    keep = _shoal.Segment.create(4096)  # keeps the session's broker busy
    s.close()
    assert repr(s) == "<shoal Segment closed>"
    for use in (
        s.handle,
        lambda: len(s),
        lambda: memoryview(s),
        lambda: s.id,
        s.seal,
        lambda: pickle.dumps(s),
    ):
        with pytest.raises(ValueError, match="segment is closed"):
            use()
    assert wait_until(lambda: _object(session, oid) is None)
    with pytest.raises(shoal.StaleHandleError, match=f"object {oid} no longer exists"):
        _shoal.Segment.attach(h)
    keep.close()


def test_context_manager_closes() -> None:
    with _shoal.Segment.create(4096) as s:
        assert not s.closed
    assert s.closed


def test_repr_names_the_id_and_size(seg: _shoal.Segment) -> None:
    assert repr(seg) == f"<shoal Segment {seg.id[:12]} size={64 * KIB}>"


# --- bad handles -----------------------------------------------------------------------------


def _first_hex_letter(h: str) -> int:
    return next(i for i in range(7, len(h)) if h[i] in "abcdef")


BAD_HANDLES = [
    # (id, make(h) -> text, expected message)
    ("empty", lambda h: "", r"not a shoal handle: it must start with 'shoal1:' \(got 0 bytes\)"),
    ("garbage", lambda h: "x" * 200, r"not a shoal handle: .*\(got 200 bytes\)"),
    ("prefix-only", lambda h: "shoal1:", r"truncated at offset 7 \(a handle is 133 bytes\)"),
    ("short", lambda h: "shoal1:nonsense", r"truncated at offset 15"),
    ("cut", lambda h: h[:100], r"shoal handle truncated at offset 100"),
    ("cut-last-char", lambda h: h[:-1], r"truncated at offset 132"),
    ("trailing", lambda h: h + "00", r"shoal handle has 2 trailing bytes at offset 133"),
    ("newline", lambda h: h + "\n", r"1 trailing bytes at offset 133"),
    ("upper-case", lambda h: h[:7] + h[7:].upper(), None),  # offset computed below
    ("no-colon", lambda h: h[:39] + ";" + h[40:], r"expected ':' at offset 39"),
    ("nul", lambda h: h[:-1] + "\0", r"expected a hex digit at offset 132"),
    ("non-ascii", lambda h: "shoal1:" + "é" * 63, r"expected a hex digit at offset 7"),
    (
        "bit-flip-object",
        lambda h: h[:60] + ("1" if h[60] == "0" else "0") + h[61:],
        r"corrupt shoal handle: checksum mismatch at offset 125 \(the handle was altered or cut\)",
    ),
    (
        "bit-flip-crc",
        lambda h: h[:-1] + ("1" if h[-1] == "0" else "0"),
        r"checksum mismatch at offset 125",
    ),
    (
        "unknown-flags",
        lambda h: _forge(h[7:39], h[40:72], flags=4),
        r"unknown flags 4: it was made by a newer shoal",
    ),
    ("zero-session", lambda h: _forge("0" * 32, h[40:72]), r"zero session or object id"),
    ("zero-object", lambda h: _forge(h[7:39], "0" * 32), r"zero session or object id"),
]


@pytest.mark.parametrize(
    "make,match", [b[1:] for b in BAD_HANDLES], ids=[b[0] for b in BAD_HANDLES]
)
def test_malformed_handles_raise_decode_error(seg: _shoal.Segment, make, match) -> None:
    h = seg.handle()[:HANDLE_LEN]  # without its hint: a valid handle too
    text = make(h)
    if match is None:
        match = f"expected a hex digit at offset {_first_hex_letter(h)}"
    with pytest.raises(shoal.DecodeError, match=match) as ei:
        _shoal.Segment.attach(text)
    assert isinstance(ei.value, ValueError)  # DecodeError is also a ValueError
    with pytest.raises(shoal.DecodeError, match=match):
        _shoal.decode_handle(text)


def _hint(h: str, tag: str = ";h1:", pid: str = "00000010", fd: str = "00000005") -> str:
    body = f"{h[:HANDLE_LEN]}{tag}{pid}:{fd}"
    return f"{body}:{zlib.crc32(body.encode()):08x}"


BAD_HINTS = [
    (
        "cut",
        lambda h: h[:150],
        r"hint truncated at offset 150 \(a handle with a hint is 163 bytes\)",
    ),
    ("cut-last-char", lambda h: h[:-1], r"hint truncated at offset 162"),
    ("trailing", lambda h: h + "00", r"2 trailing bytes at offset 163"),
    ("other-separator", lambda h: h[:133] + "+" + h[134:], r"1 trailing bytes|30 trailing bytes"),
    ("unknown-version", lambda h: _hint(h, tag=";h2:"), r"unknown hint version"),
    ("no-colon", lambda h: h[:145] + ";" + h[146:], r"expected ':' at offset 145"),
    ("upper-case", lambda h: _hint(h, fd="0000000A"), r"expected a hex digit at offset 153"),
    (
        "bit-flip-fd",
        lambda h: h[:153] + ("1" if h[153] == "0" else "0") + h[154:],
        r"hint checksum mismatch at offset 155",
    ),
    (
        "bit-flip-in-the-handle",  # the hint's checksum covers the handle before it
        lambda h: h[:80] + ("1" if h[80] == "0" else "0") + h[81:],
        r"checksum mismatch at offset 125",
    ),
    ("zero-pid", lambda h: _hint(h, pid="00000000"), r"names pid 0"),
    ("negative-fd", lambda h: _hint(h, fd="80000000"), r"descriptor 2147483648"),
]


@pytest.mark.parametrize("make,match", [b[1:] for b in BAD_HINTS], ids=[b[0] for b in BAD_HINTS])
def test_malformed_hints_raise_decode_error(seg: _shoal.Segment, make, match) -> None:
    text = make(seg.handle())
    with pytest.raises(shoal.DecodeError, match=match):
        _shoal.Segment.attach(text)
    with pytest.raises(shoal.DecodeError, match=match):
        _shoal.decode_handle(text)


def test_a_handle_without_its_hint_attaches_and_uses_its_pin(seg: _shoal.Segment) -> None:
    h = seg.handle()
    assert _shoal.decode_handle(h) == _shoal.decode_handle(h[:HANDLE_LEN])
    r = run_python(_ATTACH_READ_WRITE, h[:HANDLE_LEN])
    assert r.returncode == 0, r.stderr
    info = describe_here(seg.session)
    assert [o["pins"] for o in info["objects"] if o["id"] == seg.id] == [0]
    assert info["holds"] == 0  # the unrelated process was not connected: a round trip


def test_non_string_handles_raise_type_error() -> None:
    for bad in (None, 5, b"shoal1:"):
        with pytest.raises(TypeError, match="a shoal handle is a str"):
            _shoal.Segment.attach(bad)  # type: ignore[arg-type]


def test_unencodable_handle_raises_decode_error() -> None:
    raised: BaseException | None = None
    try:
        _shoal.Segment.attach("shoal1:" + "\ud800" * 126)
    except Exception as e:  # noqa: BLE001 - the type is what is checked
        raised = e
    assert isinstance(raised, shoal.DecodeError), repr(raised)


_FUZZ_CHARS = st.one_of(
    st.sampled_from("0123456789abcdefABCDEFg:x \0\n"),
    st.characters(),  # lone surrogates included: DecodeError too
)


def _mutate(h: str, full: int, edits: list[tuple[int, str]], cut: int, extra: str) -> str:
    """`h` cut at `cut` (unless past its `full` length), then edited, then extended."""
    chars = list(h[:cut] if cut < full else h)
    for pos, c in edits:
        if pos < len(chars):
            chars[pos] = c
    return "".join(chars) + extra


@settings(
    max_examples=300,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    edits=st.lists(st.tuples(st.integers(0, 140), _FUZZ_CHARS), max_size=3),
    cut=st.integers(0, 140),
    extra=st.text(_FUZZ_CHARS, max_size=3),
)
def test_mutated_handles_never_crash(
    seg: _shoal.Segment, edits: list[tuple[int, str]], cut: int, extra: str
) -> None:
    text = _mutate(seg.handle(pin=False), HANDLE_LEN, edits, cut, extra)
    try:
        got = _shoal.Segment.attach(text)
    except shoal.DecodeError as e:
        assert "shoal handle" in str(e)
    except shoal.StaleHandleError as e:
        assert "no longer exists" in str(e) or "is not running" in str(e)
    else:
        assert got.id == seg.id  # only an edit that changed nothing can succeed
        got.close()


@settings(
    max_examples=200,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    edits=st.lists(st.tuples(st.integers(125, 170), _FUZZ_CHARS), max_size=3),
    cut=st.integers(125, 170),
    extra=st.text(_FUZZ_CHARS, max_size=3),
)
def test_mutated_hinted_handles_never_crash(
    seg: _shoal.Segment, edits: list[tuple[int, str]], cut: int, extra: str
) -> None:
    text = _mutate(seg.handle(), HINTED_LEN, edits, cut, extra)
    try:
        got = _shoal.Segment.attach(text)
    except shoal.DecodeError as e:
        assert "shoal handle" in str(e)
    else:
        assert got.id == seg.id
        got.close()


def test_a_forged_handle_with_a_valid_checksum_is_stale(seg: _shoal.Segment) -> None:
    other_session = "1" * 32
    with pytest.raises(
        shoal.StaleHandleError, match=f"session {other_session} is not running on this machine"
    ):
        _shoal.Segment.attach(_forge(other_session, "2" * 32))
    with pytest.raises(
        shoal.StaleHandleError, match=f"object {'2' * 32} no longer exists in session {seg.session}"
    ):
        _shoal.Segment.attach(_forge(seg.session, "2" * 32))
    # The failed attaches left no reference and no pin behind.
    assert [o["id"] for o in describe_here(seg.session)["objects"]] == [seg.id]


_ATTACH_ALTERED = r"""
import json, os, sys
from shoal import _shoal
try:
    _shoal.Segment.attach(sys.argv[1])
    out = ["attached", ""]
except Exception as e:
    out = [type(e).__name__, str(e)]
(s,) = [s for s in _shoal.list_sessions() if s["alive"]]
holders = [o["holders"] for o in json.loads(s["describe_json"])["objects"]]
print(json.dumps(out + [holders, os.getpid()]))
"""


@pytest.mark.parametrize("field", ["size", "kind"])
def test_an_altered_handle_is_refused_by_a_fresh_process(seg: _shoal.Segment, field: str) -> None:
    altered = _forge(seg.session, seg.id, **{field: seg.size * 2 if field == "size" else 1})
    r = run_python(_ATTACH_ALTERED, altered)
    assert r.returncode == 0, r.stderr
    kind, msg, holders, pid = json.loads(r.stdout)
    assert kind == "StaleHandleError"
    assert "the handle was altered" in msg
    # The reference the broker counted for the failed attach was given back at once.
    assert holders == [[os.getpid()]] and pid != os.getpid()


@pytest.mark.parametrize("field", ["size", "kind"])
def test_an_altered_handle_is_refused_where_the_object_is_mapped(
    seg: _shoal.Segment, field: str
) -> None:
    # This process maps the object already, so attach answers from its cache: it must check
    # the handle there too (it once returned the mapping whatever size the handle claimed).
    altered = _forge(seg.session, seg.id, **{field: seg.size * 2 if field == "size" else 1})
    with pytest.raises(shoal.StaleHandleError, match="the handle was altered"):
        _shoal.Segment.attach(altered)
    assert _object(seg.session, seg.id)["refs"] == 1


def test_a_handle_naming_a_mapped_object_under_another_session_is_refused_as_elsewhere(
    seg: _shoal.Segment,
) -> None:
    # Our object's id with another session's id (checksum valid): a fresh process asks that
    # session and is refused, and so must this one, although its cache of mappings holds an
    # object with that id.
    forged = _forge("1" * 32, seg.id, size=seg.size, kind=seg.kind)
    expected = f"session {'1' * 32} is not running on this machine"
    with pytest.raises(shoal.StaleHandleError, match=expected):
        _shoal.Segment.attach(forged)
    r = run_python(_ATTACH_ALTERED, forged)
    assert r.returncode == 0, r.stderr
    kind, msg, _, _ = json.loads(r.stdout)
    assert kind == "StaleHandleError" and expected in msg
    assert _object(seg.session, seg.id)["refs"] == 1  # ours, untouched


def test_an_unpinned_handle_of_a_released_object_is_stale() -> None:
    keep = _shoal.Segment.create(4096)
    s = _shoal.Segment.create(4096)
    h, oid = s.handle(pin=False), s.id
    s.close()
    assert wait_until(lambda: _object(keep.session, oid) is None)
    with pytest.raises(
        shoal.StaleHandleError,
        match=f"object {oid} no longer exists in session {keep.session}: every "
        "process released it and its handle's pin expired or was used",
    ):
        _shoal.Segment.attach(h)
    keep.close()


def test_a_pin_is_used_once(seg: _shoal.Segment, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOAL_PIN_TTL", "120")  # the pin, not its expiry, is what is tested
    # `seg` keeps this process connected, so the session outlives `s`.
    s = _shoal.Segment.create(4096)
    h = s.handle()
    s.close()  # only the pin keeps it alive now
    first = run_python(_ATTACH_READ_WRITE, h)
    assert first.returncode == 0, first.stderr
    second = run_python(_ATTACH_READ_WRITE, h)
    assert second.returncode != 0
    assert "StaleHandleError: object" in second.stderr and "no longer exists" in second.stderr


def test_an_expired_pin_frees_the_object(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOAL_PIN_TTL", "1")
    keep = _shoal.Segment.create(4096)
    s = _shoal.Segment.create(4096)
    h, oid = s.handle(), s.id
    s.close()
    assert _object(keep.session, oid)["pins"] == 1
    assert wait_until(lambda: _object(keep.session, oid) is None)
    assert describe_here(keep.session)["pins_expired"] == 1
    with pytest.raises(shoal.StaleHandleError, match=f"object {oid} no longer exists"):
        _shoal.Segment.attach(h)
    keep.close()


_CREATE_PRINT_EXIT = r"""
from shoal import _shoal
s = _shoal.Segment.create(4096)
print(s.handle(pin=False), flush=True)
"""


def test_a_handle_of_a_finished_session_is_stale(runtime_dir: str) -> None:
    r = run_python(_CREATE_PRINT_EXIT)
    assert r.returncode == 0, r.stderr
    h = r.stdout.strip()
    session = _shoal.decode_handle(h)["session"]
    # Its only process exited: the broker leaves and takes its files with it.
    assert wait_until(lambda: not os.listdir(runtime_dir))
    with pytest.raises(
        shoal.StaleHandleError,
        match=f"session {session} is not running on this machine: all of its processes have exited",
    ):
        _shoal.Segment.attach(h)


_ATTACH_REPORT = r"""
import sys
from shoal import _shoal
try:
    _shoal.Segment.attach(sys.argv[1])
    print("attached")
except Exception as e:
    print(type(e).__name__, str(e))
"""


def test_a_handle_from_another_runtime_dir_is_stale(
    seg: _shoal.Segment, runtime_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = seg.handle(pin=False)
    elsewhere = os.path.join(runtime_dir, "elsewhere")
    os.mkdir(elsewhere, 0o700)
    monkeypatch.setenv("SHOAL_RUNTIME_DIR", elsewhere)
    r = run_python(_ATTACH_REPORT, h)
    assert r.stdout.startswith(
        f"StaleHandleError session {seg.session} is not running on this machine: "
    ), r.stderr
    assert "(or the handle comes from another machine, user or SHOAL_RUNTIME_DIR)" in r.stdout
    monkeypatch.setenv("SHOAL_RUNTIME_DIR", os.path.join(runtime_dir, "missing"))
    r = run_python(_ATTACH_REPORT, h)
    assert r.stdout.startswith(
        f"StaleHandleError session {seg.session} is not running on this machine (no runtime "
        "directory)"
    ), r.stdout + r.stderr


# --- capacity --------------------------------------------------------------------------------


def test_max_bytes_refuses_a_bigger_create_before_reserving(
    runtime_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOAL_MAX_BYTES", "1M")
    before = _shoal_memfds()
    with pytest.raises(
        shoal.OutOfSpaceError,
        match=r"cannot reserve 2\.0 MiB of shared memory: SHOAL_MAX_BYTES is "
        r"1\.0 MiB .*raise SHOAL_MAX_BYTES or release objects first",
    ) as ei:
        _shoal.Segment.create(2 * MIB)
    assert isinstance(ei.value, MemoryError)
    assert _shoal_memfds() == before
    assert _shoal.current_session() is None and os.listdir(runtime_dir) == []


def test_max_bytes_counts_every_live_object_of_the_session(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOAL_MAX_BYTES", "1M")  # the broker starts with it
    first = _shoal.Segment.create(512 * KIB)
    before = _shoal_memfds()
    assert before >= (1, 1)  # the count sees a segment (the creator keeps its descriptor)
    with pytest.raises(
        shoal.OutOfSpaceError,
        match=r"SHOAL_MAX_BYTES \(1048576 bytes\) would be exceeded: the session "
        r"holds 524352 bytes",
    ):
        _shoal.Segment.create(600 * KIB)
    assert _shoal_memfds() == before  # the refused segment is unmapped and closed
    session = first.session
    info = describe_here(session)
    assert info["total_bytes"] == 512 * KIB + 64 and len(info["objects"]) == 1
    first.close()
    assert wait_until(lambda: describe_here(session)["total_bytes"] == 0)
    second = _shoal.Segment.create(600 * KIB)  # room again once the first is released
    assert second.size == 600 * KIB
    second.close()


def test_max_bytes_that_is_not_a_byte_count_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOAL_MAX_BYTES", "lots")
    with pytest.raises(
        shoal.InvalidArgumentError, match="SHOAL_MAX_BYTES='lots' is not a byte count"
    ):
        _shoal.Segment.create(4096)


def test_a_create_bigger_than_mem_available_reserves_nothing(runtime_dir: str) -> None:
    too_big = mem_available() + (1 << 30)
    before = _shoal_memfds()
    with pytest.raises(
        shoal.OutOfSpaceError,
        match=r"cannot reserve .* of shared memory: only .* is available "
        r"\(MemAvailable\)",
    ):
        _shoal.Segment.create(too_big)
    with pytest.raises(shoal.OutOfSpaceError, match=r"\(MemAvailable\)"):
        _shoal.check_capacity(too_big)
    assert _shoal_memfds() == before
    assert _shoal.current_session() is None and os.listdir(runtime_dir) == []


_FD_STARTER = r"""
import resource, sys
from shoal import _shoal
resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
seg = _shoal.Segment.create(4096)  # the session's broker starts now and inherits the limit
print(seg.session, flush=True)
sys.stdin.read()
"""

_FD_CREATOR = r"""
import shoal
from shoal import _shoal
keep = []
try:
    for _ in range(200):
        keep.append(_shoal.Segment.create(4096))
    print("created 200")
except shoal.OutOfSpaceError as e:
    print(e)
"""


def test_a_broker_out_of_descriptors_is_named_as_the_one_that_ran_out() -> None:
    # The broker keeps one descriptor per live object. Started under a limit of 64 (by a
    # process that lowered its own), it runs out while the creator, with the usual limit, has
    # plenty: the error must say the broker ran out, not "this process".
    with subprocess.Popen(
        [sys.executable, "-c", _FD_STARTER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as starter:
        assert starter.stdin is not None and starter.stdout is not None
        session = starter.stdout.readline().strip()
        r = subprocess.run(
            [sys.executable, "-c", _FD_CREATOR],
            env={**os.environ, "SHOAL_SESSION": session},
            check=False,
            capture_output=True,
            text=True,
            timeout=120,
        )
        starter.stdin.close()  # the starter exits; leaving the with block waits for it
    assert r.returncode == 0, r.stderr[-2000:]
    assert re.fullmatch(
        r"the session's broker \(pid \d+\) is out of file descriptors \(limit 64, one per live "
        r"object\): release objects, or raise ulimit -Hn where the session starts\n",
        r.stdout,
    ), r.stdout
