"""The registry of object kinds: C++'s list (include/shoal/kind.hpp, exported as
_shoal.object_kinds()) and Python's entries (shoal._kinds) agree, and shoal.attach, pickling,
``shoal ls`` and the handle and header checks all go through it.

Attaching and unpickling happen in fresh processes, as they do in use: this process's cache
of mappings would otherwise answer.
"""

from __future__ import annotations

import pickle
import re
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import run_python

import shoal
from shoal import _kinds, _shoal
from shoal.cli import main

# The ids already in handles and segment headers: they never change.
RELEASED = {0: "bytes", 1: "array", 2: "frozen", 3: "heap", 4: "extent", 5: "sync"}


def _object_id(obj: Any) -> str:
    """The object id of the segment holding a Segment, an Array or a frozen view."""
    if isinstance(obj, _shoal.Segment):
        return obj.id
    return str(_shoal.decode_handle(obj.handle())["object"])


# One maker per kind: what shoal.attach should give back for it, and how to compare.
MAKERS: dict[str, Callable[[], Any]] = {
    "bytes": lambda: _shoal.Segment.create(4096),
    "array": lambda: shoal.share(np.arange(12, dtype=np.int32).reshape(3, 4)),
    "frozen": lambda: shoal.freeze({"a": [1, 2.5, "x"], "b": (None, b"y")}),
    "heap": lambda: _shoal.Heap.create(),
    # An extent is made by a growing heap; a bare one is a segment of that kind.
    "extent": lambda: _shoal.Segment.create(4096, kind=4),
    # A sync object: attach gives the shoal.Lock, Event, ... its header's type names.
    "sync": lambda: shoal.Lock(),
}

_ATTACH_IN_A_FRESH_PROCESS = r"""
import pickle, sys
import numpy as np
import shoal
from shoal import _shoal
obj = shoal.attach(sys.argv[1])
if isinstance(obj, _shoal.Segment):
    plain = obj.kind
elif isinstance(obj, _shoal.Heap):
    plain = obj.check()["used_blocks"]
elif isinstance(obj, np.ndarray):
    plain = obj.tolist()
elif isinstance(obj, shoal.Lock):
    plain = obj.acquire(False)
else:
    plain = {k: list(v) if k == "a" else tuple(v) for k, v in obj.items()}
print(type(obj).__module__ + "." + type(obj).__qualname__, repr(plain), flush=True)
"""

EXPECTED_ATTACH = {
    "bytes": ("shoal._shoal.Segment", "0"),
    "array": ("shoal.Array", repr(np.arange(12).reshape(3, 4).tolist())),
    "frozen": ("shoal._frozen.FrozenDict", repr({"a": [1, 2.5, "x"], "b": (None, b"y")})),
    "heap": ("shoal._shoal.Heap", "0"),
    "extent": ("shoal._shoal.Segment", "4"),
    "sync": ("shoal._sync.Lock", "True"),
}


def _with_kind(handle: str, kind: int) -> str:
    """`handle` (hint dropped) with another kind and a valid checksum (handle.hpp's format)."""
    body = handle[:107] + f"{kind:08x}" + handle[115:124]
    assert handle[106] == ":" and handle[115] == ":" and handle[124] == ":"
    return f"{body}:{zlib.crc32(body.encode()):08x}"


# --- the registry itself ---------------------------------------------------------------------


def test_cxx_lists_the_released_kinds_with_dense_ids_and_unique_names() -> None:
    kinds = _shoal.object_kinds()
    assert [k[0] for k in kinds] == list(range(len(kinds)))
    names = [k[1] for k in kinds]
    assert len(set(names)) == len(names), names
    assert all(re.fullmatch(r"[a-z_]+", n) for n in names), names
    assert all(k[2] for k in kinds), "every kind has a description"
    assert {i: n for i, n, _ in kinds if i in RELEASED} == RELEASED


def test_every_cxx_kind_has_a_python_entry_and_every_entry_a_cxx_kind() -> None:
    cxx = {name for _, name, _ in _shoal.object_kinds()}
    missing = sorted(n for n in cxx if _kinds.KINDS_BY_NAME[n].entry is None)
    assert not missing, f"kinds C++ lists without an entry in shoal._kinds._ENTRIES: {missing}"
    assert set(_kinds._ENTRIES) == cxx, "an entry in shoal._kinds names no C++ kind"
    assert set(MAKERS) == cxx, "test_kinds.py: give the new kind a maker and an expectation"
    assert set(EXPECTED_ATTACH) == cxx


def test_kind_names_come_from_the_registry() -> None:
    for kid, name in RELEASED.items():
        assert _kinds.kind_name(kid) == name
    unknown = len(_shoal.object_kinds())
    assert _kinds.kind_name(unknown) == f"kind {unknown}"


# --- attach and pickling, per kind -----------------------------------------------------------


