"""shoal.Queue, JoinableQueue and SimpleQueue: multiprocessing's queues over shared memory, with
real processes (fork, spawn, forkserver), real SIGKILLs and the machine's Shmem.
Design note: docs/design/queue.md, "The Python layer"."""

from __future__ import annotations

import gc
import hashlib
import multiprocessing as mp
import os
import pickle
import queue
import signal
import socket
import time
from typing import Any

import pytest
from conftest import DEADLINE, ctrl_c_until_done, shmem_baseline, take_ctrl_c, wait_until

import shoal
from shoal import _shoal
from shoal._tools.measure import machine_shmem

np = pytest.importorskip("numpy")

pytestmark = pytest.mark.usefixtures("runtime_dir")


def _join(p: Any) -> None:
    p.join(DEADLINE)
    assert p.exitcode is not None, "child did not finish"


# ---- multiprocessing.Queue's semantics, in one process ---------------------------------------


def test_put_get_fifo_of_every_kind_of_value() -> None:
    q = shoal.Queue()
    values: list[Any] = [
        b"raw bytes",
        b"",
        "text",
        12,
        2**100,
        1.5,
        None,
        True,
        (1, "a", b"b"),
        [1, [2, [3]]],
        {"k": {1, 2}},
        frozenset({3}),
        bytearray(b"ba"),
        ValueError("an exception"),
    ]
    for v in values:
        q.put(v)
    assert q.qsize() == len(values) and not q.empty()
    got = [q.get() for _ in values]
    assert [type(g) for g in got] == [type(v) for v in values]
    assert got[:-1] == values[:-1] and got[-1].args == values[-1].args
    assert q.empty() and q.qsize() == 0


def test_empty_full_nowait_and_timeouts() -> None:
    q = shoal.Queue(2)
    assert q.maxsize == 2 and q.max_size_bytes == 0
    with pytest.raises(queue.Empty):
        q.get_nowait()
    with pytest.raises(queue.Empty):
        q.get(timeout=0.01)
    with pytest.raises(queue.Empty):
        q.get(False)
    q.put(1)
    q.put_nowait(2)
    assert q.full()
    with pytest.raises(queue.Full):
        q.put_nowait(3)
    with pytest.raises(queue.Full):
        q.put(3, timeout=0.01)
    with pytest.raises(queue.Full):
        q.put(3, timeout=-1)  # a negative timeout is no wait, as multiprocessing's
    assert [q.get(), q.get_nowait()] == [1, 2]


def test_max_size_bytes_bounds_the_encoded_bytes() -> None:
    q = shoal.Queue(max_size_bytes=100)
    assert q.max_size_bytes == 100
    q.put(b"x" * 60)
    with pytest.raises(queue.Full):
        q.put_nowait(b"y" * 60)
    assert q.get() == b"x" * 60
    q.put_nowait(b"y" * 60)
    with pytest.raises(shoal.InvalidArgumentError):
        q.put(b"z" * 101)  # can never fit: an error, not a wait for ever


def test_close_join_thread_and_cancel_join_thread() -> None:
    q = shoal.Queue()
    q.put(1)
    with pytest.raises(ValueError):
        q.join_thread()  # as multiprocessing's: only after close
    q.cancel_join_thread()
    q.close()
    q.join_thread()
    with pytest.raises(ValueError, match="is closed"):
        q.put(2)
    with pytest.raises(ValueError, match="is closed"):
        q.get()
    other = shoal.attach(q.handle())  # the queue itself lives on
    assert other.get_nowait() == 1


def test_put_many_get_many() -> None:
    q = shoal.Queue(5)
    q.put_many([1, b"2", "3"])
    with pytest.raises(queue.Full):
        q.put_many([4, 5, 6], timeout=0.01)  # all or none
    assert q.qsize() == 3
    assert q.get_many(max_messages_to_get=2) == [1, b"2"]
    assert q.get_many(timeout=0.01) == ["3"]
    with pytest.raises(queue.Empty):
        q.get_many(timeout=0.01)
    q.put_many([])


