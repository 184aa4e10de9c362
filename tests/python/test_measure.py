"""Tests of shoal._tools.measure (memory readers) and shoal._tools.harness (side-by-side runner).

The memory tests use real child processes and real mappings, no mocks. Bounds
are generous: they check what the kernel must report, not exact page counts.
No test asserts a maximum duration; timing tests only compare ways whose costs
differ by a wide margin.
"""

from __future__ import annotations

import json
import math
import mmap
import multiprocessing as mp
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path

import pytest

from shoal._tools import harness as _harness
from shoal._tools.harness import (
    SCALE_ENV,
    Result,
    Way,
    fmt_duration,
    memory_table,
    run_side_by_side,
    section,
    size_from_env,
    write_benchmarks_md,
)
from shoal._tools.measure import (
    ProcMem,
    diff,
    fmt_bytes,
    machine_shmem,
    mem_available,
    mem_total,
    proc_mem,
)

MIB = 1024 * 1024
SIZE = 64 * MIB
PAGE = mmap.PAGESIZE
DEADLINE = 60.0  # seconds: a watchdog against hangs, never a timing assertion


# --- child processes (module level, so that spawn can import them) ---------------


def _touch(buf: bytearray | mmap.mmap, size: int) -> None:
    """Write one byte per page so that every page is resident."""
    for offset in range(0, size, PAGE):
        buf[offset] = 1


def _private_child(conn: Connection) -> None:
    conn.send("ready")
    conn.recv()  # "go": the parent has read our baseline
    buf = bytearray(SIZE)
    _touch(buf, SIZE)
    conn.send("touched")
    conn.recv()  # "exit": the parent has read our figures
    del buf


def _shared_child(conn: Connection, mm: mmap.mmap) -> None:
    _touch(mm, SIZE)  # maps the pages the parent already populated
    conn.send("touched")
    conn.recv()  # "exit"


def _expect(conn: Connection, message: str) -> None:
    if not conn.poll(DEADLINE):
        pytest.fail(f"child did not send {message!r} within {DEADLINE} s")
    assert conn.recv() == message


def _join(proc: BaseProcess) -> None:
    proc.join(DEADLINE)
    if proc.is_alive():
        proc.kill()
        proc.join()
        pytest.fail(f"child {proc.pid} did not exit within {DEADLINE} s")


# --- _measure ---------------------------------------------------------------------


def test_proc_mem_of_self_is_consistent() -> None:
    m = proc_mem()
    assert m.rss > 0
    assert 0 <= m.uss <= m.pss <= m.rss
    assert 0 <= m.anonymous <= m.rss
    assert 0 <= m.pss_anon <= m.pss
    assert 0 <= m.pss_shmem <= m.pss
    assert m.shared + m.uss == m.rss  # every resident page is either shared or private
    assert all(v % 1024 == 0 for v in (m.rss, m.pss, m.uss, m.anonymous))


def test_private_allocation_in_spawned_child_grows_anonymous_and_uss() -> None:
    ctx = mp.get_context("spawn")
    parent_conn, child_conn = ctx.Pipe()
    proc = ctx.Process(target=_private_child, args=(child_conn,), daemon=True)
    proc.start()
    child_conn.close()
    try:
        _expect(parent_conn, "ready")
        before = proc_mem(proc.pid)
        parent_conn.send("go")
        _expect(parent_conn, "touched")
        grown = diff(proc_mem(proc.pid), before)
        parent_conn.send("exit")
    finally:
        _join(proc)
        parent_conn.close()
    assert proc.exitcode == 0
    assert grown.anonymous >= 60 * MIB, fmt_bytes(grown.anonymous)
    assert grown.uss >= 60 * MIB, fmt_bytes(grown.uss)
    assert grown.pss_anon >= 60 * MIB, fmt_bytes(grown.pss_anon)


def test_proc_mem_of_reaped_child_raises_process_lookup_error() -> None:
    proc = mp.get_context("fork").Process(target=int)
    proc.start()
    _join(proc)
    assert proc.pid is not None
    with pytest.raises(ProcessLookupError, match=str(proc.pid)):
        proc_mem(proc.pid)


