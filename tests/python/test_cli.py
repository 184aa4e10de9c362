"""Tests of the ``shoal`` console script (shoal.cli) and the demo and benchmark it runs.

Most tests call ``main([...])`` in this process; one runs the installed console script.
Every test has its own runtime directory (conftest); tests that need named objects get
their own named directory. Nothing here asserts a duration.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import _alive, describe_here, wait_until

import shoal
from shoal import _shoal
from shoal.cli import main

REPO = Path(__file__).resolve().parents[2]
SHOAL_SCRIPT = Path(sys.executable).parent / "shoal"


@pytest.fixture
def named_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private directory for named objects (SHOAL_NAMED_DIR)."""
    d = tmp_path / "named"
    monkeypatch.setenv("SHOAL_NAMED_DIR", str(d))
    yield d


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def ls_json(capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    code, out, _ = run_cli(capsys, "ls", "--json")
    assert code == 0
    data: dict[str, object] = json.loads(out)
    return data


def session_files(runtime_dir: str, session: str) -> set[str]:
    return {n for n in os.listdir(runtime_dir) if n.startswith(session)}


def broker_pid_of(runtime_dir: str, session: str) -> int:
    with open(os.path.join(runtime_dir, f"{session}.lock")) as f:
        return int(f.read().strip())


def child_env() -> dict[str, str]:
    """This process's environment, minus the session it may have exported: a child
    started with it begins a session of its own."""
    return {k: v for k, v in os.environ.items() if k != "SHOAL_SESSION"}


# --------------------------------------------------------------------------------------
# ls


def test_ls_with_no_sessions_says_so(capsys: pytest.CaptureFixture[str], runtime_dir: str) -> None:
    code, out, err = run_cli(capsys, "ls")
    assert code == 0
    assert err == ""
    assert f"sessions in {runtime_dir}: 0 live, 0 dead" in out


def test_ls_shows_objects_holders_and_pins(
    capsys: pytest.CaptureFixture[str], runtime_dir: str
) -> None:
    seg = _shoal.Segment.create(64 << 20)
    pinned = _shoal.Segment.create(4096)
    handle = pinned.handle(pin=True)  # not attached: stays pinned
    shared_handle = seg.handle(pin=True)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys; from shoal import _shoal; s = _shoal.Segment.attach(sys.argv[1]); "
                "print('ok', flush=True); sys.stdin.read()"
            ),
            shared_handle,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ok"
        data = ls_json(capsys)
        sessions = data["sessions"]
        assert isinstance(sessions, list) and len(sessions) == 1
        s = sessions[0]
        assert s["id"] == seg.session and s["alive"] is True
        objects = {o["id"]: o for o in s["describe"]["objects"]}
        big, small = objects[seg.id], objects[pinned.id]
        assert big["size"] == 64 << 20 and small["size"] == 4096
        assert big["creator_pid"] == os.getpid()
        assert sorted(big["holders"]) == sorted([os.getpid(), holder.pid])
        assert big["refs"] == 2 and big["pins"] == 0
        ttl = float(os.environ["SHOAL_PIN_TTL"])  # set by conftest
        assert small["pins"] == 1 and 0 < small["pin_expires_in_s"] <= ttl
        # This process's own describe connection is not listed as a user.
        conns = {c["pid"]: c["refs"] for c in s["describe"]["connections"]}
        assert conns == {os.getpid(): 2, holder.pid: 1}

        code, out, _ = run_cli(capsys, "ls")
        assert code == 0
        assert "1 live, 0 dead" in out
        assert seg.session[:12] in out
        assert f"{seg.id[:12]}  bytes  64.0 MiB" in out
        assert f"{os.getpid()},{holder.pid}" in out or f"{holder.pid},{os.getpid()}" in out
        assert "(next expires in" in out
        assert handle  # keep the pin's handle alive until here
    finally:
        holder.kill()
        holder.wait()
        for stream in (holder.stdin, holder.stdout):
            if stream is not None:
                stream.close()