def _mixed_batch() -> list[Any]:
    # Raw bytes, plain values (the value codec), pickled objects, and an 8 MiB ndarray (a
    # pickle with an out-of-band buffer, past a quarter of the ring: a heap block).
    return [
        b"raw",
        7,
        "text",
        [1, (2.5, None)],
        {"k": {1, 2}},
        2**100,
        ValueError("pickled"),
        bytearray(b"pickled too"),
        np.arange(1 << 20, dtype=np.float64),
    ]


def _assert_batch_equal(got: list[Any], want: list[Any]) -> None:
    assert [type(g) for g in got] == [type(w) for w in want]
    assert got[:6] == want[:6] and got[7] == want[7]
    assert got[6].args == want[6].args
    assert got[8].dtype == want[8].dtype and np.array_equal(got[8], want[8])


def _put_many_batch(q: Any) -> None:
    q.put_many(_mixed_batch())


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_put_many_encodes_each_message_as_put_does(method: str) -> None:
    # Each message of a put_many travels in the encoding put gives it: raw bytes, the value
    # codec's format for a plain value, a pickle for anything else, its big buffers after it.
    q = shoal.Queue()
    batch = _mixed_batch()
    q.put_many(batch)
    for b in batch:
        q.put(b)
    by_put_many = [q._get(None, False)[0] for _ in batch]
    by_put = [q._get(None, False)[0] for _ in batch]
    assert by_put_many == by_put == [0, 3, 3, 3, 3, 3, 1, 1, 2]
    # ... and arrives equal, by get and by get_many, from another process.
    for _ in range(2):
        p = mp.get_context(method).Process(target=_put_many_batch, args=(q,))
        p.start()
        _join(p)
        assert p.exitcode == 0
    _assert_batch_equal([q.get(timeout=DEADLINE) for _ in batch], batch)
    got: list[Any] = []
    while len(got) < len(batch):
        got += q.get_many(timeout=DEADLINE)
    _assert_batch_equal(got, batch)
    assert q.empty()


def test_repr_and_attach() -> None:
    q = shoal.Queue(3)
    q.put("x")
    assert "shoal.Queue" in repr(q) and "qsize=1" in repr(q) and "maxsize=3" in repr(q)
    same = shoal.attach(q.handle())
    assert isinstance(same, shoal.Queue) and same.get() == "x"


def test_simple_queue() -> None:
    q = shoal.SimpleQueue()
    assert q.empty()
    q.put((1, 2))
    assert not q.empty() and q.get() == (1, 2)
    q.close()
    with pytest.raises(ValueError):
        q.get()


def test_big_bytes_and_arrays_travel_out_of_band() -> None:
    q = shoal.Queue(ring_bytes=4096)
    big = os.urandom(3 << 20)
    a = np.arange(1 << 20, dtype=np.float64)
    mid = np.arange(20_000, dtype=np.int32)  # out-of-band buffer, inline in a big ring
    q.put(big)
    q.put(a)
    q.put({"a": a, "b": [a[::2]]})
    got = q.get()
    assert type(got) is bytes and got == big
    b = q.get()
    assert b.dtype == a.dtype and np.array_equal(a, b)
    b[0] = 7.0  # the receiver owns it: writable, as multiprocessing's
    d = q.get()
    assert np.array_equal(d["a"], a) and np.array_equal(d["b"][0], a[::2])
    q2 = shoal.Queue()
    q2.put(mid)
    m = q2.get()
    assert np.array_equal(m, mid) and m.flags.writeable
    del b, d, m
    gc.collect()
    assert q._check()["stray_blocks"] == 0


def test_a_received_array_views_the_block_without_a_copy() -> None:
    q = shoal.Queue(ring_bytes=4096)
    q.put(np.full(1 << 20, 5, dtype=np.uint8))
    b = q.get()
    # Its memory is the queue's block (a QueueBlock exports it), not a private copy.
    base = b
    while getattr(base, "base", None) is not None:
        base = base.base
    assert isinstance(base, (_shoal.QueueBlock, memoryview))
    assert int(b.sum()) == 5 << 20
    h = q._stats()
    assert h["size"] == 0


