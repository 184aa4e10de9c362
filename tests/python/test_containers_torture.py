"""The containers' torture test (issue 15, item 4): processes doing random operations on shared
containers, SIGKILLed at random points hundreds of times.

WORKERS forked worker processes share one shoal.Dict: worker slot s owns the keys s*1000 ..
s*1000+KEYS-1 in it and writes only those (set, del, pop, setdefault), so all of them contend
for its write lock and its table, which grows and shrinks as keys come and go. Each slot also
has a Dict of its own where it does popitem and clear too, and (when shoal has a List) a List of
its own: append, pop, insert, slice assignment, slice deletion, sort. Values are strs of 1 to
about 1000 bytes, so the heap's blocks vary in size. The parent SIGKILLs a random worker at a
random moment and starts a new one in its slot.

Exact accounting. Each worker keeps a model of what it owns (a dict, a dict and a list, Python's
own, whose semantics the shoal containers must have) and writes to its journal, one write() of a
whole line each, "I seq op key" before an operation and "D seq" after it returned. After a kill
the parent replays the dead worker's journal from the state the worker started with: every
operation that returned ("D") must be there, and the one it was killed in (a last "I" with no
"D") must be wholly done or wholly undone, never half. So the slot's actual state must equal the
replay without that operation or with it. Before checking, the parent runs every container's
check() (the C++ invariants D1-D8 and the heap's, after the repair of a dead writer's operation),
which also proves the lock can be taken. A worker that is stopped (not killed) must match its
replay exactly. At the end nothing may hang, and once the containers and every process are gone
the machine's Shmem is back to its baseline.

SHOAL_CONTAINERS_TORTURE_SECONDS (default 20, as `make test` runs it) bounds the run,
SHOAL_CONTAINERS_TORTURE_SEED seeds it (random by default; printed on failure). `make
torture-containers` runs it for 300 s.
"""

from __future__ import annotations

import gc
import multiprocessing as mp
import os
import random
import signal
import time
import types
import warnings
from typing import Any

import pytest
from conftest import DEADLINE, describe_here, shmem_baseline, wait_until

import shoal
from shoal import OwnerDiedWarning
from shoal._tools.measure import MIB, SHMEM_SLACK, wait_shmem_back

SECONDS = float(os.environ.get("SHOAL_CONTAINERS_TORTURE_SECONDS", "20"))
HAVE_LIST = hasattr(shoal, "List")

WORKERS = 4
KEYS = 48  # keys per slot in the shared dict (own keys of the private dict: KEYS too)
LIST_MAX = 64
BALLAST = 16 * MIB

# Operation codes of the journal.
SET, DEL, POP, SETDEFAULT = "s", "x", "p", "d"  # the shared dict, own keys
PSET, PDEL, PPOPITEM, PCLEAR, PSETDEFAULT = "S", "X", "I", "C", "D"  # the slot's own dict
LAPPEND, LPOP, LINSERT, LSETSLICE, LDELSLICE, LSORT = "a", "o", "n", "l", "e", "t"  # its list

Model = tuple[dict[int, str], dict[int, str], list[str]]


def value(seq: int) -> str:
    """The value an operation stores: a function of its sequence number alone."""
    s = str(seq)
    return s * (1 + seq % 97) if seq % 3 == 0 else s


def apply(m: Model, op: str, key: int, seq: int) -> None:
    """One operation on the model (the worker chose it so that it cannot fail)."""
    shared, own, lst = m
    v = value(seq)
    if op == SET:
        shared[key] = v
    elif op in (DEL, POP):
        del shared[key]
    elif op == SETDEFAULT:
        shared.setdefault(key, v)
    elif op == PSET:
        own[key] = v
    elif op == PDEL:
        del own[key]
    elif op == PPOPITEM:
        own.popitem()
    elif op == PCLEAR:
        own.clear()
    elif op == PSETDEFAULT:
        own.setdefault(key, v)
    elif op == LAPPEND:
        lst.append(v)
    elif op == LPOP:
        lst.pop()
    elif op == LINSERT:
        lst.insert(key % (len(lst) + 1), v)
    elif op == LSETSLICE:
        a = key % (len(lst) + 1)
        lst[a : a + 3] = [v, v + "!"]
    elif op == LDELSLICE:
        a = key % (len(lst) + 1)
        del lst[a : a + 2]
    elif op == LSORT:
        lst.sort(reverse=bool(key & 1))
    else:
        raise AssertionError(f"unknown op {op!r}")


def do(c: tuple[Any, Any, Any], op: str, key: int, seq: int) -> None:
    """The same operation on the shared containers."""
    d, own, lst = c
    v = value(seq)
    if op == SET:
        d[key] = v
    elif op == DEL:
        del d[key]
    elif op == POP:
        assert d.pop(key) is not None
    elif op == SETDEFAULT:
        d.setdefault(key, v)
    elif op == PSET:
        own[key] = v
    elif op == PDEL:
        del own[key]
    elif op == PPOPITEM:
        own.popitem()
    elif op == PCLEAR:
        own.clear()
    elif op == PSETDEFAULT:
        own.setdefault(key, v)
    elif op == LAPPEND:
        lst.append(v)
    elif op == LPOP:
        lst.pop()
    elif op == LINSERT:
        lst.insert(key % (len(lst) + 1), v)
    elif op == LSETSLICE:
        a = key % (len(lst) + 1)
        lst[a : a + 3] = [v, v + "!"]
    elif op == LDELSLICE:
        a = key % (len(lst) + 1)
        del lst[a : a + 2]
    elif op == LSORT:
        lst.sort(reverse=bool(key & 1))