def test_ls_lists_named_objects(capsys: pytest.CaptureFixture[str], named_dir: Path) -> None:
    seg = _shoal.Segment.create_named("cli-ls-test", 1 << 20)
    seg.close()
    data = ls_json(capsys)
    assert data["named_dir"] == str(named_dir)
    named = data["named"]
    assert isinstance(named, list)
    assert [(e["name"], e["size"]) for e in named] == [("cli-ls-test", 1 << 20)]
    code, out, _ = run_cli(capsys, "ls")
    assert code == 0
    assert f"named objects in {named_dir}: 1, 1.00 MiB" in out
    assert "cli-ls-test  1.00 MiB" in out


def test_ls_without_named_dir_does_not_create_it(
    capsys: pytest.CaptureFixture[str], named_dir: Path
) -> None:
    code, out, _ = run_cli(capsys, "ls")
    assert code == 0
    assert "named objects: none (" in out
    assert not named_dir.exists()


# --------------------------------------------------------------------------------------
# rm


def test_rm_removes_named_objects(capsys: pytest.CaptureFixture[str], named_dir: Path) -> None:
    for name in ("cli-rm-a", "cli-rm-b"):
        _shoal.Segment.create_named(name, 4096).close()
    code, out, err = run_cli(capsys, "rm", "cli-rm-a", "cli-rm-b")
    assert code == 0, err
    assert out.splitlines() == ["removed cli-rm-a", "removed cli-rm-b"]
    assert _shoal.list_named() == []
    with pytest.raises(_shoal.SegmentNotFoundError, match="cli-rm-a"):
        _shoal.Segment.open_named("cli-rm-a")


def test_rm_missing_name_fails_with_message_and_removes_the_rest(
    capsys: pytest.CaptureFixture[str], named_dir: Path
) -> None:
    _shoal.Segment.create_named("cli-rm-here", 4096).close()
    code, out, err = run_cli(capsys, "rm", "cli-rm-absent", "cli-rm-here")
    assert code == 1
    assert out == "removed cli-rm-here\n"
    where = _shoal.named_dir(False)
    assert err == f"shoal: rm: no named object 'cli-rm-absent' in {where}; `shoal ls` lists them\n"
    assert _shoal.list_named() == []


def test_rm_invalid_name_fails_cleanly(capsys: pytest.CaptureFixture[str], named_dir: Path) -> None:
    code, out, err = run_cli(capsys, "rm", "../etc")
    assert code == 1
    assert out == ""
    assert err.startswith("shoal: rm: cannot remove '../etc'")


def test_rm_requires_a_name(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["rm"])
    assert exc.value.code == 2
    assert "NAME" in capsys.readouterr().err


# --------------------------------------------------------------------------------------
# gc


def test_gc_with_nothing_dead_removes_nothing(
    capsys: pytest.CaptureFixture[str], runtime_dir: str
) -> None:
    seg = _shoal.Segment.create(4096)
    code, out, _ = run_cli(capsys, "gc")
    assert code == 0
    assert "removed the runtime files of 0 dead session(s)" in out
    assert "1 live session(s) left untouched" in out
    assert session_files(runtime_dir, seg.session) == {
        f"{seg.session}.lock",
        f"{seg.session}.sock",
    }


_PIN_AND_WAIT = r"""
import sys
from shoal import _shoal
seg = _shoal.Segment.create(1 << 20)
print(seg.handle(), seg.session, seg.id, flush=True)  # the handle pins it (SHOAL_PIN_TTL)
sys.stdin.read()
"""