def test_pickle_round_trip_and_unknown_handle() -> None:
    q = shoal.Queue()
    q.put(1)
    q2 = pickle.loads(pickle.dumps(q))
    assert type(q2) is shoal.Queue and q2.get() == 1
    j = shoal.JoinableQueue()
    assert type(pickle.loads(pickle.dumps(j))) is shoal.JoinableQueue
    with pytest.raises(shoal.ShoalError):
        shoal.Queue._from("not a handle")


def test_a_cpp_message_is_bytes_and_bytes_are_raw() -> None:
    # A Python bytes is sent as raw bytes (encoding 0), what a C++ producer puts: the same
    # record either way, so each side tells bytes from encoded Python objects.
    q = shoal.Queue()
    q._put(b"from C++", 0, None)
    assert q.get() == b"from C++"
    q.put(b"py")
    assert q._get(None, False) == (0, b"py")
    q.put("str")
    assert q._get(None, False) == (3, "str")  # a plain value: the value codec's format
    q.put(ValueError("e"))
    enc, _ = q._get(None, False)
    assert enc == 1  # anything else: a pickle


# ---- between processes -----------------------------------------------------------------------


def _produce(q: Any, start: int, n: int) -> None:
    for i in range(start, start + n):
        q.put((os.getpid(), i, b"x" * (i % 300)))


def _consume(q: Any, out: Any, n: int) -> None:
    got = [q.get(timeout=DEADLINE) for _ in range(n)]
    out.put(got)


def test_many_producers_and_consumers(ctx: mp.context.BaseContext) -> None:
    q, out = shoal.Queue(50), shoal.Queue()
    producers = [ctx.Process(target=_produce, args=(q, k * 1000, 300)) for k in range(3)]
    consumers = [ctx.Process(target=_consume, args=(q, out, 450)) for _ in range(2)]
    for p in producers + consumers:
        p.start()
    got = out.get(timeout=DEADLINE) + out.get(timeout=DEADLINE)
    for p in producers + consumers:
        _join(p)
        assert p.exitcode == 0
    assert sorted(i for _, i, _ in got) == sorted(
        k * 1000 + i for k in range(3) for i in range(300)
    )
    by_producer: dict[int, list[int]] = {}
    for pid, i, pad in got:
        assert pad == b"x" * (i % 300)
        by_producer.setdefault(pid, []).append(i)
    assert len(by_producer) == 3
    assert q.empty()


def _square(args: tuple[Any, int]) -> int:
    q, x = args
    q.put(x * x)
    return x


def test_a_queue_is_a_pool_argument(ctx: mp.context.BaseContext) -> None:
    q = shoal.Queue()
    with ctx.Pool(2) as pool:
        assert sorted(pool.map(_square, [(q, x) for x in range(8)])) == list(range(8))
    assert sorted(q.get(timeout=DEADLINE) for _ in range(8)) == [x * x for x in range(8)]


def _forward(inbox: Any) -> None:
    q, out = inbox.get(timeout=DEADLINE)  # queues, received through another queue
    arr = q.get(timeout=DEADLINE)
    out.put(("sum", int(arr.sum())))


def test_a_queue_travels_through_a_queue_with_an_array(ctx: mp.context.BaseContext) -> None:
    inbox, q, out = shoal.Queue(), shoal.Queue(ring_bytes=4096), shoal.Queue()
    p = ctx.Process(target=_forward, args=(inbox,))
    p.start()
    inbox.put((q, out))
    q.put(np.ones(1 << 20, dtype=np.int64))
    assert out.get(timeout=DEADLINE) == ("sum", 1 << 20)
    _join(p)
    assert p.exitcode == 0


def _send_shoal_objects(q: Any, out: Any) -> None:
    a = q.get(timeout=DEADLINE)
    d = q.get(timeout=DEADLINE)
    d["seen"] = float(a.sum())
    out.put("done")


def test_shoal_objects_travel_as_handles(ctx: mp.context.BaseContext) -> None:
    q, out = shoal.Queue(), shoal.Queue()
    a = shoal.full(1000, 2.0)
    d = shoal.Dict()
    p = ctx.Process(target=_send_shoal_objects, args=(q, out))
    p.start()
    q.put(a)
    q.put(d)
    assert out.get(timeout=DEADLINE) == "done"
    assert d["seen"] == 2000.0
    _join(p)


