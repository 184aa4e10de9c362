"""References between objects (``Segment.add_reference`` / ``drop_reference``) with real
processes: a group of objects lives while any outside reference to it does, and goes whole,
SIGKILL included, with nothing left in the machine's Shmem (within 4 MiB of its baseline;
those tests are serial). The broker's own view (kList) is the witness otherwise.
"""

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

from shoal import _shoal
from shoal._tools.measure import machine_shmem

MIB = 1024 * 1024
BIG = 32 * MIB  # three of them: a 96 MiB group, well above the noise of Shmem
SLACK = 4 * MIB


def _objects(session: str) -> dict[str, dict[str, Any]]:
    return {o["id"]: o for o in describe_here(session)["objects"]}


# A child that makes a group A -> B, A -> C (and C -> A: a cycle too), each BIG, lets go of B and C itself, prints the ids and waits.
_GROUP = r"""
import sys
from shoal import _shoal
size = int(sys.argv[1])
a, b, c = (_shoal.Segment.create(size) for _ in range(3))  # pages reserved: in Shmem
a.add_reference(b)
a.add_reference(c)
c.add_reference(a)
ids = [a.id, b.id, c.id]
b.close()
c.close()
print(a.session, *ids, flush=True)
sys.stdin.read()
"""


@pytest.mark.serial
def test_a_group_held_by_a_sigkilled_child_leaves_nothing_in_shmem(runtime_dir: str) -> None:
    # This process keeps the session (so its broker) alive, and maps nothing of the group:
    # the broker, not its exit, must free the group.
    keep = _shoal.Segment.create(4096)
    baseline = shmem_baseline()
    with waiting_child(
        _GROUP, str(BIG), env={**os.environ, "SHOAL_SESSION": keep.session}
    ) as child:
        assert child.stdout is not None
        session, a, b, c = child.stdout.readline().split()
        assert session == keep.session
        objects = _objects(session)
        assert objects[b]["refs"] == 0 and objects[b]["referrers"] == 1
        assert objects[a]["referrers"] == 1  # from c: a cycle
        assert sorted(r["id"] for r in objects[a]["refs_out"]) == sorted([b, c])
        assert machine_shmem() - baseline >= 3 * BIG - SLACK, "the group is not in Shmem"

        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=DEADLINE) == -signal.SIGKILL
        assert wait_until(lambda: not ({a, b, c} & set(_objects(session))))
        info = describe_here(session)
        assert info["edges"] == 0 and info["collected"] >= 3
        assert info["total_bytes"] == 4096 + 64  # keep alone
        assert wait_until(lambda: machine_shmem() - baseline <= SLACK, 3 * DEADLINE), (
            f"Shmem is {(machine_shmem() - baseline) / MIB:.1f} MiB above its baseline"
        )


def test_a_referenced_object_outlives_its_holders_and_goes_with_its_referrer() -> None:
    a = _shoal.Segment.create(4096)
    b = _shoal.Segment.create(4096)
    memoryview(b)[0] = 42
    a.add_reference(b)
    a.add_reference(b)  # counted
    handle = b.handle(pin=False)
    bid = b.id
    b.close()
    assert _objects(a.session)[bid]["referrers"] == 1
    assert _objects(a.session)[a.id]["refs_out"] == [{"id": bid, "count": 2}]
    # Another process attaches it by an unpinned handle: only the reference keeps it.
    got = run_python(
        "import sys; from shoal import _shoal; "
        "print(memoryview(_shoal.Segment.attach(sys.argv[1]))[0])",
        handle,
    )
    assert got.returncode == 0, got.stderr
    assert got.stdout.strip() == "42"
    a.drop_reference(bid)  # by id: this process no longer maps b
    assert bid in _objects(a.session)
    a.drop_reference(bid)
    assert wait_until(lambda: bid not in _objects(a.session))
    with pytest.raises(_shoal.StaleHandleError):
        _shoal.Segment.attach(handle)


def test_a_cycle_nothing_holds_goes_at_collect_and_gc_cycles(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from shoal.cli import main

    keep = _shoal.Segment.create(64)
    a = _shoal.Segment.create(4096)
    b = _shoal.Segment.create(4096)
    a.add_reference(b)
    b.add_reference(a)
    ids = {a.id, b.id}
    a.close()
    b.close()
    assert ids <= set(_objects(keep.session))  # counting cannot free a cycle

    assert main(["ls"]) == 0
    out = capsys.readouterr().out
    assert "REFERS TO" in out and "REFERRED BY" in out
    assert "references: 2 edge(s) between objects" in out

    assert main(["gc", "--cycles"]) == 0
    out = capsys.readouterr().out
    assert f"freed 2 object(s) in unreachable reference cycles in session {keep.session}" in out
    assert not ids & set(_objects(keep.session))
    assert describe_here(keep.session)["collected"] == 2


def test_bad_references_raise_clear_errors() -> None:
    a = _shoal.Segment.create(64)
    b = _shoal.Segment.create(64)
    b.close()
    with pytest.raises(ValueError, match="closed"):
        a.add_reference(b)
    with pytest.raises(ValueError, match="32 hex digits"):
        a.drop_reference("nope")
    with pytest.raises(TypeError):
        a.add_reference("not a segment")  # type: ignore[arg-type]
    a.drop_reference("0" * 31 + "1")  # never added: nothing happens