def test_gc_pins_drops_the_pins_of_a_killed_sender_only_and_ttls_are_capped_at_a_day(
    capsys: pytest.CaptureFixture[str], runtime_dir: str
) -> None:
    keep = _shoal.Segment.create(4096)
    keep.handle()  # a pin whose sender (this process) lives: gc --pins must keep it
    env = {**os.environ, "SHOAL_PIN_TTL": str(10**9), "SHOAL_SESSION": keep.session}
    with subprocess.Popen(
        [sys.executable, "-c", _PIN_AND_WAIT],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    ) as child:
        assert child.stdout is not None
        handle, session, oid = child.stdout.readline().split()
        child.kill()
    assert session == keep.session

    def obj(object_id: str) -> dict[str, object] | None:
        objects = describe_here(session)["objects"]
        return next((o for o in objects if o["id"] == object_id), None)

    # The killed sender's reference went with it; its pin keeps the object, for a day at most
    # whatever SHOAL_PIN_TTL asked (10**9 s).
    assert wait_until(lambda: (o := obj(oid)) is not None and o["refs"] == 0), obj(oid)
    o = obj(oid)
    assert o is not None and o["pins"] == 1 and o["pin_senders"] == [child.pid]
    # At most the cap (elapsed time only lowers it), and far above the 120 s an invalid value
    # would have given: no bound here depends on how long the steps above took.
    assert 43200 < float(o["pin_expires_in_s"]) <= 86400  # type: ignore[arg-type]
    code, out, err = run_cli(capsys, "gc", "--pins")
    assert code == 0, err
    assert f"dropped 1 pin(s) of dead senders in session {session}" in out.splitlines()
    assert wait_until(lambda: obj(oid) is None)
    with pytest.raises(shoal.StaleHandleError, match=f"object {oid} no longer exists"):
        _shoal.Segment.attach(handle)
    mine = obj(keep.id)
    assert mine is not None and mine["pins"] == 1 and mine["pin_senders"] == [os.getpid()]
    keep.close()


def test_gc_after_a_whole_session_was_killed(
    capsys: pytest.CaptureFixture[str], runtime_dir: str, named_dir: Path
) -> None:
    # A live session (this process) and a named object: gc must leave both alone.
    live = _shoal.Segment.create(4096)
    named = _shoal.Segment.create_named("cli-gc-keep", 4096)
    named.close()

    # A second session, in a child that starts its own broker.
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys; from shoal import _shoal; s = _shoal.Segment.create(1 << 20); "
                "print(s.session, flush=True); sys.stdin.read()"
            ),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    assert child.stdout is not None and child.stdin is not None
    dead = child.stdout.readline().strip()
    assert dead and dead != live.session
    broker = broker_pid_of(runtime_dir, dead)
    with open(f"/proc/{broker}/cmdline", "rb") as f:
        assert b"shoal-broker" in f.read()  # only ever kill what this test started

    # Kill the broker first (else it would exit cleanly once the child is gone), then
    # the child: nothing of that session runs any cleanup.
    os.kill(broker, signal.SIGKILL)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    child.stdin.close()
    child.stdout.close()
    assert wait_until(lambda: not _alive(broker))
    assert wait_until(
        lambda: any(s["id"] == dead and not s["alive"] for s in _shoal.list_sessions())
    )
    assert session_files(runtime_dir, dead) == {f"{dead}.lock", f"{dead}.sock"}

    code, out, _ = run_cli(capsys, "ls")
    assert code == 0
    assert "1 live, 1 dead" in out
    assert f"session {dead[:12]}  DEAD" in out
    assert "`shoal gc`" in out

    code, out, _ = run_cli(capsys, "gc")
    assert code == 0
    assert "removed the runtime files of 1 dead session(s)" in out
    assert "1 live session(s) left untouched" in out
    assert session_files(runtime_dir, dead) == set()

    # The live session and the named object are untouched, and still work.
    assert session_files(runtime_dir, live.session) == {
        f"{live.session}.lock",
        f"{live.session}.sock",
    }
    sessions = _shoal.list_sessions()
    assert [(s["id"], s["alive"]) for s in sessions] == [(live.session, True)]
    again = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from shoal import _shoal; print(_shoal.Segment.attach(sys.argv[1]).size)",
            live.handle(),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert again.stdout.strip() == "4096"
    assert [e["name"] for e in _shoal.list_named()] == ["cli-gc-keep"]

    code, out, _ = run_cli(capsys, "gc")
    assert "removed the runtime files of 0 dead session(s)" in out