def _echo_on_socket(q: Any) -> None:
    s = q.get(timeout=DEADLINE)
    s.sendall(b"pong")
    s.close()


def test_a_socket_travels_as_through_a_multiprocessing_queue() -> None:
    ctx = mp.get_context("spawn")
    a, b = socket.socketpair()
    q = shoal.Queue()
    p = ctx.Process(target=_echo_on_socket, args=(q,))
    p.start()
    q.put(b)  # ForkingPickler's reducer: the descriptor itself travels
    assert a.recv(4) == b"pong"
    _join(p)
    a.close()
    b.close()


# multiprocessing's "Joining processes that use queues" example: with multiprocessing.Queue it
# deadlocks (the child's feeder thread cannot flush a big item, so the child cannot exit, and
# the parent joins it before getting). put here returns when the item is in the queue.
def _f(q: Any) -> None:
    q.put("X" * 1000000)


def test_the_documented_joining_deadlock_cannot_happen(ctx: mp.context.BaseContext) -> None:
    q = shoal.Queue()
    p = ctx.Process(target=_f, args=(q,))
    p.start()
    p.join(DEADLINE)  # this deadlocks with multiprocessing.Queue
    assert p.exitcode == 0
    obj = q.get()
    assert obj == "X" * 1000000


# ---- deaths and signals ----------------------------------------------------------------------


def _put_forever(q: Any) -> None:
    i = 0
    while True:
        q.put((i, b"p" * (i % 5000)))
        i += 1


def test_a_producer_killed_during_put_never_wedges_the_queue(
    ctx: mp.context.BaseContext,
) -> None:
    q = shoal.Queue(ring_bytes=16384)
    for round_ in range(5):
        p = ctx.Process(target=_put_forever, args=(q,))
        p.start()
        assert wait_until(lambda: q.qsize() > 3)
        os.kill(p.pid, signal.SIGKILL)  # at a random point of some put
        _join(p)
        # Every message there is whole and in order; the queue goes on.
        last = -1
        while True:
            try:
                i, pad = q.get_nowait()
            except queue.Empty:
                break
            assert pad == b"p" * (i % 5000) and i == last + 1
            last = i
        q.put(("after", round_))
        assert q.get() == ("after", round_)
    q._check()


def _get_blocking(q: Any, ready: Any, result: Any) -> None:
    take_ctrl_c()
    ready.set()
    try:
        q.get()
        result.value = 1  # must not happen: nothing is put
    except KeyboardInterrupt:
        result.value = 2


def _put_blocking(q: Any, ready: Any, result: Any) -> None:
    take_ctrl_c()
    ready.set()
    try:
        q.put("second")
        result.value = 1  # must not happen: the queue is full
    except KeyboardInterrupt:
        result.value = 2


def _join_blocking(q: Any, ready: Any, result: Any) -> None:
    take_ctrl_c()
    ready.set()
    try:
        q.join()
        result.value = 1  # must not happen: a task is unfinished
    except KeyboardInterrupt:
        result.value = 2


@pytest.mark.parametrize("side", ["get", "put", "join"])
def test_ctrl_c_interrupts_a_blocked_get_put_or_join(
    ctx: mp.context.BaseContext, side: str
) -> None:
    q = shoal.JoinableQueue(1)
    if side != "get":
        q.put("first")
    ready, result = shoal.Event(), shoal.Value("i", 0)
    target = {"get": _get_blocking, "put": _put_blocking, "join": _join_blocking}[side]
    p = ctx.Process(target=target, args=(q, ready, result))
    p.start()
    ctrl_c_until_done(p, ready, result)
    assert result.value == 2
    assert q.qsize() == (0 if side == "get" else 1)
    q._check()


# ---- JoinableQueue -----------------------------------------------------------------------------


