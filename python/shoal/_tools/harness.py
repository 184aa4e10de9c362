"""The side-by-side runner every benchmark and the demo use, and BENCHMARKS.md.

A benchmark compares several *ways* of doing one job (the stdlib way, a peer
library, shoal, and a *floor* such as page population or a memcpy that bounds
what any way can reach) on the same data, in one run. This machine is noisy,
so the ways are run interleaved, round after round, and each is summarised by
its median and spread rather than by one run:

    result = run_side_by_side(
        [Way("pickle + pipe", send_pickled), Way("shoal", send_shared),
         Way("memcpy", copy_only)],
        repeat=5, baseline="pickle + pipe", floor="memcpy",
    )
    print(result.to_markdown("send 64 MiB to a child"))

Durations are in seconds (float). Work timed inside another process is a
``Way(..., self_timed=True)`` whose callable returns its own duration.

Every script takes its problem size from ``size_from_env`` so that ``shoal
bench`` and people in a hurry can shrink or grow it: an explicit variable wins,
otherwise the default is multiplied by ``SHOAL_BENCH_SCALE``.
"""

from __future__ import annotations

import contextlib
import gc
import math
import multiprocessing as mp
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .measure import ProcMem, fmt_bytes, mem_total

__all__ = [
    "SCALE_ENV",
    "Result",
    "Stats",
    "Way",
    "dismiss",
    "fmt_duration",
    "machine_facts",
    "memory_table",
    "run_side_by_side",
    "section",
    "size_from_env",
    "write_benchmarks_md",
]

SCALE_ENV = "SHOAL_BENCH_SCALE"
"""Environment variable: a float multiplying every benchmark's default size."""


@dataclass(frozen=True)
class Way:
    """One way of doing the job being measured.

    ``fn`` does the work once. It is timed with ``time.perf_counter_ns``
    around the call, unless ``self_timed`` is true: then ``fn`` must return
    its own duration in seconds (an ``int`` or ``float`` >= 0), e.g. a time
    measured inside a child process, and that is recorded instead.

    ``setup`` and ``teardown`` run before and after every call of ``fn``
    (warm-up calls included), outside the timed region; ``teardown`` runs even
    if ``fn`` raises. State flows between the three through a closure or an
    object's attributes.
    """

    name: str
    fn: Callable[[], object]
    setup: Callable[[], object] | None = None
    teardown: Callable[[], object] | None = None
    self_timed: bool = False


@dataclass(frozen=True)
class Stats:
    """Summary of one way's samples (same unit as the samples)."""

    n: int
    median: float
    min: float
    max: float
    q1: float
    q3: float

    @property
    def iqr(self) -> float:
        """Interquartile range, ``q3 - q1``."""
        return self.q3 - self.q1

    @classmethod
    def of(cls, samples: Sequence[float]) -> Stats:
        """Summarise a non-empty sequence of samples."""
        if not samples:
            raise ValueError("no samples to summarise")
        if len(samples) == 1:
            q1 = q3 = samples[0]
        else:
            q1, _, q3 = statistics.quantiles(samples, n=4, method="inclusive")
        return cls(
            n=len(samples),
            median=statistics.median(samples),
            min=min(samples),
            max=max(samples),
            q1=q1,
            q3=q3,
        )


