"""A C++ process and a Python process take turns on one lock and one value
(examples/cpp/sync_example.cpp: shoal::Mutex and shoal::SharedValue<long long>).

The example binary comes from the dev build (`make dev`; `make test` builds it before pytest);
this file builds nothing and skips, saying so, when the binary is absent.
"""

from __future__ import annotations

import subprocess

from conftest import DEADLINE, cpp_env, cpp_example

import shoal

K = 20_000


def test_cpp_and_python_increment_one_value_under_one_lock() -> None:
    example = cpp_example("sync_example")
    lock, value = shoal.Lock(), shoal.Value("q", 0, lock=False)
    p = subprocess.Popen(
        [*example, lock.handle(), value.handle(), str(K)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cpp_env(),
    )
    try:
        for _ in range(K):  # at the same time as the C++ process: a load and a store each
            with lock:
                value.value = value.value + 1
        out, err = p.communicate(timeout=DEADLINE)
    finally:
        p.kill()
        p.wait()
    assert p.returncode == 0, err
    assert out.split() == ["done", str(K)], err
    assert value.value == 2 * K  # no update lost on either side
    assert not lock.locked()