def test_joinable_task_done_and_join_in_one_process() -> None:
    q = shoal.JoinableQueue()
    assert q.joinable and not shoal.Queue().joinable
    q.join()  # nothing put: at once
    q.put(1)
    q.put(2)
    assert q._unfinished() == 2
    assert q._join(0.01) is False
    q.get()
    q.task_done()
    assert q._unfinished() == 1
    q.get()
    q.task_done()
    q.join()
    with pytest.raises(ValueError, match="too many times"):
        q.task_done()
    q._check()


def _work(q: Any, results: Any) -> None:
    while True:
        item = q.get(timeout=DEADLINE)
        if item is None:
            q.task_done()
            return
        results.put(item * 2)
        q.task_done()


def test_joinable_join_waits_for_workers(ctx: mp.context.BaseContext) -> None:
    q, results = shoal.JoinableQueue(), shoal.Queue()
    workers = [ctx.Process(target=_work, args=(q, results)) for _ in range(2)]
    for w in workers:
        w.start()
    for i in range(50):
        q.put(i)
    q.join()
    assert results.qsize() == 50
    assert sorted(results.get() for _ in range(50)) == [2 * i for i in range(50)]
    for _ in workers:
        q.put(None)
    q.join()
    for w in workers:
        _join(w)
        assert w.exitcode == 0


def _take_and_hang(q: Any, got: Any) -> None:
    q.get(timeout=DEADLINE)
    got.set()
    signal.pause()  # holds the item, never marks it done


def test_joinable_join_never_waits_for_a_killed_consumer(ctx: mp.context.BaseContext) -> None:
    q = shoal.JoinableQueue()
    q.put("taken by the one that dies")
    q.put("left for the living")
    got = shoal.Event()
    p = ctx.Process(target=_take_and_hang, args=(q, got))
    p.start()
    assert got.wait(DEADLINE)
    assert q._unfinished() == 2
    os.kill(p.pid, signal.SIGKILL)
    _join(p)
    # The dead consumer's item counts as done; the one in the queue does not.
    assert wait_until(lambda: q._unfinished() == 1)
    assert q._join(0.05) is False
    assert q.get() == "left for the living"
    q.task_done()
    q.join()
    q._check()


def _get_forever(q: Any) -> None:
    while True:
        q.get()


def test_joinable_consumers_killed_inside_get_never_block_join(
    ctx: mp.context.BaseContext,
) -> None:
    q = shoal.JoinableQueue(ring_bytes=8192)
    for _ in range(3):
        p = ctx.Process(target=_get_forever, args=(q,))
        p.start()
        for i in range(200):
            q.put((i, b"j" * (i * 37 % 3000)))
        os.kill(p.pid, signal.SIGKILL)  # somewhere in a get, or between two
        _join(p)
    # Whatever is left in the queue is unfinished until done; whatever the dead took is done.
    while True:
        try:
            q.get_nowait()
        except queue.Empty:
            break
        q.task_done()
    assert q._join(DEADLINE) is True
    q._check()


# ---- memory ----------------------------------------------------------------------------------


def _fill_and_exit(q: Any) -> None:
    for _ in range(8):
        q.put(np.ones(8 << 20, dtype=np.uint8))  # 8 x 8 MiB, out of band, never read
    q.put(b"small")


@pytest.mark.serial
def test_unread_messages_are_freed_with_the_queue(ctx: mp.context.BaseContext) -> None:
    mib = 1 << 20
    base = shmem_baseline()
    q = shoal.Queue()
    p = ctx.Process(target=_fill_and_exit, args=(q,))
    p.start()
    _join(p)  # the producer is gone; its 64 MiB are the queue's
    assert p.exitcode == 0 and q.qsize() == 9
    assert q._check()["out_of_band"] == 8
    assert machine_shmem() >= base + 32 * mib
    del q
    gc.collect()
    assert wait_until(lambda: machine_shmem() <= base + 8 * mib), (machine_shmem() - base) // mib


@pytest.mark.serial
def test_a_received_block_is_freed_when_its_last_view_goes() -> None:
    q = shoal.Queue()
    q.put(np.ones(16 << 20, dtype=np.uint8))
    a = q.get()
    view = a[::2]
    del a
    gc.collect()
    report = q._check()
    assert report["handed_out"] == 1  # the array's block: the receiver's now
    assert report["stray_blocks"] == 0
    assert int(view.sum()) == 8 << 20
    del view
    gc.collect()
    report = q._check()
    assert report["handed_out"] == 0 and report["stray_blocks"] == 0