@dataclass
class Result:
    """Samples per way, in the order the ways were given, and their summaries.

    ``baseline`` names the way every other is divided by in ``ratio``;
    ``floor`` optionally names a lower bound measured in the same run, which
    gets a second ratio column. ``unit`` is the samples' unit: ``"s"`` for
    durations (the runner's), ``"B"`` for bytes, anything else is printed as is.
    """

    samples: dict[str, list[float]]
    baseline: str
    floor: str | None = None
    unit: str = "s"

    def __post_init__(self) -> None:
        for name, values in self.samples.items():
            if not values:
                raise ValueError(f"way {name!r} has no samples")
        for role, way in (("baseline", self.baseline), ("floor", self.floor)):
            if way is not None and way not in self.samples:
                raise ValueError(f"{role} {way!r} is not one of the ways {list(self.samples)}")

    @property
    def names(self) -> list[str]:
        """The ways' names, in the order they were given."""
        return list(self.samples)

    def stats(self, name: str) -> Stats:
        """Median, min, max and quartiles of way ``name``."""
        return Stats.of(self.samples[name])

    def median(self, name: str) -> float:
        """Median of way ``name``."""
        return statistics.median(self.samples[name])

    def ratio(self, name: str, to: str | None = None) -> float:
        """``median(name) / median(to)``, ``to`` defaulting to the baseline.

        Greater than 1 means ``name`` took longer (used more). A zero
        denominator gives ``inf`` (or ``nan`` if the numerator is zero too).
        """
        num = self.median(name)
        den = self.median(self.baseline if to is None else to)
        if den == 0:
            return math.nan if num == 0 else math.copysign(math.inf, num)
        return num / den

    def to_markdown(self, title: str, unit: str | None = None) -> str:
        """Render a GitHub table: way | median | min | max | IQR | ratios.

        ``unit`` overrides ``self.unit``; durations get a human unit (ns, µs,
        ms, s) per cell and bytes a binary one. ``title`` becomes a bold caption
        line above the table, which also states the number of repetitions.
        """
        unit = self.unit if unit is None else unit
        counts = sorted({len(v) for v in self.samples.values()})
        reps = "/".join(str(c) for c in counts)
        header = ["way", "median", "min", "max", "IQR", f"vs {_md_escape(self.baseline)}"]
        if self.floor is not None:
            header.append(f"vs floor ({_md_escape(self.floor)})")
        lines = [
            f"**{title}** ({reps} repetitions, interleaved; ratios are of medians)",
            "",
            "| " + " | ".join(header) + " |",
            "| --- |" + " ---: |" * (len(header) - 1),
        ]
        for name in self.names:
            s = self.stats(name)
            cells = [_md_escape(name)]
            cells += [_fmt_value(v, unit) for v in (s.median, s.min, s.max, s.iqr)]
            cells.append(_fmt_ratio(self.ratio(name)))
            if self.floor is not None:
                cells.append(_fmt_ratio(self.ratio(name, self.floor)))
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: unit, baseline, floor and per-way samples/stats.

        Non-finite ratios (a zero denominator) become ``None``.
        """
        ways: dict[str, Any] = {}
        for name in self.names:
            s = self.stats(name)
            entry: dict[str, Any] = {
                "samples": list(self.samples[name]),
                "median": s.median,
                "min": s.min,
                "max": s.max,
                "q1": s.q1,
                "q3": s.q3,
                "iqr": s.iqr,
                "ratio_vs_baseline": _finite_or_none(self.ratio(name)),
            }
            if self.floor is not None:
                entry["ratio_vs_floor"] = _finite_or_none(self.ratio(name, self.floor))
            ways[name] = entry
        return {
            "unit": self.unit,
            "baseline": self.baseline,
            "floor": self.floor,
            "ways": ways,
        }


def _run_once(way: Way) -> float:
    """Run ``way`` once with its setup and teardown; return seconds."""
    if way.setup is not None:
        way.setup()
    try:
        gc.collect()  # do not charge one way for the garbage of another
        if way.self_timed:
            value = way.fn()
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(
                    f"self-timed way {way.name!r} must return seconds as a float, "
                    f"got {type(value).__name__}"
                )
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"self-timed way {way.name!r} returned {value!r} seconds")
            return float(value)
        start = time.perf_counter_ns()
        way.fn()
        return (time.perf_counter_ns() - start) / 1e9
    finally:
        if way.teardown is not None:
            way.teardown()


def run_side_by_side(
    ways: Iterable[Way],
    repeat: int = 5,
    warmup: int = 1,
    *,
    baseline: str | None = None,
    floor: str | None = None,
) -> Result:
    """Time every way ``repeat`` times, interleaved, after ``warmup`` rounds.

    Each round runs every way once; round ``r`` starts at way ``r mod n`` (a
    rotation), so no way always runs first, on the coldest caches.
    Warm-up rounds run the same way and are discarded. ``baseline`` defaults
    to the first way; ``floor`` optionally names a lower-bound way.
    """
    order = list(ways)
    if not order:
        raise ValueError("no ways to run")
    names = [w.name for w in order]
    if len(set(names)) != len(names):
        raise ValueError(f"way names must be unique, got {names}")
    if repeat < 1 or warmup < 0:
        raise ValueError(f"need repeat >= 1 and warmup >= 0, got {repeat}, {warmup}")
    samples: dict[str, list[float]] = {name: [] for name in names}
    for rnd in range(warmup + repeat):
        shift = rnd % len(order)
        for way in order[shift:] + order[:shift]:
            seconds = _run_once(way)
            if rnd >= warmup:
                samples[way.name].append(seconds)
    return Result(samples, baseline=names[0] if baseline is None else baseline, floor=floor)


def _sig3(value: float) -> str:
    """A number with three significant digits, without exponent below 1e6."""
    if not math.isfinite(value):
        return str(value)
    if abs(value) >= 999.5:
        return f"{value:.0f}"
    if value == 0:
        return "0"
    return f"{value:#.3g}".rstrip(".")


_TIME_UNITS = (("ns", 1e-9), ("µs", 1e-6), ("ms", 1e-3), ("s", 1.0))


def fmt_duration(seconds: float) -> str:
    """Format seconds in a human unit with three significant digits.

    Examples: ``850 ns``, ``12.3 µs``, ``1.00 ms``, ``2.50 s``, ``-4.00 ms``.
    """
    if seconds == 0 or not math.isfinite(seconds):
        return f"{_sig3(seconds)} s"
    for i, (unit, scale) in enumerate(_TIME_UNITS):
        value = seconds / scale
        last = i == len(_TIME_UNITS) - 1
        if last or abs(value) < 999.5:  # 999.96 µs prints as 1.00 ms, not 1000 µs
            return f"{_sig3(value)} {unit}"
    raise AssertionError("unreachable")


def _fmt_value(value: float, unit: str) -> str:
    if unit == "s":
        return fmt_duration(value)
    if unit == "B":
        return fmt_bytes(round(value))
    return f"{_sig3(value)} {unit}"


def _fmt_ratio(ratio: float) -> str:
    return "n/a" if math.isnan(ratio) else f"{_sig3(ratio)}x"


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def memory_table(rows: dict[str, ProcMem]) -> str:
    """Render per-process memory as a GitHub table.

    Columns: Anonymous (private copies), USS, PSS, PSS of shared memory, RSS.
    Rows may be absolute readings or ``diff`` results (negative values are
    printed with a sign).
    """
    lines = [
        "| process | Anonymous | USS | PSS | PSS shmem | RSS |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, m in rows.items():
        cells = [_md_escape(name)] + [
            fmt_bytes(v) for v in (m.anonymous, m.uss, m.pss, m.pss_shmem, m.rss)
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def section(title: str, body: str) -> str:
    """A level-2 markdown section: ``## title``, a blank line, then ``body``."""
    return f"## {title}\n\n{body.strip()}\n"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep and key.strip() in ("model name", "Model", "cpu model"):
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine_facts() -> dict[str, str]:
    """Facts that qualify every figure: date, CPU, nproc, RAM, kernel, Python."""
    try:
        nproc = len(os.sched_getaffinity(0))  # what `nproc` prints
    except (AttributeError, OSError):
        nproc = os.cpu_count() or 0
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "CPU": _cpu_model(),
        "nproc": str(nproc),
        "MemTotal": fmt_bytes(mem_total()),
        "kernel": platform.release(),
        "Python": f"{platform.python_implementation()} {platform.python_version()}",
    }