def choose(rng: random.Random, m: Model, slot: int) -> tuple[str, int]:
    """A random operation that the model says cannot fail."""
    shared, own, lst = m
    x = rng.random()
    if x < 0.45:
        key = slot * 1000 + rng.randrange(KEYS)
        if key in shared and rng.random() < 0.45:
            return rng.choice((DEL, POP)), key
        return (SETDEFAULT if rng.random() < 0.1 else SET), key
    if x < 0.75 or not HAVE_LIST:
        key = rng.randrange(KEYS)
        y = rng.random()
        if y < 0.01:
            return PCLEAR, 0
        if own and y < 0.1:
            return PPOPITEM, 0
        if key in own and y < 0.45:
            return PDEL, key
        return (PSETDEFAULT if y > 0.9 else PSET), key
    key = rng.randrange(1 << 16)
    y = rng.random()
    if y < 0.05:
        return LSORT, key
    if lst and (len(lst) >= LIST_MAX or y < 0.3):
        return rng.choice((LPOP, LDELSLICE, LSETSLICE)), key
    return rng.choice((LAPPEND, LAPPEND, LINSERT, LSETSLICE)), key


def actual(c: tuple[Any, Any, Any], slot: int) -> Model:
    """What the containers hold of this slot (nobody writes them meanwhile)."""
    d, own, lst = c
    shared = {k: d[k] for k in d if k // 1000 == slot}  # keys only: not the ballast's value
    return shared, dict(own.items()), list(lst) if lst is not None else []


def _worker(journal: str, c: tuple[Any, Any, Any], slot: int, seed: int, stop: Any) -> None:
    warnings.simplefilter("ignore", OwnerDiedWarning)
    rng = random.Random(seed)
    m = actual(c, slot)
    fd = os.open(journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    seq = seed * 10**7  # distinct values across workers and generations
    while not stop.is_set():
        seq += 1
        op, key = choose(rng, m, slot)
        os.write(fd, b"I %d %s %d\n" % (seq, op.encode(), key))
        do(c, op, key, seq)
        os.write(fd, b"D %d\n" % seq)
        apply(m, op, key, seq)
    os.close(fd)


def _records(path: str) -> list[tuple[str, int, str, int]]:
    """The journal's whole records (a SIGKILL may cut the last one short: it is dropped)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    out = []
    for line in data.split(b"\n")[:-1]:
        p = line.decode().split()
        if p[0] == "I" and len(p) == 4:
            out.append(("I", int(p[1]), p[2], int(p[3])))
        elif p[0] == "D" and len(p) == 2:
            out.append(("D", int(p[1]), "", 0))
    return out


def replay(start: Model, journal: str, killed: bool, info: str) -> tuple[Model, Model | None]:
    """The state after every operation that returned, and (for a killed worker whose last
    operation had not) the state with that operation done too."""
    m: Model = (dict(start[0]), dict(start[1]), list(start[2]))
    pending: tuple[int, str, int] | None = None
    for kind, seq, op, key in _records(journal):
        if kind == "I":
            assert pending is None, f"two intents without a done {info}"
            pending = (seq, op, key)
        else:
            assert pending is not None and pending[0] == seq, f"a done without its intent {info}"
            apply(m, pending[1], pending[2], seq)
            pending = None
    if pending is None:
        return m, None
    assert killed, f"a stopped worker left an operation pending {info}"
    with_it: Model = (dict(m[0]), dict(m[1]), list(m[2]))
    apply(with_it, pending[1], pending[2], pending[0])
    return m, with_it


def same(a: Model, b: Model) -> bool:
    # Insertion order matters (popitem and iteration follow it), hence the lists of items.
    return list(a[0].items()) == list(b[0].items()) and (
        list(a[1].items()) == list(b[1].items()) and a[2] == b[2]
    )


def check_all(containers: list[Any], info: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OwnerDiedWarning)
        for c in containers:
            c._check()


@pytest.mark.slow
@pytest.mark.serial  # reads the machine's Shmem
def test_torture_containers_sigkill(tmp_path: os.PathLike[str]) -> None:
    seed = int(os.environ.get("SHOAL_CONTAINERS_TORTURE_SEED", str(random.randrange(1 << 20))))
    rng = random.Random(seed)
    info = f"(SHOAL_CONTAINERS_TORTURE_SEED={seed} SHOAL_CONTAINERS_TORTURE_SECONDS={SECONDS:g})"
    baseline = shmem_baseline()
    ctx = mp.get_context("fork")
    stop = shoal.Event()
    anchor = shoal.Dict()  # names the session; the broker counts its bytes (Shmem is machine-wide)
    session = anchor.segment().session
    before = describe_here(session)["total_bytes"]
    w = types.SimpleNamespace()  # the containers, released at the end
    w.d = d = shoal.Dict()
    # Ballast that no worker touches (no slot owns key -1): with it the containers hold more
    # than the Shmem slack, so the session's bytes and Shmem back to their baselines at the end
    # mean they were freed.
    d[-1] = b"b" * BALLAST
    w.owns = owns = [shoal.Dict() for _ in range(WORKERS)]
    w.lists = lists = [shoal.List() for _ in range(WORKERS)] if HAVE_LIST else [None] * WORKERS
    w.containers = containers = [d, *owns, *(x for x in lists if x is not None)]
    live: dict[int, tuple[Any, str, Model]] = {}
    del d, owns, lists, containers  # only through w: released at the end
    n_journals = 0
    kills = verified = pending_seen = 0

    def spawn(slot: int) -> None:
        nonlocal n_journals
        journal = os.path.join(os.fspath(tmp_path), f"j{n_journals}")
        n_journals += 1
        c = (w.d, w.owns[slot], w.lists[slot])
        start = actual(c, slot)
        p = ctx.Process(target=_worker, args=(journal, c, slot, rng.randrange(1, 1000), stop))
        p.start()
        live[slot] = (p, journal, start)

    def verify(slot: int, killed: bool) -> None:
        nonlocal verified, pending_seen
        _, journal, start = live[slot]
        without, with_it = replay(start, journal, killed, info)
        now = actual((w.d, w.owns[slot], w.lists[slot]), slot)
        pending_seen += with_it is not None
        ok = same(now, without) or (with_it is not None and same(now, with_it))
        assert ok, (
            f"slot {slot}: the containers hold neither the replay without nor with the "
            f"interrupted operation ({_records(journal)[-2:]}); actual {now}, replay {without} "
            f"{info}"
        )
        verified += 1

    for slot in range(WORKERS):
        spawn(slot)
    min_kills = min(100, int(SECONDS * 3))
    # A busy machine kills more slowly: the run goes on past SECONDS until it has made
    # min_kills kills (at most 4x longer), so the floor asserted below checks the run, not the
    # machine's speed.
    end = time.monotonic() + SECONDS
    ceiling = end + 4 * SECONDS
    try:
        while (now := time.monotonic()) < end or (kills < min_kills and now < ceiling):
            time.sleep(rng.uniform(0.0, 0.03))
            slot = rng.randrange(WORKERS)
            p = live[slot][0]
            os.kill(p.pid, signal.SIGKILL)
            p.join(DEADLINE)
            assert p.exitcode == -signal.SIGKILL, f"worker exit {p.exitcode} {info}"
            kills += 1
            check_all(w.containers, info)  # repairs the dead writer's operation, if any
            verify(slot, killed=True)
            spawn(slot)
        stop.set()
        hung = []
        for p, _, _ in live.values():
            p.join(DEADLINE)
            if p.exitcode is None:
                hung.append(p.pid)
        assert not hung, f"workers {hung} did not return within {DEADLINE} s {info}"
        for p, _, _ in live.values():
            assert p.exitcode == 0, f"a live worker failed: exit {p.exitcode} {info}"
    finally:
        stop.set()
        for p, _, _ in live.values():
            if p.exitcode is None:
                p.kill()
                p.join()

    check_all(w.containers, info)
    for slot in range(WORKERS):
        verify(slot, killed=False)
    recoveries = sum(c._stats()["recoveries"] for c in w.containers)
    # About 7 kills a second here (each is followed by a check, a replay and a fork): 20 s give
    # over a hundred; a loaded machine fewer.
    assert kills >= min_kills, f"only {kills} kills {info}"
    # Most of a worker's time is Python between operations: a short run may never kill one
    # inside an operation; hundreds of kills do (a repair is the point of the test).
    assert recoveries > 0 or kills < 100, f"no kill ever landed inside an operation {info}"
    print(
        f"containers torture: {kills} kills, {verified} verified states, {pending_seen} "
        f"operations interrupted between intent and report, {recoveries} repaired by the next "
        f"writer, list {'on' if HAVE_LIST else 'off (no shoal.List)'} {info}"
    )

    # Everything gone: the containers' memory (their heaps' extents too) back to the kernel.
    assert describe_here(session)["total_bytes"] >= before + BALLAST, f"no ballast {info}"
    assert w.d[-1] == b"b" * BALLAST, f"the ballast changed {info}"
    w.__dict__.clear()
    gc.collect()
    assert wait_until(lambda: describe_here(session)["total_bytes"] <= before), (
        f"the containers' objects are still in the session {info}"
    )
    assert wait_shmem_back(baseline, SHMEM_SLACK, patience=DEADLINE), f"Shmem not back {info}"


if __name__ == "__main__":
    raise SystemExit(pytest.main(["-q", "-s", __file__]))