def _hold_until_killed(q: Any, held: Any) -> None:
    a = q.get(timeout=DEADLINE)  # the queue's block, handed out: the array views it
    held.put(int(a[::4096].sum()))
    signal.pause()


@pytest.mark.serial
def test_a_consumer_killed_holding_a_received_array_gives_its_block_back(
    ctx: mp.context.BaseContext,
) -> None:
    q, held = shoal.Queue(), shoal.Queue()
    before = q._stats()["heap_bytes"]
    q.put(np.full(8 << 20, 3, dtype=np.uint8))
    p = ctx.Process(target=_hold_until_killed, args=(q, held))
    p.start()
    assert held.get(timeout=DEADLINE) == 3 * 2048
    stats = q._stats()
    assert stats["handed_out"] == 1 and stats["heap_bytes"] >= before + (8 << 20)
    assert q._check()["handed_out"] == 1  # alive: its block is not taken
    os.kill(p.pid, signal.SIGKILL)
    _join(p)
    assert p.exitcode == -signal.SIGKILL
    report = q._check()  # the reclaim: the holder is gone
    assert report["handed_out"] == 0 and report["stray_blocks"] == 0
    stats = q._stats()
    assert stats["heap_bytes"] == before and stats["handouts_reclaimed"] == 1


@pytest.mark.serial
def test_the_next_big_put_reclaims_a_killed_consumers_array() -> None:
    q, held = shoal.Queue(), shoal.Queue()
    before = q._stats()["heap_bytes"]
    q.put(np.full(8 << 20, 3, dtype=np.uint8))
    p = mp.get_context("spawn").Process(target=_hold_until_killed, args=(q, held))
    p.start()
    assert held.get(timeout=DEADLINE) == 3 * 2048
    os.kill(p.pid, signal.SIGKILL)
    _join(p)
    # An out-of-band put frees the blocks of dead holders (at most every 100 ms per queue; this
    # queue's first since a block was handed out): the dead consumer's block is freed before any
    # check() runs.
    q.put(b"x" * (1 << 20))
    assert q._stats()["handed_out"] == 0
    assert q.get() == b"x" * (1 << 20)
    assert q._stats()["heap_bytes"] == before


def _drop_inherited(a: Any) -> None:
    del a  # the parent's block: a forked child must not free it
    gc.collect()


def test_a_forked_child_dropping_an_inherited_array_leaves_the_parents_block() -> None:
    q = shoal.Queue()
    q.put(np.full(1 << 20, 9, dtype=np.uint8))
    a = q.get()
    p = mp.get_context("fork").Process(target=_drop_inherited, args=(a,))
    p.start()
    _join(p)
    q.put(np.zeros(1 << 20, dtype=np.uint8))  # would reuse the block had the child freed it
    b = q.get()
    assert int(a.sum()) == 9 << 20 and int(b.sum()) == 0


def _fork_a_keeper(q: Any, cmd: Any, out: Any) -> None:
    """Takes the 8 MiB array, forks a child that keeps it (and checksums it on command), reports
    the array's digest, and waits to be killed."""
    a = q.get(timeout=DEADLINE)  # handed out: the array views the queue's block
    pid = os.fork()
    if pid == 0:  # the child: inherits the array, co-owns its block
        code = 1
        try:
            while cmd.get(timeout=DEADLINE) == "digest":
                out.put(hashlib.sha256(a).hexdigest())
            code = 0
        finally:
            os._exit(code)
    out.put(hashlib.sha256(a).hexdigest())
    signal.pause()


