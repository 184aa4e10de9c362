"""The memory targets of frozen object graphs (seeds 000 and 001), measured on real processes.

- A child that iterates every element of a frozen list of 10**7 ints, or looks up every key of
  a frozen dict of 2**20 entries, grows its private memory by less than max(1% of the image
  (view.nbytes), 4 MiB), under fork and under spawn, the view being a Process argument.
  "Private" is read two ways: Anonymous growth (shoal._tools.measure, from smaps_rollup: new private
  pages, what an unpickled copy costs) and private anonymous growth
  (shoal._tools.measure.private_anonymous, from smaps: per mapping min(Anonymous,
  Private_Dirty), which also sees copy-on-write copies under fork; the rollup's Anonymous
  counts an inherited page before and after its copy, and its Private_Dirty and USS count
  the image's shared pages while no other process maps them).
- The contrast, seed 000's complaint: a plain list iterated by a forked child is copied page by
  page (every element's refcount is written); its private anonymous memory (and USS) grows
  by more than half the list.
- With two readers there is one copy: the machine's Shmem grows by at most one image, and the
  readers' and the creator's PSS of shared memory add up to one image; the Shmem goes back
  down once the last process has dropped it.

Serial: they read the machine's Shmem and need quiet neighbours.
"""

from __future__ import annotations

import gc
import multiprocessing as mp
import sys
from multiprocessing.connection import Connection
from typing import Any

import pytest
from conftest import DEADLINE, wait_until

import shoal
from shoal._tools.measure import (
    ProcMem,
    diff,
    fmt_bytes,
    machine_shmem,
    private_anonymous,
    proc_mem,
    settled_shmem,
    shmem_growth,
)

pytestmark = pytest.mark.serial

MIB = 1 << 20
LIST_N = 10**7
DICT_N = 1 << 20
FLOOR = 4 * MIB
SLACK = 4 * MIB