# A writer that never stops saving a 64 MiB image: whenever the test looks, it is most likely
# writing or fsyncing its temporary file.
_SAVE_FOREVER = """
import sys, shoal
blob = b"\\x01" * (64 << 20)
while True:
    shoal.save({"blob": blob}, sys.argv[1])
"""


def save_temps(d: Path, target: str) -> list[str]:
    """The temporary files of saves of `target` in `d` (whatever their suffix)."""
    return sorted(n for n in os.listdir(d) if n.startswith(target + "."))


def _size_or_0(p: Path) -> int:
    try:
        return p.stat().st_size
    except FileNotFoundError:
        return 0


def stop_mid_save(d: Path, target: str) -> tuple[subprocess.Popen[bytes], str]:
    """A child stopped (SIGSTOP) while its temporary file exists: alive, and holding whatever
    the writer holds. Stopping it first makes "the file exists" a fact, not a race; a look that
    misses (between two saves) just resumes it and looks again."""
    child = subprocess.Popen([sys.executable, "-c", _SAVE_FOREVER, str(d / target)])
    for _ in range(200):
        assert wait_until(lambda: bool(save_temps(d, target))), "no save ever started"
        os.kill(child.pid, signal.SIGSTOP)
        _, status = os.waitpid(child.pid, os.WUNTRACED)
        assert os.WIFSTOPPED(status), status
        # Only a file with bytes in it is certainly locked: the writer takes the lock between
        # mkostemp and its first write, and an empty file caught in that window is, by design,
        # one gc may remove (the writer then makes another; builder.cpp, Builder::save).
        temps = [t for t in save_temps(d, target) if _size_or_0(d / t) > 0]
        if temps:
            return child, temps[0]
        os.kill(child.pid, signal.SIGCONT)
    child.kill()
    child.wait()
    raise AssertionError("never caught the writer with its temporary file")