@pytest.mark.serial
def test_a_forked_child_keeps_its_array_when_the_holder_is_killed() -> None:
    q, cmd, out = shoal.Queue(), shoal.Queue(), shoal.Queue()
    before = q._stats()["heap_bytes"]
    sent = np.random.default_rng(7).integers(0, 256, 8 << 20, dtype=np.uint8)
    q.put(sent)
    holder = mp.get_context("spawn").Process(target=_fork_a_keeper, args=(q, cmd, out))
    holder.start()
    digest = out.get(timeout=DEADLINE)
    assert digest == hashlib.sha256(sent).hexdigest()
    assert q._stats()["handed_out"] == 2  # the holder's claim and its child's
    os.kill(holder.pid, signal.SIGKILL)
    # Not join(): the child holds the holder's sentinel pipe open; exitcode polls waitpid.
    assert wait_until(lambda: holder.exitcode is not None, timeout=DEADLINE)
    # The holder's claim is reclaimed; the block is the child's now, so big puts (each one may
    # reclaim) and gets cannot reuse its memory.
    for fill in (0xEE, 0x11, 0x5A):
        q.put(np.full(8 << 20, fill, dtype=np.uint8))
        time.sleep(0.12)  # past the puts' 100 ms reclaim spacing
        assert int(q.get(timeout=DEADLINE)[::4096].sum()) == fill * 2048
    report = q._check()
    assert report["handed_out"] == 1 and report["stray_blocks"] == 0
    assert q._stats()["handouts_reclaimed"] == 1
    cmd.put("digest")
    assert out.get(timeout=DEADLINE) == digest  # the child's array kept its bytes
    cmd.put("exit")  # the child exits; a reparented zombie counts as gone
    assert wait_until(lambda: q._check()["handed_out"] == 0, timeout=DEADLINE)
    assert q._check()["stray_blocks"] == 0
    assert q._stats()["heap_bytes"] == before


def test_a_forked_child_keeps_its_array_when_the_parent_drops_it_at_once() -> None:
    q, cmd, out = shoal.Queue(), shoal.Queue(), shoal.Queue()
    before = q._stats()["heap_bytes"]
    q.put(np.full(8 << 20, 9, dtype=np.uint8))
    a = q.get()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            cmd.get(timeout=DEADLINE)
            out.put(int(a.sum()))
            code = 0
        finally:
            os._exit(code)
    del a  # released at once, maybe before the child ran a line: the block is the child's too
    gc.collect()
    assert q._check()["handed_out"] == 1
    q.put(np.zeros(8 << 20, dtype=np.uint8))  # would reuse the block had the release freed it
    assert int(q.get().sum()) == 0
    cmd.put("sum")
    assert out.get(timeout=DEADLINE) == 9 << 23
    assert os.waitpid(pid, 0)[1] == 0
    report = q._check()
    assert report["handed_out"] == 0 and report["stray_blocks"] == 0
    assert q._stats()["heap_bytes"] == before


def test_threads_share_a_queue_object() -> None:
    import threading

    q = shoal.Queue()
    n = 500

    def produce(k: int) -> None:
        for i in range(n):
            q.put((k, i, [i] * (i % 5)))

    threads = [threading.Thread(target=produce, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    got = [q.get(timeout=DEADLINE) for _ in range(4 * n)]
    for t in threads:
        t.join()
    assert sorted((k, i) for k, i, _ in got) == [(k, i) for k in range(4) for i in range(n)]
    assert all(pad == [i] * (i % 5) for _, i, pad in got)


@pytest.mark.parametrize(
    "payload",
    [b"", b"\x01", b"\xff" * 40, b"\x02\x00\x00\x00\x00\x00\x00\x00\x05" + b"\x00" * 40],
)
def test_a_corrupt_message_with_buffers_is_decode_error(payload: bytes) -> None:
    q = shoal.Queue()
    q._put(payload, 2, None)  # what only a hostile writer puts
    with pytest.raises((shoal.DecodeError, pickle.UnpicklingError, EOFError)):
        q.get()
    q.put("next")
    assert q.get() == "next"  # the queue goes on


def test_a_blocked_get_releases_the_gil() -> None:
    import threading

    q, got = shoal.Queue(), []
    t = threading.Thread(target=lambda: got.append(q.get(timeout=DEADLINE)))
    t.start()
    # This thread runs Python while the other waits in get: the wait does not hold the GIL.
    assert wait_until(lambda: sum(range(1000)) > 0 and t.is_alive())
    q.put("woken")
    t.join(DEADLINE)
    assert got == ["woken"]
