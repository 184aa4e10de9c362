"""Fixtures shared by every Python test.

Each test gets its own runtime directory (SHOAL_RUNTIME_DIR) and starts with no session, so
tests run in parallel without seeing each other's brokers. `start_method` runs a cross-process
test under fork, spawn and forkserver (one fixture runs them all).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

# Deadline for things that must happen "soon" (generous, never asserted as a
# maximum); longer under sanitizers.
DEADLINE = 120.0 if os.environ.get("LD_PRELOAD", "").find("asan") >= 0 else 30.0


def session_info(sessions: list[dict[str, Any]], session: str) -> dict[str, Any]:
    """A live session's kList JSON (its broker's own view), from _shoal.list_sessions()."""
    for s in sessions:
        if s["id"] == session and s["alive"] and s["describe_json"]:
            return json.loads(s["describe_json"])
    raise AssertionError(f"session {session} is not running: {sessions}")


def describe_here(session: str) -> dict[str, Any]:
    """The broker's view of a session, asked from this (the test's) process."""
    from shoal import _shoal

    return session_info(_shoal.list_sessions(), session)


def run_python(
    code: str,
    *args: str,
    timeout: float = DEADLINE,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter, an unrelated process (not a multiprocessing child):
    a crash there (a signal) shows up as a negative exit status instead of killing the runner."""
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def wait_until(pred: Any, timeout: float = DEADLINE, interval: float = 0.005) -> bool:
    """Poll `pred` until it is true or `timeout` seconds pass; returns the last result."""
    end = time.monotonic() + timeout
    while True:
        if pred():
            return True
        if time.monotonic() > end:
            return bool(pred())
        time.sleep(interval)


def take_ctrl_c() -> None:
    """In a child that a test interrupts: Ctrl-C raises KeyboardInterrupt here whatever this
    process inherited. A test run started as a background job of a non-interactive shell has
    SIGINT ignored (POSIX), every process below it inherits that, and Python installs no
    handler for a signal ignored at start."""
    signal.signal(signal.SIGINT, signal.default_int_handler)


def sleeping(pid: int) -> bool:
    """Whether process `pid` is asleep (state S in /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] == "S"


def interrupt(pid: int) -> bool:
    """Ctrl-C to pid (gone already: nothing); False, so that wait_until polls on."""
    try:
        os.kill(pid, signal.SIGINT)
    except ProcessLookupError:
        pass
    return False


def ctrl_c_until_done(p: Any, ready: Any, result: Any) -> None:
    """Once the started child `p` has set `ready` and fallen asleep (in the wait under test),
    Ctrl-C it until it records a nonzero `result`; then reap it."""
    assert ready.wait(DEADLINE)
    assert p.pid is not None
    assert wait_until(lambda: sleeping(p.pid))
    assert wait_until(lambda: result.value != 0 or interrupt(p.pid), interval=0.05)
    p.join(DEADLINE)
    assert p.exitcode is not None, "child did not finish"


@contextmanager
def waiting_child(
    code: str, *args: str, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[str]]:
    """A Python child running `code` with text pipes on stdin and stdout (it may wait on stdin
    to be killed); on leaving, it is SIGKILLed if still alive, reaped and its pipes closed."""
    child = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        yield child
    finally:
        child.kill()
        child.wait()
        for stream in (child.stdin, child.stdout):
            if stream is not None:
                stream.close()


def shmem_baseline() -> int:
    """The machine's Shmem before a test: the least of a few readings, as other processes on
    the machine (other test runs, benchmarks) only ever add to it for a while."""
    from shoal._tools.measure import machine_shmem

    readings = []
    for _ in range(10):
        readings.append(machine_shmem())
        time.sleep(0.01)
    return min(readings)


def _broker_pids(runtime_dir: str) -> list[int]:
    pids = []
    for name in os.listdir(runtime_dir) if os.path.isdir(runtime_dir) else []:
        if name.endswith(".lock") and not name.startswith("."):
            try:
                with open(os.path.join(runtime_dir, name)) as f:
                    pids.append(int(f.read().strip() or 0))
            except (OSError, ValueError):
                pass
    return [p for p in pids if p > 0]


@pytest.fixture(autouse=True)
def runtime_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A private runtime directory (short path: Unix socket paths are limited to 108 bytes)."""
    d = tempfile.mkdtemp(prefix="shp-", dir="/tmp")
    monkeypatch.setenv("SHOAL_RUNTIME_DIR", d)
    monkeypatch.delenv("SHOAL_SESSION", raising=False)
    monkeypatch.setenv("SHOAL_PIN_TTL", os.environ.get("SHOAL_TEST_PIN_TTL", "5"))
    _fresh_process_state()
    yield d
    _fresh_process_state()
    # Brokers of this test exit by themselves once its processes are gone; stop stragglers
    # (a test that keeps a segment alive in a module global, a pin not yet expired).
    for pid in _broker_pids(d):
        try:
            os.kill(pid, 15)
        except ProcessLookupError:
            pass
    wait_until(lambda: not _broker_pids(d) or all(not _alive(p) for p in _broker_pids(d)), 10)
    shutil.rmtree(d, ignore_errors=True)


def _fresh_process_state() -> None:
    """Forget this process's sessions, and stop multiprocessing's forkserver: it would keep the
    environment (SHOAL_RUNTIME_DIR) of the test that started it."""
    from shoal import _shoal

    _shoal._reset_for_testing()
    from multiprocessing import forkserver

    forkserver._forkserver._stop()  # type: ignore[attr-defined]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (not yet reaped by init) counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.fixture(params=["fork", "spawn", "forkserver"])
def start_method(request: pytest.FixtureRequest) -> str:
    """Run the test under each multiprocessing start method."""
    return str(request.param)


@pytest.fixture
def ctx(start_method: str) -> mp.context.BaseContext:
    return mp.get_context(start_method)


# ---- the C++ examples (built by `make dev`; `make test` builds them before pytest) ----------
_ROOT = pathlib.Path(__file__).resolve().parents[2]


def cpp_example(name: str) -> list[str]:
    """The command of examples/cpp/<name> from the dev build; skips, saying so, when absent."""
    path = _ROOT / "build" / "dev" / "examples" / "cpp" / name
    if not os.access(path, os.X_OK):
        pytest.skip(f"{path.relative_to(_ROOT)} is not built: run `make dev` first")
    return [str(path)]


def cpp_env() -> dict[str, str]:
    """The environment for a C++ example: this test's session directory (inherited) and the
    broker Python itself starts (the installed package's), in case the C++ process is the one
    that starts the session."""
    from shoal import _shoal

    return {**os.environ, "SHOAL_BROKER": _shoal.broker_path()}