def test_gc_dir_removes_the_temp_file_of_a_killed_save_never_a_live_one(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    d = tmp_path / "out"
    d.mkdir()
    # Look-alikes that are not provably a dead save's: gc must leave every one of them alone.
    (d / "notes.shoal-tmp-abc123").write_text("not an image\n")
    (d / "other.tmp-abc123").write_bytes(b"SHOALFRZ" + bytes(56))
    os.symlink(d / "notes.shoal-tmp-abc123", d / "link.shoal-tmp-Abc123")
    decoys = sorted(os.listdir(d))

    child, temp = stop_mid_save(d, "big.shoal")
    try:
        # The writer is alive (stopped mid-write): its file is not an orphan.
        code, out, err = run_cli(capsys, "gc", str(d))
        assert code == 0, err
        assert temp in os.listdir(d), out
        assert f"removed 0 temporary file(s) of dead shoal.save calls in {d}" in out
    finally:
        # SIGKILL: no cleanup runs in the writer, as when a user kills a long save.
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert temp in os.listdir(d)

    code, out, err = run_cli(capsys, "gc", str(d))
    assert code == 0, err
    assert f"removed 1 temporary file(s) of dead shoal.save calls in {d}" in out
    left = sorted(os.listdir(d))
    assert temp not in left
    assert [n for n in left if n != "big.shoal"] == decoys  # the target, if a save finished
    if "big.shoal" in left:
        assert shoal.load(d / "big.shoal")["blob"][:4] == b"\x01" * 4

    code, out, _ = run_cli(capsys, "gc", str(d))
    assert "removed 0 temporary file(s)" in out


def test_gc_dir_of_a_missing_directory_fails_with_a_message(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, err = run_cli(capsys, "gc", str(tmp_path / "nope"))
    assert code == 1
    assert "removed the runtime files of" in out  # the runtime directory was still cleaned
    assert f"gc: cannot look for temporary files in {tmp_path / 'nope'}" in err


# --------------------------------------------------------------------------------------
# info


def test_info_reports_limits_and_places(
    capsys: pytest.CaptureFixture[str], runtime_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOAL_MAX_BYTES", "512M")
    code, out, err = run_cli(capsys, "info")
    assert code == 0, err
    for key in (
        "shoal ",
        "memfd ",
        "MemAvailable ",
        "cgroup memory ",
        "/dev/shm ",
        "runtime dir ",
        "named dir ",
        "broker ",
        "pin TTL ",
    ):
        assert any(line.startswith(key) for line in out.splitlines()), key
    assert "SHOAL_MAX_BYTES      512 MiB per session" in out
    assert runtime_dir in out
    ttl = float(os.environ["SHOAL_PIN_TTL"])  # set by conftest
    assert f"pin TTL              {ttl:g} s" in out

    code, out, _ = run_cli(capsys, "info", "--json")
    assert code == 0
    info = json.loads(out)
    assert info["max_bytes"] == 512 << 20
    assert info["memfd_supported"] is True
    assert info["broker_ok"] is True
    assert info["runtime_dir"] == runtime_dir
    assert info["pin_ttl_s"] == ttl
    assert info["mem_available"] > 0
    assert info["dev_shm_total"] >= info["dev_shm_free"] > 0


def test_info_flags_a_bad_max_bytes(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOAL_MAX_BYTES", "lots")
    code, out, _ = run_cli(capsys, "info")
    assert code == 0
    assert "'lots' is not a byte count" in out


def test_console_script_runs(runtime_dir: str) -> None:
    assert SHOAL_SCRIPT.exists(), "the console script is not installed"
    for argv in (["ls", "--json"], ["info", "--json"]):
        proc = subprocess.run(
            [str(SHOAL_SCRIPT), *argv], capture_output=True, text=True, check=False
        )
        assert proc.returncode == 0, proc.stderr
        assert isinstance(json.loads(proc.stdout), dict)
    proc = subprocess.run([str(SHOAL_SCRIPT)], capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert "usage: shoal" in proc.stderr


def test_version_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith("shoal 0.")


# --------------------------------------------------------------------------------------
# demo


def test_demo_lists_its_scenes(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "demo", "--list")
    assert code == 0
    assert out.startswith("killed-creator")


def test_demo_killed_holder_scene(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "demo", "--scene", "killed-holder")
    assert code == 0, out + err
    assert "-> False after" in out  # multiprocessing.Lock stayed locked
    assert "-> True after" in out and "with OwnerDiedWarning" in out
    assert "as promised" in out and "PROBLEM" not in out


def test_demo_shared_dict_scene(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "demo", "--scene", "shared-dict")
    assert code == 0, out + err
    assert "of 4000 (exact)" in out  # shoal.Dict's counter under its lock
    assert "(the change went to a copy: lost)" in out  # Manager().dict()'s nested mutation
    assert "as promised" in out and "PROBLEM" not in out


def test_demo_pipe_vs_queue_scene(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "demo", "--scene", "pipe-vs-queue")
    assert code == 0, out + err
    assert "multiprocessing.Queue" in out and "multiprocessing.Pipe" in out
    assert "The stdlib's answer: Pipe" in out
    assert "PROBLEM" not in out
    assert "shoal.Queue:" in out


def test_demo_pool_initret_scene(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "demo", "--scene", "pool-initret", "--size-mb", "4")
    assert code == 0, out + err
    assert "multiprocessing.Pool + partial(dict)" in out and "shoal.Pool + initret (frozen)" in out
    assert "results" in out and "right" in out and "WRONG" not in out
    assert "hold no copy" in out and "PROBLEM" not in out


def test_demo_unknown_scene_fails(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "demo", "--scene", "nope")
    assert code == 1
    assert "unknown scene" in err


def test_demo_reports_a_creator_that_cannot_create(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOAL_MAX_BYTES", "1M")
    code, out, err = run_cli(capsys, "demo", "--size-mb", "16")
    assert code == 1
    assert "scene 1 FAILED" in out
    assert "could not run: the creator failed: OutOfSpaceError" in err
    assert "SHOAL_MAX_BYTES" in err


@pytest.mark.serial
def test_demo_runs_and_leaves_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    shm_before = set(os.listdir("/dev/shm"))
    code, out, err = run_cli(capsys, "demo", "--size-mb", "16")
    assert code == 0, out + err
    out = " ".join(out.split())  # the narrative is wrapped at 100 columns
    assert "scene 1 held" in out
    assert "correct" in out and "WRONG" not in out
    assert "runtime dir empty" in out
    assert "Nothing to clean up." in out
    assert "leaked" in out  # the stdlib's segment, before the demo unlinks it
    assert "PROBLEM" not in out
    # The demo cleaned up the stdlib segment it leaked on purpose.
    assert {n for n in set(os.listdir("/dev/shm")) - shm_before if n.startswith("psm_")} == set()


# --------------------------------------------------------------------------------------
# bench


_FAKE_BENCH = '''
"""A benchmark script whose worker runs under spawn, as real ones do."""
import multiprocessing as mp


def _square(conn, x):
    conn.send(x * x)


def run(quick: bool) -> str:
    ctx = mp.get_context("spawn")
    a, b = ctx.Pipe()
    p = ctx.Process(target=_square, args=(b, 7))
    p.start()
    value = a.recv()
    p.join()
    return f"## Fake\\n\\nquick={quick} square={value} module={_square.__module__}\\n"


if __name__ == "__main__":
    raise SystemExit("shoal bench must not run the script's main block")
'''


def test_bench_runs_scripts_and_writes_the_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    scripts = tmp_path / "bench"
    scripts.mkdir()
    (scripts / "fake.py").write_text(textwrap.dedent(_FAKE_BENCH))
    (scripts / "_helper.py").write_text("raise SystemExit('helpers are not run')\n")
    out_file = tmp_path / "BENCHMARKS.md"
    code, out, err = run_cli(
        capsys, "bench", "--quick", "--dir", str(scripts), "--out", str(out_file)
    )
    assert code == 0, err
    text = out_file.read_text()
    assert text.startswith("# shoal benchmarks")
    assert "quick mode" in text
    assert "- **nproc**:" in text  # machine facts from the harness
    # Loaded as __main__ (as `python fake.py` would), so spawn children and cloudpickle
    # find its functions; its main block did not run.
    assert "## Fake\n\nquick=True square=49 module=__main__\n" in text
    assert f"wrote {out_file}" in out


def test_bench_reports_a_failing_script(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    scripts = tmp_path / "bench"
    scripts.mkdir()
    (scripts / "broken.py").write_text("def run(quick):\n    raise RuntimeError('boom')\n")
    (scripts / "norun.py").write_text("X = 1\n")
    out_file = tmp_path / "B.md"
    code, _, err = run_cli(capsys, "bench", "--dir", str(scripts), "--out", str(out_file))
    assert code == 1
    assert "2 script(s) failed: broken.py, norun.py" in err
    assert "**broken.py failed**" in out_file.read_text()


def test_bench_without_scripts_fails(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run_cli(capsys, "bench", "--dir", str(tmp_path / "none"))
    assert code == 1
    assert "no directory" in err


@pytest.mark.serial
def test_segments_benchmark_quick(runtime_dir: str) -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "python" / "segments.py"), "--quick"],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith("## Segments: create, attach, release")
    for title in (
        "4.00 KiB: attach in another process (timed there)",
        "64.0 MiB: create, pages reserved (in this process)",
        "first vs second create in a fresh process",
        "SIGKILL to references dropped",
        "Memory of a reader of 64.0 MiB",
    ):
        assert title in out, title
    assert "(5 repetitions, interleaved" in out