def test_shared_mapping_touched_by_two_processes_splits_pss() -> None:
    ctx = mp.get_context("fork")
    base = proc_mem()
    mm = mmap.mmap(-1, SIZE)  # MAP_SHARED | MAP_ANONYMOUS: shmem pages, kept by fork
    try:
        _touch(mm, SIZE)
        parent_conn, child_conn = ctx.Pipe()
        proc = ctx.Process(target=_shared_child, args=(child_conn, mm), daemon=True)
        proc.start()
        child_conn.close()
        try:
            _expect(parent_conn, "touched")
            mine = proc_mem()
            theirs = proc_mem(proc.pid)
            parent_conn.send("exit")
        finally:
            _join(proc)
            parent_conn.close()
        alone = proc_mem()
    finally:
        mm.close()

    for who, m in (("parent", diff(mine, base)), ("child", theirs)):
        # Each of two processes is charged about half of the mapping.
        assert 0.3 * SIZE <= m.pss_shmem <= 0.7 * SIZE, (who, fmt_bytes(m.pss_shmem))
    assert theirs.shared >= 60 * MIB
    assert mine.shared - base.shared >= 60 * MIB
    # Shared memory is not "Anonymous": nothing was privately copied.
    assert mine.anonymous - base.anonymous < SIZE // 2
    # The caveat: once the child is gone, the same pages count as the parent's USS.
    assert alone.uss - mine.uss >= 60 * MIB
    assert alone.pss_shmem - base.pss_shmem >= 60 * MIB


@pytest.mark.serial
def test_machine_shmem_grows_with_shared_mapping_and_falls_back() -> None:
    before = machine_shmem()
    mm = mmap.mmap(-1, SIZE)
    try:
        _touch(mm, SIZE)
        during = machine_shmem()
    finally:
        mm.close()
    after = machine_shmem()
    assert during - before >= 60 * MIB, fmt_bytes(during - before)
    assert abs(after - before) <= 4 * MIB, fmt_bytes(after - before)


def test_mem_available_is_positive_and_below_total() -> None:
    assert 0 < mem_available() <= mem_total()


def test_diff_subtracts_field_by_field() -> None:
    a = ProcMem(10, 20, 30, 40, 50, 60, 70)
    b = ProcMem(1, 2, 3, 4, 5, 6, 80)
    assert diff(a, b) == ProcMem(9, 18, 27, 36, 45, 54, -10)


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (1000, "1000 B"),
        (1024, "1.00 KiB"),
        (1536, "1.50 KiB"),
        (512 * 1024, "512 KiB"),
        (10 * 1024 - 1, "10.0 KiB"),
        (MIB - 1, "1.00 MiB"),
        (1024**3, "1.00 GiB"),
        (-3 * MIB, "-3.00 MiB"),
        (int(12.34 * MIB), "12.3 MiB"),
    ],
)
def test_fmt_bytes_uses_binary_units_and_three_digits(n: int, text: str) -> None:
    assert fmt_bytes(n) == text


# --- _harness ---------------------------------------------------------------------


def _reporting(seconds: list[float]) -> Callable[[], float]:
    """A self-timed way that reports these durations in turn: what the harness computes from
    samples is checked on known samples, never on a clock (on a busy machine a sleep can
    last any multiple of what it asked)."""
    it = iter(seconds)
    return lambda: next(it)


def test_run_side_by_side_computes_medians_and_ratios_from_its_samples() -> None:
    result = run_side_by_side(
        [
            Way("slow", _reporting([9.0, 0.010, 0.012, 0.011, 0.030, 0.013]), self_timed=True),
            Way("fast", _reporting([9.0, 0.002, 0.001, 0.002, 0.002, 0.003]), self_timed=True),
        ],
        repeat=5,
        warmup=1,
        baseline="fast",
    )
    assert result.names == ["slow", "fast"]
    assert result.samples == {
        "slow": [0.010, 0.012, 0.011, 0.030, 0.013],  # the warm-up's 9.0 is dropped
        "fast": [0.002, 0.001, 0.002, 0.002, 0.003],
    }
    assert result.median("slow") == 0.012
    assert result.median("fast") == 0.002
    assert result.ratio("slow") == pytest.approx(6.0)
    assert result.ratio("fast") == 1


