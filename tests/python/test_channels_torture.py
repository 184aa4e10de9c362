"""The channels torture test (issue 16): producers and consumers of one shoal.Queue SIGKILLed at
random points, hundreds of times.

PRODUCERS producer and CONSUMERS consumer processes (fork) share one bounded shoal.Queue, so
producers also block in put and consumers in get. The parent SIGKILLs a random one every few
milliseconds, wherever it is (in put, in get, between the two, writing its journal), and starts
a new one in its place. A message is (producer id, sequence number, CRC-32 of the payload,
payload); one in eight payloads is large (a 256 KiB bytes or ndarray: out of band).

Exact accounting through journals (one write() of one whole record each, to an O_APPEND file;
only whole records are read, as a kill can cut the last one short):
- a producer writes "I k s" before putting its message s and "P k s" once put returned;
- a consumer writes "G k s" once get returned it, and "X k s" if its payload fails its CRC.
Then: no message is received twice (over all consumers and the parent's final drain); none
is corrupt; each received message was put (its "I" record exists); every message whose put
returned ("P") is received, except at most one per killed consumer (it may die holding what
its get returned, before its record: issue 16's "a consumer killed in get loses at most the
message it was taking"). Nothing is stuck: at the end every live process stops within a
deadline, the queue still takes and gives a message, and once the queue and every process
are gone the machine's Shmem is back at its baseline.

SHOAL_CHANNELS_TORTURE_SECONDS (default 20, as `make test` runs it) bounds the run,
SHOAL_CHANNELS_TORTURE_SEED seeds it (random by default; printed, and on failure).
`make torture-channels` runs it for 300 s.
"""

from __future__ import annotations

import gc
import multiprocessing as mp
import os
import queue
import random
import signal
import time
import zlib
from typing import Any

import numpy as np
import pytest
from conftest import DEADLINE, shmem_baseline

import shoal
from shoal._tools.measure import SHMEM_SLACK, machine_shmem, wait_shmem_back

SECONDS = float(os.environ.get("SHOAL_CHANNELS_TORTURE_SECONDS", "20"))
PRODUCERS = 2
CONSUMERS = 2
MAXSIZE = 64  # a bound, so producers block in put too
LARGE = 256 << 10


def _payload(rng: random.Random, s: int) -> Any:
    if s % 8 == 7:
        raw = rng.randbytes(LARGE)
        return raw if s % 16 == 7 else np.frombuffer(raw, dtype=np.uint8).copy()
    return rng.randbytes(rng.randrange(0, 200))