def write_benchmarks_md(path: str | os.PathLike[str], sections: list[str], header: str) -> str:
    """(Re)write the benchmarks file at ``path``; return the text written.

    The file is ``header``, then a list of ``machine_facts()``, then the
    sections (see ``section``) in order. It is written to a temporary file
    and renamed, so a reader never sees half a file.
    """
    facts = "\n".join(f"- **{k}**: {v}" for k, v in machine_facts().items())
    parts = [header.strip(), "Measured on:\n\n" + facts, *(s.strip() for s in sections)]
    text = "\n\n".join(p for p in parts if p) + "\n"
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return text


def size_from_env(name: str, default: int, *, minimum: int = 1) -> int:
    """The problem size for a script: the size knob every script has.

    If the environment variable ``name`` is set (e.g. ``SHOAL_BENCH_QUEUE_N``),
    it is the size, as an integer (``1_000_000`` and ``1e6`` are accepted).
    Otherwise the size is ``default`` times ``SHOAL_BENCH_SCALE`` (a float,
    1 if unset), rounded and raised to at least ``minimum``. Raises
    ``ValueError`` naming the variable if a value cannot be parsed, or if an
    explicit size is below ``minimum``.
    """
    raw = os.environ.get(name, "").strip()
    if raw:
        value = _parse_int(name, raw)
        if value < minimum:
            raise ValueError(f"{name}={raw!r}: expected an integer >= {minimum}")
        return value
    scale_raw = os.environ.get(SCALE_ENV, "").strip()
    scale = 1.0
    if scale_raw:
        try:
            scale = float(scale_raw)
        except ValueError:
            scale = math.nan
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"{SCALE_ENV}={scale_raw!r}: expected a number > 0")
    return max(minimum, round(default * scale))


def _parse_int(name: str, raw: str) -> int:
    try:
        return int(raw)  # accepts 1_000_000
    except ValueError:
        pass
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value.is_integer()):
        raise ValueError(f"{name}={raw!r}: expected an integer")
    return int(value)


class Worker:
    """A long-lived spawn worker that answers commands over a Pipe, for measurements timed
    inside another process. ``target(conn)`` must be importable by a spawned child (module
    level), serve tuples ``(command, *args)`` and return on ``("exit",)``."""

    def __init__(self, target: Callable[..., None], deadline: float = 120.0) -> None:
        ctx = mp.get_context("spawn")
        self.deadline = deadline
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=target, args=(child,), daemon=True)
        self.proc.start()
        child.close()

    @property
    def pid(self) -> int:
        assert self.proc.pid is not None
        return self.proc.pid

    def ask(self, *cmd: object) -> Any:
        """Send a command and wait for its answer."""
        self.conn.send(cmd)
        return self.answer(cmd[0])

    def answer(self, what: object = "") -> Any:
        """Wait (up to the deadline) for the worker's next message."""
        if not self.conn.poll(self.deadline):
            raise RuntimeError(f"the worker did not answer {what!r}")
        return self.conn.recv()

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.send(("exit",))
        self.proc.join(self.deadline)
        self.conn.close()


def dismiss(conns: Sequence[Any], procs: Sequence[Any], timeout: float) -> None:
    """End a scene's children: tell each one it may exit ("done" on its pipe; one already gone
    is fine), wait up to `timeout` seconds for each, then close the pipes."""
    for c in conns:
        with contextlib.suppress(OSError):
            c.send("done")
    for p in procs:
        p.join(timeout)
    for c in conns:
        c.close()