def test_run_side_by_side_interleaves_and_runs_setup_outside_timing() -> None:
    calls: list[str] = []

    log: list[str] = []

    def way(name: str) -> Way:
        if name != "a":
            return Way(name, lambda: calls.append(name))
        return Way(
            name,
            lambda: calls.append(name),
            setup=lambda: log.append("setup"),
            teardown=lambda: log.append("down"),
        )

    ways = [way("a"), way("b"), way("c")]
    run_side_by_side(ways, repeat=4, warmup=2)
    rounds = [calls[i : i + 3] for i in range(0, len(calls), 3)]
    assert len(rounds) == 6
    assert all(sorted(r) == ["a", "b", "c"] for r in rounds)
    assert [r[0] for r in rounds] == ["a", "b", "c", "a", "b", "c"]  # rotation
    assert log == ["setup", "down"] * 6


def test_run_side_by_side_charges_a_way_its_function_only(monkeypatch: pytest.MonkeyPatch) -> None:
    # A clock that moves only when a way's code moves it: the samples are then exactly what
    # was charged, whatever else the machine does.
    now = [0]
    monkeypatch.setattr(_harness.time, "perf_counter_ns", lambda: now[0])

    def advance(ns: int) -> Callable[[], None]:
        return lambda: now.__setitem__(0, now[0] + ns)

    result = run_side_by_side(
        [
            Way("slow setup", advance(1_000), setup=advance(20_000_000), teardown=advance(5)),
            Way("slow fn", advance(10_000_000)),
        ],
        repeat=3,
    )
    assert result.samples == {"slow setup": [1e-6] * 3, "slow fn": [0.01] * 3}


def test_teardown_runs_when_way_raises() -> None:
    log: list[str] = []

    def boom() -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        run_side_by_side([Way("x", boom, teardown=lambda: log.append("down"))])
    assert log == ["down"]


def test_self_timed_way_records_returned_seconds() -> None:
    result = run_side_by_side(
        [
            Way("timed here", lambda: None),
            Way("in child", lambda: 0.25, self_timed=True),
        ],
        repeat=3,
    )
    assert result.samples["in child"] == [0.25, 0.25, 0.25]
    with pytest.raises(TypeError, match="'bad' must return seconds"):
        run_side_by_side([Way("bad", lambda: None, self_timed=True)])
    with pytest.raises(ValueError, match="'neg' returned -1"):
        run_side_by_side([Way("neg", lambda: -1.0, self_timed=True)])


def test_run_side_by_side_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unique"):
        run_side_by_side([Way("x", int), Way("x", int)])
    with pytest.raises(ValueError, match="no ways"):
        run_side_by_side([])
    with pytest.raises(ValueError, match="floor 'nope'"):
        run_side_by_side([Way("x", int)], floor="nope")


def test_result_stats_and_ratios() -> None:
    result = Result(
        {"a": [5.0, 1.0, 3.0, 2.0, 4.0], "b": [2.0, 4.0, 6.0, 8.0, 10.0], "z": [0.0]},
        baseline="a",
        floor="b",
    )
    s = result.stats("a")
    assert (s.n, s.median, s.min, s.max, s.q1, s.q3, s.iqr) == (5, 3, 1, 5, 2, 4, 2)
    assert result.ratio("b") == 2
    assert result.ratio("a", "b") == 0.5
    assert math.isinf(result.ratio("a", "z"))
    data = json.loads(json.dumps(result.to_dict()))
    assert data["baseline"] == "a"
    assert data["floor"] == "b"
    assert data["ways"]["b"]["ratio_vs_baseline"] == 2
    assert data["ways"]["a"]["ratio_vs_floor"] == 0.5
    assert data["ways"]["z"]["samples"] == [0.0]


