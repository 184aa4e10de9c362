"""End of stream for shoal.Queue: a get on an empty queue whose every producer (a process that
put into it) has closed it or died raises shoal.EndOfStreamError -- a queue.Empty and an
EOFError -- instead of waiting for ever. Real processes, real SIGKILL.
Design note: docs/design/queue.md, "End of stream for shoal.Queue"."""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import queue
import signal
import time
from typing import Any

import pytest
from conftest import DEADLINE

import shoal

pytestmark = pytest.mark.usefixtures("runtime_dir")


def test_the_error_is_a_shoal_error_a_queue_empty_and_an_eof_error() -> None:
    assert issubclass(shoal.EndOfStreamError, shoal.ShoalError)
    assert issubclass(shoal.EndOfStreamError, queue.Empty)
    assert issubclass(shoal.EndOfStreamError, EOFError)


def test_off_by_default_a_get_waits_as_multiprocessing_s() -> None:
    q = shoal.Queue()
    producer = pickle.loads(pickle.dumps(q))
    producer.put(1)
    producer.close()
    assert q.get() == 1
    with pytest.raises(queue.Empty) as e:
        q.get(timeout=0.05)
    assert type(e.value) is queue.Empty


def test_the_choice_travels_with_the_queue() -> None:
    assert pickle.loads(pickle.dumps(shoal.Queue(end_of_stream=True)))._end_of_stream
    assert not pickle.loads(pickle.dumps(shoal.Queue()))._end_of_stream


def test_before_any_put_an_empty_get_is_a_plain_timeout() -> None:
    # No process has put yet: nothing says the stream ended (the documented race with a
    # producer that has not put yet).
    q = shoal.Queue(end_of_stream=True)
    with pytest.raises(queue.Empty) as e:
        q.get(timeout=0.05)
    assert type(e.value) is queue.Empty
    with pytest.raises(queue.Empty) as e:
        q.get_nowait()
    assert type(e.value) is queue.Empty


def test_a_producer_that_closes_ends_the_stream_after_its_messages() -> None:
    q = shoal.Queue(end_of_stream=True)
    producer = pickle.loads(pickle.dumps(q))  # another object on the same queue
    producer.put((1, "a"))
    producer.put(b"raw")
    producer.close()
    assert q.get() == (1, "a")
    assert q.get_many() == [b"raw"]
    with pytest.raises(shoal.EndOfStreamError):
        q.get()  # no timeout: would wait for ever without the end table
    with pytest.raises(shoal.EndOfStreamError):
        q.get_nowait()
    with pytest.raises(shoal.EndOfStreamError):
        q.get_many(timeout=1)
    # A new producer reopens the stream.
    q.put(2)
    assert q.get() == 2


def _put_and_close(q: Any, n: int, both: Any) -> None:
    q.put(0)
    both.wait()  # both are producers before either stops (else the stream may end between)
    for i in range(1, n):
        q.put(i)
    q.close()


def _put_and_exit(q: Any, n: int, both: Any) -> None:
    q.put(0)
    both.wait()
    for i in range(1, n):
        q.put(i)


def test_producers_that_close_or_exit_end_the_stream(ctx: mp.context.BaseContext) -> None:
    q = shoal.Queue(end_of_stream=True)
    both = ctx.Barrier(2)
    ps = [
        ctx.Process(target=_put_and_close, args=(q, 50, both)),
        ctx.Process(target=_put_and_exit, args=(q, 50, both)),
    ]
    for p in ps:
        p.start()
    got = []
    with pytest.raises(shoal.EndOfStreamError):
        while True:
            got.append(q.get(timeout=DEADLINE))
    for p in ps:
        p.join(DEADLINE)
        assert p.exitcode == 0
    assert sorted(got) == sorted(list(range(50)) * 2)


def test_one_producer_left_keeps_the_stream_open() -> None:
    q = shoal.Queue(end_of_stream=True)
    a = pickle.loads(pickle.dumps(q))
    a.put(1)
    a.close()
    q.put(2)  # this process is a producer again, through q
    assert [q.get(), q.get()] == [1, 2]
    with pytest.raises(queue.Empty) as e:
        q.get(timeout=0.05)
    assert type(e.value) is queue.Empty
    q.close()


def _put_then_hang(q: Any, ready: Any) -> None:
    q.put("first")
    ready.set()
    time.sleep(3600)


def _get_twice(q: Any, out: Any, waiting: Any) -> None:
    out.put(("got", q.get()))
    waiting.set()
    try:
        out.put(("got", q.get()))  # blocks: the producer is alive and silent
    except shoal.EndOfStreamError as e:
        out.put(("eof", isinstance(e, queue.Empty) and isinstance(e, EOFError)))


def test_a_producer_killed_while_a_consumer_blocks_wakes_it_with_the_error(
    ctx: mp.context.BaseContext,
) -> None:
    q = shoal.Queue(end_of_stream=True)
    out = ctx.SimpleQueue()
    ready, waiting = ctx.Event(), ctx.Event()
    producer = ctx.Process(target=_put_then_hang, args=(q, ready))
    producer.start()
    assert ready.wait(DEADLINE)
    consumer = ctx.Process(target=_get_twice, args=(q, out, waiting))
    consumer.start()
    assert waiting.wait(DEADLINE)
    time.sleep(0.2)  # let it block in the second get (not a timing assertion: either way works)
    assert consumer.is_alive()
    assert producer.pid is not None
    os.kill(producer.pid, signal.SIGKILL)
    producer.join(DEADLINE)
    consumer.join(DEADLINE)
    assert consumer.exitcode == 0, "the consumer did not wake"
    assert out.get() == ("got", "first")
    assert out.get() == ("eof", True)


def _put_in_fork(q: Any) -> None:
    q.put("child")  # the forked child becomes a producer itself (not through the parent's hold)


def test_a_forked_child_is_its_own_producer() -> None:
    fork = mp.get_context("fork")
    q = shoal.Queue(end_of_stream=True)
    q.put("parent")
    p = fork.Process(target=_put_in_fork, args=(q,))
    p.start()
    p.join(DEADLINE)
    assert p.exitcode == 0
    assert sorted([q.get(), q.get()]) == ["child", "parent"]
    with pytest.raises(queue.Empty) as e:  # the parent still holds its producer end
        q.get(timeout=0.05)
    assert type(e.value) is queue.Empty
    consumer = pickle.loads(pickle.dumps(q))
    q.close()
    with pytest.raises(shoal.EndOfStreamError):
        consumer.get(timeout=DEADLINE)
