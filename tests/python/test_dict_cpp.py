"""A C++ process and a Python process update one Dict at the same time under its lock, and each
sees the other's writes (examples/cpp/dict_example.cpp: shoal::Dict; issue 15, item 7).

The example binary comes from the dev build (`make dev`; `make test` builds it before pytest);
this file builds nothing and skips, saying so, when the binary is absent.
"""

from __future__ import annotations

import subprocess
import sys

from conftest import DEADLINE, cpp_env, cpp_example, wait_until

import shoal

K = 5_000


def test_cpp_and_python_update_one_dict_under_its_lock() -> None:
    example = cpp_example("dict_example")
    d = shoal.Dict(n=0)
    p = subprocess.Popen(
        [*example, d.handle(), str(K), "cpp", "py"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cpp_env(),
    )
    try:
        for i in range(K):  # at the same time as the C++ process: a get and a set each
            with d.lock:
                d["n"] = d["n"] + 1
                d[f"py{i}"] = i
        d["py_done"] = K
        # The C++ writes, seen here: every entry it wrote, with its value.
        if not wait_until(lambda: "cpp_done" in d or p.poll() is not None, DEADLINE):
            raise AssertionError("the C++ process did not finish")
        assert "cpp_done" in d, f"the C++ process failed: {p.communicate()}"
        assert d["cpp_done"] == K
        missing = [i for i in range(K) if d.get(f"cpp{i}") != i]
        out, err = p.communicate(timeout=DEADLINE)
    finally:
        p.kill()
        p.wait()
    assert p.returncode == 0, err
    assert not missing, f"{len(missing)} C++ entries not seen, first {missing[:5]}"
    # The Python writes, seen there: it checked every py{i} and counted them.
    assert out.split() == ["done", str(K), "saw", str(K)], (out, err)
    assert d["n"] == 2 * K  # no update lost on either side
    assert len(d) == 2 * K + 3
    assert not d.lock._count


def test_an_unrelated_process_grows_a_dict_of_another_session() -> None:
    # A process that did not inherit the session (SHOAL_SESSION) creates its own objects in a
    # session of its own; the dict's heap must still grow in the dict's session (a reference
    # joins only objects of one session), from C++ as from Python.
    d = shoal.Dict()
    env = {k: v for k, v in cpp_env().items() if k != "SHOAL_SESSION"}
    code = "import shoal, sys; d = shoal.attach(sys.argv[1]); d['big'] = b'x' * (8 << 20)"
    r = subprocess.run(
        [sys.executable, "-c", code, d.handle()],
        env=env,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert d["big"] == b"x" * (8 << 20)
    d._check()