def test_to_markdown_has_header_and_every_way() -> None:
    result = Result(
        {
            "stdlib": [2e-3, 3e-3],
            "peer | lib": [1e-3],
            "shoal": [4e-6],
            "floor": [1e-6],
        },
        baseline="stdlib",
        floor="floor",
    )
    md = result.to_markdown("send 64 MiB")
    lines = md.splitlines()
    assert "send 64 MiB" in lines[0]
    table = [line for line in lines if line.startswith("|")]
    assert table[0].startswith("| way | median | min | max |")
    assert "floor" in table[0]
    assert set(table[1].replace("|", "").split()) <= {"---", "---:"}
    assert len(table) == 2 + 4
    for name in ("stdlib", "peer \\| lib", "shoal", "floor"):
        assert any(row.startswith(f"| {name} |") for row in table[2:]), name
    assert "2.50 ms" in md
    assert "4.00 µs" in md
    assert "1.00x" in md


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0 s"),
        (850e-9, "850 ns"),
        (12.34e-6, "12.3 µs"),
        (999.99e-6, "1.00 ms"),
        (2.5, "2.50 s"),
        (1234.0, "1234 s"),
        (-4e-3, "-4.00 ms"),
    ],
)
def test_fmt_duration_picks_a_human_unit(seconds: float, text: str) -> None:
    assert fmt_duration(seconds) == text


def test_memory_table_lists_each_process() -> None:
    rows = {"parent": proc_mem(), "delta": ProcMem(0, 0, -MIB, SIZE, 0, 0, 0)}
    md = memory_table(rows)
    lines = md.splitlines()
    assert lines[0].startswith("| process | Anonymous | USS | PSS |")
    assert lines[2].startswith("| parent |")
    assert lines[3] == "| delta | 64.0 MiB | -1.00 MiB | 0 B | 0 B | 0 B |"


def test_write_benchmarks_md_writes_header_facts_and_sections(tmp_path: Path) -> None:
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("old contents\n")
    sections = [section("Queue", "body one\n"), section("Map", "| a |\n| --- |\n")]
    text = write_benchmarks_md(path, sections, header="# shoal benchmarks")
    assert path.read_text(encoding="utf-8") == text
    assert text.startswith("# shoal benchmarks\n")
    for fact in ("date", "CPU", "nproc", "MemTotal", "kernel", "Python"):
        assert f"**{fact}**" in text
    assert text.index("## Queue\n\nbody one") < text.index("## Map\n\n| a |")
    assert "old contents" not in text
    assert [p.name for p in tmp_path.iterdir()] == ["BENCHMARKS.md"]


def test_size_from_env_explicit_scaled_and_invalid(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SHOAL_TEST_N", raising=False)
    monkeypatch.delenv(SCALE_ENV, raising=False)
    assert size_from_env("SHOAL_TEST_N", 1000) == 1000
    monkeypatch.setenv(SCALE_ENV, "0.5")
    assert size_from_env("SHOAL_TEST_N", 1000) == 500
    monkeypatch.setenv(SCALE_ENV, "0.0001")
    assert size_from_env("SHOAL_TEST_N", 1000) == 1  # never below the minimum
    for value, expected in (("4096", 4096), ("1_000_000", 10**6), ("1e6", 10**6)):
        monkeypatch.setenv("SHOAL_TEST_N", value)
        assert size_from_env("SHOAL_TEST_N", 1000) == expected  # explicit wins
    monkeypatch.setenv("SHOAL_TEST_N", "lots")
    with pytest.raises(ValueError, match="SHOAL_TEST_N='lots': expected an integer"):
        size_from_env("SHOAL_TEST_N", 1000)
    monkeypatch.setenv("SHOAL_TEST_N", "0")
    with pytest.raises(ValueError, match="expected an integer >= 1"):
        size_from_env("SHOAL_TEST_N", 1000)
    monkeypatch.delenv("SHOAL_TEST_N")
    monkeypatch.setenv(SCALE_ENV, "-2")
    with pytest.raises(ValueError, match=f"{SCALE_ENV}='-2'"):
        size_from_env("SHOAL_TEST_N", 1000)
