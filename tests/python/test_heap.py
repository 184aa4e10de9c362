"""shoal heaps (C++ shoal::Heap through _shoal.Heap) across real processes: growth that another
process sees by mapping new extents on demand, the extents listed as the root's references by
the broker and `shoal ls`, a SIGKILLed holder of a grown heap leaving nothing in the machine's
Shmem (serial), and a lock holder killed mid-allocation recovered from."""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest
from conftest import (
    DEADLINE,
    describe_here,
    run_python,
    shmem_baseline,
    wait_until,
    waiting_child,
)

import shoal
from shoal import _shoal
from shoal._tools.measure import machine_shmem

MIB = 1 << 20
SLACK = 4 * MIB


def _objects(session: str) -> dict[str, dict[str, Any]]:
    return {o["id"]: o for o in describe_here(session)["objects"]}


def test_blocks_written_here_are_read_there_and_growth_there_is_seen_here() -> None:
    h = _shoal.Heap.create(64 * 1024)
    ref = h.allocate(1000)
    h.write(ref, b"hello from the parent")
    code = r"""
import sys
from shoal import _shoal
h = _shoal.Heap.attach(sys.argv[1])
assert h.read(int(sys.argv[2]), 21) == b"hello from the parent"
refs = []
for i in range(30):  # 30 x 200 KiB: the heap grows past its 64 KiB root
    r = h.allocate(200 * 1024)
    h.write(r, bytes([i]) * 200 * 1024)
    refs.append(r)
print(h.extent_count, *refs, flush=True)
"""
    r = run_python(code, h.handle(), str(ref))
    assert r.returncode == 0, r.stderr
    extents, *refs = (int(x) for x in r.stdout.split())
    assert extents > 1
    assert h.extent_count == extents
    for i, b in enumerate(refs):  # each read maps an extent this process had not seen
        assert h.read(b, 200 * 1024) == bytes([i]) * 200 * 1024
    report = h.check()
    assert report["used_blocks"] == 31 and report["pending_blocks"] == 0
    for b in refs:
        h.free(b)
    assert h.check()["used_blocks"] == 1


def test_the_extents_are_the_roots_references_in_the_broker_and_in_shoal_ls(
    capsys: pytest.CaptureFixture[str],
) -> None:
    h = _shoal.Heap.create(64 * 1024)
    for _ in range(4):
        h.allocate(1 * MIB)
    session = _shoal.Segment.attach(h.handle()).session
    objects = _objects(session)
    root = objects[h.id]
    extents = [o for o in objects.values() if o["kind"] == 4]  # kind "extent"
    assert len(extents) == h.extent_count - 1 >= 1
    assert sorted(r["id"] for r in root["refs_out"]) == sorted(o["id"] for o in extents)
    assert all(o["referrers"] == 1 for o in extents)
    from shoal.cli import main

    assert main(["ls"]) == 0
    out = capsys.readouterr().out
    assert "heap" in out and "extent" in out


def test_bad_refs_and_double_frees_raise_instead_of_corrupting() -> None:
    h = _shoal.Heap.create()
    ref = h.allocate(64)
    h.free(ref)
    with pytest.raises(shoal.InvalidArgumentError, match="already free"):
        h.free(ref)
    with pytest.raises(shoal.CorruptSegmentError, match="no published extent"):
        h.read((9 << 48) | 4096, 8)
    with pytest.raises(shoal.ShoalError):
        h.free(0)
    live = h.allocate(64)
    with pytest.raises(ValueError, match="below 2\\*\\*48"):
        h.read(live, 8, offset=1 << 50)  # never carried into the Ref's extent bits
    with pytest.raises(shoal.CorruptSegmentError):
        h.write(live, b"x" * 8, offset=1 << 40)  # past the extent: refused, nothing written
    h.free(live)
    with pytest.raises(shoal.InvalidArgumentError, match="largest block"):
        h.allocate(1 << 40)
    assert h.check()["used_blocks"] == 0


def test_growth_past_the_byte_limit_raises_out_of_space_and_adds_nothing() -> None:
    code = r"""
import shoal
from shoal import _shoal
h = _shoal.Heap.create(64 * 1024)
before = h.extent_count
try:
    h.allocate(64 << 20)
except shoal.OutOfSpaceError as e:
    print("refused", h.extent_count == before, h.check()["used_blocks"], str(e)[:60])
"""
    r = run_python(code, env={**os.environ, "SHOAL_MAX_BYTES": "16M"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("refused True 0"), r.stdout


# A child that allocates a pending block, never commits it, and waits to be killed.
_DIE_WITH_A_PENDING_BLOCK = r"""
import sys
from shoal import _shoal
h = _shoal.Heap.attach(sys.argv[1])
h.allocate_pending(5000)  # pending, never committed: the next check frees it
print("ready", flush=True)
sys.stdin.read()
"""


def test_a_pending_block_of_a_killed_process_is_reclaimed_by_the_next_check() -> None:
    h = _shoal.Heap.create()
    kept = h.allocate(100)
    with waiting_child(_DIE_WITH_A_PENDING_BLOCK, h.handle()) as child:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        assert h.check()["pending_blocks"] == 1  # its owner lives
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=DEADLINE) == -signal.SIGKILL
        report = h.check()
        assert report["pending_blocks"] == 0 and report["used_blocks"] == 1
        assert h.stats()["reclaimed"] == 1
        assert h.usable_size(kept) >= 100


# A child that grows a heap to about 96 MiB in several extents, prints its session and ids,
# then waits to be killed.
_GROW = r"""
import sys
from shoal import _shoal
h = _shoal.Heap.create(1 << 20)
for i in range(12):
    h.write(h.allocate(8 << 20), b"x" * 4096)
print(_shoal.Segment.attach(h.handle()).session, h.id, h.extent_count, flush=True)
sys.stdin.read()
"""


@pytest.mark.serial
def test_a_grown_heap_held_by_a_sigkilled_child_leaves_nothing_in_shmem(runtime_dir: str) -> None:
    # This process keeps the session's broker alive and maps nothing of the heap: the broker
    # must free the root and, through its references, every extent.
    keep = _shoal.Segment.create(4096)
    baseline = shmem_baseline()
    with waiting_child(_GROW, env={**os.environ, "SHOAL_SESSION": keep.session}) as child:
        assert child.stdout is not None
        session, root, extents = child.stdout.readline().split()
        assert session == keep.session and int(extents) >= 3
        objects = _objects(session)
        assert len(objects[root]["refs_out"]) == int(extents) - 1
        assert machine_shmem() - baseline >= 90 * MIB, "the heap is not in Shmem"
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=DEADLINE) == -signal.SIGKILL
        assert wait_until(lambda: set(_objects(session)) == {keep.id})
        assert describe_here(session)["total_bytes"] == 4096 + 64
        assert wait_until(lambda: machine_shmem() - baseline <= SLACK, 3 * DEADLINE), (
            f"Shmem is {(machine_shmem() - baseline) / MIB:.1f} MiB above its baseline"
        )