def _limit(nbytes: int) -> int:
    return max(nbytes // 100, FLOOR)


def _memory_now() -> tuple[ProcMem, int]:
    return proc_mem(), private_anonymous()


class _Before:
    """Unpickles to the child's memory at that moment: placed before the view in a Process's
    arguments, it measures the child before the view arrives (its attach is counted too).
    Under fork nothing is pickled and the child reads its memory when it starts."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_memory_now, ())


def _reader(mark: Any, view: Any, what: str, conn: Connection) -> None:
    """Read all of `view` (iterate it, or look up every key 0..len-1); report the growth of this
    process's memory; hold on to it until the parent has measured."""
    before, private = mark if isinstance(mark, tuple) else _memory_now()
    total = 0
    if what == "iterate":
        for x in view:
            total += x
    else:
        for k in range(len(view)):
            total += len(view[k])
    after = proc_mem()
    conn.send(
        {
            "growth": diff(after, before),
            "private": private_anonymous() - private,
            "total": total,
            "type": type(view).__name__,
        }
    )
    conn.recv()
    conn.close()


def _read_in_children(ctx: Any, view: Any, what: str, readers: int = 1) -> list[dict[str, Any]]:
    """Start `readers` children on `view`; return their reports, taken while all still hold it,
    each with the child's pid and PSS at that moment."""
    conns, procs = [], []
    try:
        for _ in range(readers):
            mine, theirs = ctx.Pipe()
            p = ctx.Process(target=_reader, args=(_Before(), view, what, theirs))
            p.start()
            theirs.close()
            conns.append(mine)
            procs.append(p)
        reports = []
        for c, p in zip(conns, procs, strict=True):
            assert c.poll(DEADLINE * 4), "a reader did not report"
            r = c.recv()
            r["pid"] = p.pid
            r["now"] = proc_mem(p.pid)
            reports.append(r)
        return reports
    finally:
        for c in conns:
            try:
                c.send("done")
            except OSError:
                pass
        for p in procs:
            p.join(DEADLINE)
            assert p.exitcode == 0, f"reader exited with {p.exitcode}"
        for c in conns:
            c.close()


def _show(label: str, r: dict[str, Any], nbytes: int) -> None:
    g: ProcMem = r["growth"]
    print(
        f"{label}: Anonymous {fmt_bytes(g.anonymous)}, private anonymous {fmt_bytes(r['private'])}, "
        f"USS {fmt_bytes(g.uss)}, PSS {fmt_bytes(g.pss)} (of {fmt_bytes(nbytes)}: "
        f"{r['private'] / nbytes:.1%} private anonymous)"
    )


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_iterating_a_frozen_list_of_ten_million_ints_copies_nothing(method: str) -> None:
    plain = list(range(LIST_N))
    view = shoal.freeze(plain)
    del plain
    gc.collect()
    nbytes = view.nbytes
    assert nbytes >= 8 * LIST_N
    (r,) = _read_in_children(mp.get_context(method), view, "iterate")
    g: ProcMem = r["growth"]
    _show(f"frozen list, {method} child", r, nbytes)
    assert r["type"] == "FrozenList" and r["total"] == LIST_N * (LIST_N - 1) // 2
    assert g.anonymous < _limit(nbytes), fmt_bytes(g.anonymous)
    assert r["private"] < _limit(nbytes), fmt_bytes(r["private"])
    assert r["now"].pss_shmem > nbytes // 4  # it did map and read the shared pages


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_looking_up_every_key_of_a_frozen_dict_copies_nothing(method: str) -> None:
    cache = {i: bin(i) for i in range(DICT_N)}
    expect = sum(len(v) for v in cache.values())
    view = shoal.freeze(cache)
    del cache
    gc.collect()
    nbytes = view.nbytes
    (r,) = _read_in_children(mp.get_context(method), view, "lookup")
    g: ProcMem = r["growth"]
    _show(f"frozen dict, {method} child", r, nbytes)
    assert r["type"] == "FrozenDict" and r["total"] == expect
    assert g.anonymous < _limit(nbytes), fmt_bytes(g.anonymous)
    assert r["private"] < _limit(nbytes), fmt_bytes(r["private"])
    assert r["now"].pss_shmem > nbytes // 4


def test_a_plain_list_iterated_under_fork_is_copied() -> None:
    # Seed 000's complaint, the measurement the frozen tests rely on: it must see the copy.
    plain = list(range(LIST_N))
    size = sys.getsizeof(plain) + sum(sys.getsizeof(x) for x in plain)
    (r,) = _read_in_children(mp.get_context("fork"), plain, "iterate")
    g: ProcMem = r["growth"]
    _show("plain list, fork child", r, size)
    assert r["total"] == LIST_N * (LIST_N - 1) // 2
    assert r["private"] > size // 2, fmt_bytes(r["private"])
    assert g.uss > size // 2, fmt_bytes(g.uss)


def test_two_readers_share_one_copy_and_it_is_freed_after() -> None:
    base = settled_shmem()
    view = shoal.freeze(list(range(LIST_N)))
    gc.collect()
    nbytes = view.nbytes
    reports = []
    ctx = mp.get_context("spawn")
    conns, procs = [], []
    try:
        for _ in range(2):
            mine, theirs = ctx.Pipe()
            p = ctx.Process(target=_reader, args=(_Before(), view, "iterate", theirs))
            p.start()
            theirs.close()
            conns.append(mine)
            procs.append(p)
        for c in conns:
            assert c.poll(DEADLINE * 4), "a reader did not report"
            reports.append(c.recv())
        pss_shmem = proc_mem().pss_shmem + sum(proc_mem(p.pid).pss_shmem for p in procs)
        growth, readings = shmem_growth(base, nbytes + SLACK)
        print(
            f"Shmem grew by {fmt_bytes(growth)} (least of {readings}), PSS of shared memory "
            f"{fmt_bytes(pss_shmem)}, for an image of {fmt_bytes(nbytes)} and 2 readers"
        )
    finally:
        for c in conns:
            c.send("done")
        for p in procs:
            p.join(DEADLINE)
    assert all(p.exitcode == 0 for p in procs)
    for r in reports:
        assert r["growth"].anonymous < _limit(nbytes)
        assert r["private"] < _limit(nbytes)
    # Shmem is machine-wide (neighbours free theirs meanwhile): it bounds the copies from above;
    # PSS, split between the processes that map a page, counts them from below.
    assert growth <= nbytes + SLACK, (growth, readings)
    assert 0.95 * nbytes <= pss_shmem <= nbytes + SLACK, fmt_bytes(pss_shmem)
    del view
    gc.collect()
    # Pickled handles leave a pin (SHOAL_PIN_TTL, 5 s in tests); then the memory goes.
    assert wait_until(lambda: machine_shmem() <= base + SLACK), fmt_bytes(machine_shmem() - base)