def _producer(k: int, seed: int, journal: str, q: Any, stop: Any) -> None:
    fd = os.open(journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    rng = random.Random(seed)
    s = 0
    while not stop.is_set():
        payload = _payload(rng, s)
        crc = zlib.crc32(bytes(payload))
        os.write(fd, b"I %d %d\n" % (k, s))
        while True:
            try:
                q.put((k, s, crc, payload), timeout=0.05)
                break
            except queue.Full:
                if stop.is_set():
                    os.close(fd)
                    return
        os.write(fd, b"P %d %d\n" % (k, s))
        s += 1
    os.close(fd)


def _check(msg: Any) -> tuple[int, int, bool]:
    k, s, crc, payload = msg
    return k, s, zlib.crc32(bytes(payload)) == crc


def _consumer(journal: str, q: Any, stop: Any) -> None:
    fd = os.open(journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    while True:
        try:
            msg = q.get(timeout=0.05)
        except queue.Empty:
            if stop.is_set():
                break
            continue
        k, s, ok = _check(msg)
        os.write(fd, b"%s %d %d\n" % (b"G" if ok else b"X", k, s))
        del msg
    os.close(fd)


def _records(path: str) -> list[tuple[str, int, int]]:
    """The journal's whole records (a kill may cut the last one short: it is left out)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    out = []
    for line in data.split(b"\n")[:-1]:
        parts = line.split()
        kind_ok = len(parts) == 3 and parts[0] in (b"I", b"P", b"G", b"X")
        if kind_ok and parts[1].isdigit() and parts[2].isdigit():
            out.append((parts[0].decode(), int(parts[1]), int(parts[2])))
    return out


@pytest.mark.slow
@pytest.mark.serial  # its last check reads the machine's Shmem
def test_torture_sigkill_producers_and_consumers(tmp_path: os.PathLike[str]) -> None:
    seed = int(os.environ.get("SHOAL_CHANNELS_TORTURE_SEED", str(random.randrange(1 << 32))))
    rng = random.Random(seed)
    info = f"(SHOAL_CHANNELS_TORTURE_SEED={seed} SHOAL_CHANNELS_TORTURE_SECONDS={SECONDS:g})"
    ctx = mp.get_context("fork")
    base = shmem_baseline()
    q = shoal.Queue(MAXSIZE)
    stop = shoal.Event()
    journals: list[str] = []
    next_id = 0
    # slot -> (process, role, journal); producers are slots 0..PRODUCERS-1
    live: dict[int, tuple[Any, str, str]] = {}

    def start(slot: int, q: Any, stop: Any) -> None:
        nonlocal next_id
        journal = os.path.join(os.fspath(tmp_path), f"j{next_id}")
        journals.append(journal)
        if slot < PRODUCERS:
            args: tuple[Any, ...] = (next_id, rng.randrange(1 << 32), journal, q, stop)
            p = ctx.Process(target=_producer, args=args)
            role = "producer"
        else:
            p = ctx.Process(target=_consumer, args=(journal, q, stop))
            role = "consumer"
        next_id += 1
        p.start()
        live[slot] = (p, role, journal)

    for slot in range(PRODUCERS + CONSUMERS):
        start(slot, q, stop)
    kills = {"producer": 0, "consumer": 0}
    min_kills = min(100, int(SECONDS * 5))
    # A busy machine kills more slowly: the run goes on past SECONDS until it has made
    # min_kills kills (at most 4x longer), so the floor asserted below checks the run, not the
    # machine's speed.
    end = time.monotonic() + SECONDS
    ceiling = end + 4 * SECONDS
    try:
        while (now := time.monotonic()) < end or (
            sum(kills.values()) < min_kills and now < ceiling
        ):
            time.sleep(rng.uniform(0.0, 0.03))
            slot = rng.randrange(PRODUCERS + CONSUMERS)
            p, role, _ = live[slot]
            os.kill(p.pid, signal.SIGKILL)
            p.join(DEADLINE)
            assert p.exitcode == -signal.SIGKILL, f"{role} exit {p.exitcode} {info}"
            kills[role] += 1
            start(slot, q, stop)
        stop.set()
        hung = []
        for p, role, _ in live.values():
            p.join(DEADLINE)
            if p.exitcode is None:
                hung.append((role, p.pid))
        assert not hung, f"{hung} did not return within {DEADLINE} s {info}"
        for p, role, _ in live.values():
            assert p.exitcode == 0, f"a live {role} failed: exit {p.exitcode} {info}"
    finally:
        stop.set()
        for p, _, _ in live.values():
            if p.exitcode is None:
                p.kill()
                p.join()

    # What is left in the queue: the parent drains it, checking each message as a consumer.
    drained: list[tuple[int, int]] = []
    while True:
        try:
            msg = q.get(timeout=0.5)
        except queue.Empty:
            break
        k, s, ok = _check(msg)
        assert ok, f"message {k}/{s} left in the queue is corrupt {info}"
        drained.append((k, s))
        del msg
    # Still usable after every kill.
    q.put(b"after")
    assert q.get(timeout=DEADLINE) == b"after", f"the queue does not work any more {info}"

    intents: set[tuple[int, int]] = set()
    confirmed: set[tuple[int, int]] = set()
    received: list[tuple[int, int]] = list(drained)
    corrupt: list[tuple[int, int]] = []
    for journal in journals:
        for kind, k, s in _records(journal):
            if kind == "I":
                intents.add((k, s))
            elif kind == "P":
                confirmed.add((k, s))
            elif kind == "G":
                received.append((k, s))
            else:
                corrupt.append((k, s))
    assert not corrupt, f"corrupt payloads received: {corrupt[:10]} {info}"
    assert len(received) == len(set(received)), f"a message was received twice {info}"
    assert set(received) <= intents, f"received messages never put {info}"
    lost = confirmed - set(received)
    assert len(lost) <= kills["consumer"], (
        f"{len(lost)} put messages never received, more than the {kills['consumer']} "
        f"consumers killed: {sorted(lost)[:10]} {info}"
    )
    total = kills["producer"] + kills["consumer"]
    assert total >= min_kills, f"only {total} kills {info}"
    assert len(received) > total, f"too little progress: {len(received)} messages {info}"

    del q, stop
    gc.collect()
    assert wait_shmem_back(base, SHMEM_SLACK, patience=DEADLINE), (
        f"Shmem {machine_shmem() - base} bytes above its baseline once the queue is gone {info}"
    )
    print(
        f"channels torture: {kills['producer']} producers and {kills['consumer']} consumers "
        f"killed, {len(received)} messages received ({len(drained)} drained at the end), "
        f"{len(confirmed)} puts confirmed, {len(lost)} lost with killed consumers {info}"
    )


if __name__ == "__main__":
    raise SystemExit(pytest.main(["-q", "-s", __file__]))