@pytest.mark.parametrize("name", sorted(RELEASED.values()))
def test_shoal_attach_gives_each_kind_its_object_in_a_fresh_process(name: str) -> None:
    obj = MAKERS[name]()
    handle = obj.handle()
    assert _shoal.decode_handle(handle)["kind"] == _kinds.KINDS_BY_NAME[name].id
    r = run_python(_ATTACH_IN_A_FRESH_PROCESS, handle)
    assert r.returncode == 0, r.stderr
    type_name, plain = r.stdout.strip().split(" ", 1)
    assert (type_name, plain) == EXPECTED_ATTACH[name]


_UNPICKLE_IN_A_FRESH_PROCESS = r"""
import pickle, sys
import shoal
obj = pickle.loads(bytes.fromhex(sys.stdin.read()))
print(type(obj).__module__ + "." + type(obj).__qualname__, flush=True)
"""


def _entry(name: str) -> Any:
    entry = _kinds.KINDS_BY_NAME[name].entry
    assert entry is not None, f"kind {name!r} has no entry in shoal._kinds"
    return entry


@pytest.mark.parametrize("name", sorted(RELEASED.values()))
def test_each_kind_pickles_through_its_registered_reconstructor(name: str) -> None:
    obj = MAKERS[name]()
    assert obj.__reduce__()[0] is _entry(name).reconstructor
    r = run_python(_UNPICKLE_IN_A_FRESH_PROCESS, stdin=pickle.dumps(obj, protocol=5).hex())
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == EXPECTED_ATTACH[name][0]


def test_the_reconstructor_names_in_pickles_stay_importable() -> None:
    # Pickles already in flight name these; the registry lists them, it does not rename them.
    from shoal._frozen import _rebuild_segment
    from shoal._glue import attach_segment

    assert _entry("frozen").reconstructor is _rebuild_segment
    assert _entry("bytes").reconstructor is attach_segment
    assert _entry("array").reconstructor is _shoal.rebuild_array


# --- unknown kinds are refused with a message ------------------------------------------------

_ATTACH_REFUSED = r"""
import sys
import shoal
try:
    shoal.attach(sys.argv[1])
except Exception as e:
    print(type(e).__name__ + ": " + str(e), flush=True)
else:
    print("attached", flush=True)
"""


def test_a_handle_of_an_unknown_kind_is_refused_before_anything_is_mapped() -> None:
    seg = _shoal.Segment.create(4096)
    unknown = len(_shoal.object_kinds())
    forged = _with_kind(seg.handle(pin=False), unknown)
    want = (
        rf"shoal handle names object kind {unknown} at offset 107, unknown to this build "
        r"\(it knows bytes, array, frozen[^)]*\): it was made by a newer shoal"
    )
    with pytest.raises(shoal.DecodeError, match=want):
        _shoal.decode_handle(forged)
    with pytest.raises(shoal.DecodeError, match=want):
        shoal.attach(forged)
    with pytest.raises(shoal.DecodeError, match=f"object kind {0xDEADBEEF} at offset 107"):
        shoal.attach(_with_kind(seg.handle(pin=False), 0xDEADBEEF))
    r = run_python(_ATTACH_REFUSED, forged)
    assert r.returncode == 0, r.stderr
    assert re.fullmatch("DecodeError: " + want, r.stdout.strip()), r.stdout


def test_a_kind_cxx_knows_but_python_has_no_entry_for_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seg = _shoal.Segment.create(4096)
    bytes_kind = _kinds.KINDS[0]
    monkeypatch.setitem(_kinds.KINDS, 0, _kinds.Kind(0, "bytes", bytes_kind.description, None))
    with pytest.raises(
        shoal.IncompatibleSegmentError,
        match=r"shoal.attach: kind 0 \('bytes'\) has no Python entry in shoal._kinds",
    ):
        shoal.attach(seg.handle())


def test_a_named_segment_whose_header_names_an_unknown_kind_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOAL_NAMED_DIR", str(tmp_path))
    _shoal.Segment.create_named("kinds-test", 4096).close()
    unknown = len(_shoal.object_kinds())
    with open(tmp_path / "kinds-test", "r+b") as f:  # the header's kind field, offset 20
        f.seek(20)
        assert struct.unpack("<I", f.read(4)) == (0,)
        f.seek(20)
        f.write(struct.pack("<I", unknown))
    with pytest.raises(
        shoal.IncompatibleSegmentError,
        match=(
            rf"named segment 'kinds-test': segment kind {unknown} at offset 20 is unknown to "
            r"this build \(it knows bytes, array, frozen"
        ),
    ):
        _shoal.Segment.open_named("kinds-test")


def test_a_segment_refuses_to_be_created_with_an_unknown_kind() -> None:
    unknown = len(_shoal.object_kinds())
    with pytest.raises(
        ValueError, match=rf"unknown segment kind {unknown} \(this build knows bytes, array"
    ):
        _shoal.Segment.create(4096, kind=unknown)


# --- the CLI ---------------------------------------------------------------------------------


def test_shoal_ls_names_each_kind(capsys: pytest.CaptureFixture[str]) -> None:
    objs = {name: make() for name, make in MAKERS.items()}
    assert main(["ls"]) == 0
    out = capsys.readouterr().out
    for name, obj in objs.items():
        assert re.search(rf"^\s*{_object_id(obj)[:12]}\s+{name}\s", out, re.MULTILINE), (name, out)
