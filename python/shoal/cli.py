"""The ``shoal`` console script: look at, clean up and demonstrate shared memory.

Subcommands::

    shoal ls [--json]                 live and dead sessions, their objects, named objects
    shoal gc [--pins] [--cycles] [DIR...]
                                      remove the runtime files of dead sessions, and the
                                      temporary files of killed shoal.save calls in each DIR;
                                      --pins: drop the pins of handles whose sender died;
                                      --cycles: free reference cycles that nothing holds
    shoal rm NAME [NAME...]           remove named (persistent) objects
    shoal info [--json]               what this machine lets shoal do, and where things live
    shoal demo [--size-mb N]          the demo scenes (see shoal._tools.demo)
    shoal bench [--out F] [--quick]   run bench/python/*.py and write BENCHMARKS.md

Every subcommand returns 0 on success and 1 on a failure the user can act on, with
the message on stderr (``shoal: ...``); argparse's usage errors return 2.

``ls`` asks each live session's broker to describe itself over a temporary connection,
so listing never keeps a broker alive.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from . import __version__, _kinds, _shoal
from ._tools.measure import fmt_bytes

__all__ = ["main"]

_BENCH_HEADER = """\
# shoal benchmarks

Written by `shoal bench` from the scripts in `bench/python/`. Every table compares
ways of doing one job side by side, in one run, interleaved, and reports medians
and spreads; ratios are of medians. Memory is per process (from
`/proc/PID/smaps_rollup`) plus the machine's Shmem. `make bench` (or `shoal bench`) reproduces every figure on your machine.
"""


# --------------------------------------------------------------------------------------
# helpers


def _err(msg: str) -> None:
    print(f"shoal: {msg}", file=sys.stderr)


def _dir_or_reason(fn: Callable[[bool], str]) -> tuple[str | None, str]:
    """``(path, "")`` if the directory exists and is usable, else ``(None, why)``.

    Never creates the directory: looking must not change anything.
    """
    try:
        return fn(False), ""
    except _shoal.ShoalError as exc:
        return None, str(exc)


def _age(unix: float) -> str:
    secs = max(0.0, time.time() - unix)
    if secs < 120:
        return f"{secs:.0f} s"
    if secs < 7200:
        return f"{secs / 60:.0f} min"
    return f"{secs / 3600:.1f} h"


def _table(rows: list[list[str]], out: TextIO, indent: str = "  ") -> None:
    """Print rows as left-aligned columns; the first row is the header."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        line = "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
        print(indent + line.rstrip(), file=out)


# --------------------------------------------------------------------------------------
# ls


def _collect() -> dict[str, Any]:
    """Everything ``shoal ls`` shows, as JSON-ready data."""
    runtime, runtime_why = _dir_or_reason(_shoal.runtime_dir)
    sessions: list[dict[str, Any]] = []
    for entry in _shoal.list_sessions() if runtime is not None else []:
        desc: dict[str, Any] | None = None
        if entry["describe_json"]:
            try:
                desc = json.loads(entry["describe_json"])
            except ValueError:
                desc = None
        if desc is not None:
            # Our own connection (made to ask for this description) is not a user of it.
            desc["connections"] = [
                c
                for c in desc.get("connections", [])
                if not (c.get("pid") == os.getpid() and c.get("refs", 0) == 0)
            ]
        sessions.append(
            {
                "id": entry["id"],
                "alive": bool(entry["alive"]),
                "broker_pid": entry["broker_pid"],
                "describe": desc,
            }
        )
    named_dir, named_why = _dir_or_reason(_shoal.named_dir)
    named: list[dict[str, Any]] = []
    if named_dir is not None:
        named = [dict(e) for e in _shoal.list_named()]
    return {
        "runtime_dir": runtime,
        "runtime_dir_note": runtime_why,
        "sessions": sessions,
        "named_dir": named_dir,
        "named_dir_note": named_why,
        "named": named,
    }


def _print_session(s: dict[str, Any], out: TextIO) -> None:
    short = s["id"][:12]
    if not s["alive"]:
        print(
            f"session {short}  DEAD (broker pid {s['broker_pid']} is gone; "
            "its files remain: run `shoal gc`)",
            file=out,
        )
        return
    d = s["describe"]
    if d is None:
        print(
            f"session {short}  alive, broker pid {s['broker_pid']} (did not answer)",
            file=out,
        )
        return
    objects = d.get("objects", [])
    total = sum(int(o.get("size", 0)) for o in objects)
    print(
        f"session {short}  alive, broker pid {d.get('broker_pid', s['broker_pid'])}, "
        f"up {_age(d.get('started_unix', time.time()))}, "
        f"{len(objects)} object(s), {fmt_bytes(total)}, pin TTL {d.get('pin_ttl_s', '?')} s",
        file=out,
    )
    conns = d.get("connections", [])
    if conns:
        procs = ", ".join(f"{c['pid']} ({c['refs']} refs)" for c in conns)
        print(f"  processes: {procs}", file=out)
    else:
        print("  processes: none connected", file=out)
    if not objects:
        return
    # REFERS TO: the objects this one keeps alive (add_reference), "xN" when counted N times;
    # REFERRED BY: how many objects keep this one alive.
    rows = [
        [
            "OBJECT",
            "KIND",
            "SIZE",
            "MODE",
            "CREATOR",
            "REFS",
            "HOLDERS",
            "PINS",
            "REFERS TO",
            "REFERRED BY",
        ]
    ]
    for o in sorted(objects, key=lambda o: (o.get("created_unix", 0), o["id"])):
        pins = str(o.get("pins", 0))
        if "pin_expires_in_s" in o:
            pins += f" (next expires in {float(o['pin_expires_in_s']):.0f} s)"
        holders = ",".join(str(p) for p in o.get("holders", [])) or "-"
        refers_to = (
            ",".join(
                r["id"][:12] + (f" x{r['count']}" if int(r.get("count", 1)) > 1 else "")
                for r in sorted(o.get("refs_out", []), key=lambda r: r["id"])
            )
            or "-"
        )
        rows.append(
            [
                o["id"][:12],
                _kinds.kind_name(int(o.get("kind", 0))),
                fmt_bytes(int(o.get("size", 0))),
                "ro" if o.get("read_only") else "rw",
                str(o.get("creator_pid", "?")),
                str(o.get("refs", 0)),
                holders,
                pins,
                refers_to,
                str(o.get("referrers", 0)),
            ]
        )
    _table(rows, out)
    edges, collected = d.get("edges", 0), d.get("collected", 0)
    if edges or collected:
        print(
            f"  references: {edges} edge(s) between objects; {collected} object(s) in "
            "unreachable cycles freed so far",
            file=out,
        )


def _print_ls(data: dict[str, Any], out: TextIO) -> None:
    if data["runtime_dir"] is None:
        print(f"sessions: none ({data['runtime_dir_note']})", file=out)
    else:
        live = sum(1 for s in data["sessions"] if s["alive"])
        dead = len(data["sessions"]) - live
        print(
            f"sessions in {data['runtime_dir']}: {live} live, {dead} dead",
            file=out,
        )
        for s in data["sessions"]:
            _print_session(s, out)
        if dead:
            print(
                f"hint: `shoal gc` removes the files of the {dead} dead session(s)",
                file=out,
            )
    print(file=out)
    if data["named_dir"] is None:
        print(f"named objects: none ({data['named_dir_note']})", file=out)
        return
    named = data["named"]
    total = sum(int(e.get("size", 0)) for e in named)
    print(
        f"named objects in {data['named_dir']}: {len(named)}, {fmt_bytes(total)} "
        "(they persist until `shoal rm NAME`)",
        file=out,
    )
    if named:
        rows = [["NAME", "SIZE", "PATH"]]
        for e in sorted(named, key=lambda e: e["name"]):
            size = fmt_bytes(int(e.get("size", 0)))
            if e.get("valid") is False:
                size += " (not a valid shoal segment)"
            rows.append([e["name"], size, e.get("path", "")])
        _table(rows, out)


def _cmd_ls(args: argparse.Namespace) -> int:
    data = _collect()
    if args.json:
        json.dump(data, sys.stdout, indent=2)
        print()
    else:
        _print_ls(data, sys.stdout)
    return 0


# --------------------------------------------------------------------------------------
# gc, rm


def _session_files(runtime: str) -> dict[str, set[str]]:
    """Session id -> the suffixes (".lock", ".sock") of its files in the runtime dir."""
    found: dict[str, set[str]] = {}
    for name in os.listdir(runtime):
        stem, suffix = name[:-5], name[-5:]
        if len(stem) == 32 and suffix in (".lock", ".sock"):
            try:
                int(stem, 16)
            except ValueError:
                continue
            found.setdefault(stem, set()).add(suffix)
    return found


def _cmd_gc(args: argparse.Namespace) -> int:
    runtime, why = _dir_or_reason(_shoal.runtime_dir)
    if runtime is None:
        print(f"no runtime files to clean: {why}")
    else:
        removed = _shoal.gc()
        live = sum(1 for suffixes in _session_files(runtime).values() if ".lock" in suffixes)
        print(
            f"removed the runtime files of {removed} dead session(s) in {runtime}; "
            f"{live} live session(s) left untouched"
        )
    status = 0
    if args.pins:
        for s in _shoal.list_sessions():
            if not s["alive"]:
                continue
            try:
                n = _shoal.drop_orphan_pins(s["id"])
            except _shoal.ShoalError as exc:
                _err(f"gc: cannot drop the pins of session {s['id']}: {exc}")
                status = 1
                continue
            print(f"dropped {n} pin(s) of dead senders in session {s['id']}")
    if args.cycles:
        for s in _shoal.list_sessions():
            if not s["alive"]:
                continue
            try:
                n = _shoal.collect_cycles(s["id"])
            except _shoal.ShoalError as exc:
                _err(f"gc: cannot collect the reference cycles of session {s['id']}: {exc}")
                status = 1
                continue
            print(f"freed {n} object(s) in unreachable reference cycles in session {s['id']}")
    # shoal.save writes anywhere, so only the user knows where a killed save left its
    # temporary file: gc looks in the directories it is given, and only there.
    for d in args.dirs:
        try:
            paths = _shoal.frozen_remove_dead_temps(d)
        except _shoal.ShoalError as exc:
            _err(f"gc: cannot look for temporary files in {d}: {exc}")
            status = 1
            continue
        for p in paths:
            print(f"removed {p}")
        print(f"removed {len(paths)} temporary file(s) of dead shoal.save calls in {d}")
    return status


def _cmd_rm(args: argparse.Namespace) -> int:
    status = 0
    for name in args.names:
        try:
            _shoal.remove_named(name)
        except _shoal.SegmentNotFoundError:
            where, why = _dir_or_reason(_shoal.named_dir)
            _err(
                f"rm: no named object {name!r} {f'in {where}' if where else f'({why})'}; "
                "`shoal ls` lists them"
            )
            status = 1
        except _shoal.ShoalError as exc:
            _err(f"rm: cannot remove {name!r}: {exc}")
            status = 1
        else:
            print(f"removed {name}")
    return status


# --------------------------------------------------------------------------------------
# info


def _info() -> dict[str, Any]:
    mi = _shoal.memory_info()
    runtime, runtime_why = _dir_or_reason(_shoal.runtime_dir)
    named, named_why = _dir_or_reason(_shoal.named_dir)
    broker = _shoal.broker_path()
    return {
        "version": __version__,
        "python": sys.version.split()[0],
        "memfd_supported": bool(_shoal.memfd_supported()),
        "mem_available": mi["mem_available"],
        "cgroup_limit": mi["cgroup_limit"],
        "cgroup_current": mi["cgroup_current"],
        "max_bytes": mi["max_bytes"],
        "max_bytes_env": os.environ.get("SHOAL_MAX_BYTES"),
        "headroom": mi["headroom"],
        "dev_shm_total": mi["dev_shm_total"],
        "dev_shm_free": mi["dev_shm_free"],
        "runtime_dir": runtime,
        "runtime_dir_note": runtime_why,
        "named_dir": named,
        "named_dir_note": named_why,
        "broker_path": broker,
        "broker_ok": bool(broker) and os.access(broker, os.X_OK),
        "pin_ttl_s": _shoal.pin_ttl(),
    }


def _opt_bytes(v: int | None, none: str) -> str:
    return none if v is None else fmt_bytes(int(v))


def _cmd_info(args: argparse.Namespace) -> int:
    i = _info()
    if args.json:
        json.dump(i, sys.stdout, indent=2)
        print()
        return 0
    if i["cgroup_limit"] is None:
        cgroup = "no limit"
    else:
        cgroup = (
            f"{fmt_bytes(i['cgroup_limit'])} limit, {_opt_bytes(i['cgroup_current'], '?')} in use"
        )
    if i["max_bytes_env"] is None:
        max_bytes = "not set (no limit of shoal's own)"
    elif i["max_bytes"] is None:
        max_bytes = f"{i['max_bytes_env']!r} is not a byte count: every create will fail"
    else:
        max_bytes = f"{fmt_bytes(i['max_bytes'])} per session"
    rows = [
        ("shoal", i["version"]),
        ("python", i["python"]),
        (
            "memfd",
            "supported (anonymous segments live in RAM, not in /dev/shm)"
            if i["memfd_supported"]
            else "NOT supported: anonymous segments cannot be created here",
        ),
        ("MemAvailable", fmt_bytes(i["mem_available"])),
        ("cgroup memory", cgroup),
        ("SHOAL_MAX_BYTES", max_bytes),
        ("largest new segment", f"{fmt_bytes(i['headroom'])} (before SHOAL_MAX_BYTES)"),
        (
            "/dev/shm",
            (
                f"{fmt_bytes(i['dev_shm_total'])} size, {fmt_bytes(i['dev_shm_free'])} free "
                "(the limit for named objects only)"
            ),
        ),
        ("runtime dir", i["runtime_dir"] or f"none yet ({i['runtime_dir_note']})"),
        ("named dir", i["named_dir"] or f"none yet ({i['named_dir_note']})"),
        (
            "broker",
            i["broker_path"] + ("" if i["broker_ok"] else "  (MISSING or not executable)"),
        ),
        ("pin TTL", f"{i['pin_ttl_s']:g} s (SHOAL_PIN_TTL)"),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k.ljust(width)}  {v}")
    return 0 if i["broker_ok"] and i["memfd_supported"] else 1


# --------------------------------------------------------------------------------------
# demo


def _cmd_demo(args: argparse.Namespace) -> int:
    from ._tools import demo as _demo

    if args.list:
        for scene in _demo.SCENES:
            print(f"{scene.name:12}  {scene.title}")
        return 0
    return _demo.run(size_mb=args.size_mb, scenes=args.scene or None)


# --------------------------------------------------------------------------------------
# bench

# Runs one script in a fresh interpreter as its ``__main__`` module, the way ``python
# script.py`` would, minus its ``if __name__ == "__main__":`` block; then calls
# run(quick) and writes the section to the file named by argv[3]. Being ``__main__``
# matters: multiprocessing's spawn and forkserver children re-run the main script by
# path to find the functions they are given, and cloudpickle (joblib, loky) pickles
# functions of ``__main__`` by value.
_BENCH_DRIVER = """\
import ast, os, sys, types
path, quick, out = sys.argv[1], sys.argv[2] == "1", sys.argv[3]
sys.argv = [path] + (["--quick"] if quick else [])
sys.path.insert(0, os.path.dirname(path))
with open(path, encoding="utf-8") as f:
    tree = ast.parse(f.read(), path)

def is_main_block(node):
    t = node.test if isinstance(node, ast.If) else None
    return (isinstance(t, ast.Compare) and isinstance(t.left, ast.Name)
            and t.left.id == "__name__" and len(t.comparators) == 1
            and isinstance(t.comparators[0], ast.Constant)
            and t.comparators[0].value == "__main__")

tree.body = [n for n in tree.body if not is_main_block(n)]
main = types.ModuleType("__main__")
main.__file__ = path
main.__builtins__ = __builtins__
sys.modules["__main__"] = main
exec(compile(tree, path, "exec"), main.__dict__)
run = main.__dict__.get("run")
if not callable(run):
    sys.exit(f"{path}: defines no run(quick: bool) -> str")
section = run(quick)
if not isinstance(section, str):
    sys.exit(f"{path}: run() returned {type(section).__name__}, not str")
with open(out, "w", encoding="utf-8") as f:
    f.write(section)
"""


def _bench_scripts(directory: Path) -> list[Path]:
    return sorted(p for p in directory.glob("*.py") if not p.name.startswith("_"))


def _run_bench_script(script: Path, quick: bool) -> tuple[str | None, float]:
    """Run one script in its own process; returns (section or None, seconds)."""
    with tempfile.TemporaryDirectory(prefix="shoal-bench-") as tmp:
        out = Path(tmp) / "section.md"
        start = time.monotonic()
        proc = subprocess.run(
            [
                sys.executable,
                "-c",
                _BENCH_DRIVER,
                str(script.resolve()),
                "1" if quick else "0",
                str(out),
            ],
            check=False,
        )
        seconds = time.monotonic() - start
        if proc.returncode != 0 or not out.exists():
            return None, seconds
        return out.read_text(encoding="utf-8"), seconds


def _cmd_bench(args: argparse.Namespace) -> int:
    from ._tools.harness import section, write_benchmarks_md

    directory = Path(args.dir) if args.dir else Path("bench") / "python"
    if not directory.is_dir():
        _err(f"bench: no directory {str(directory)!r}; run from the repository root or pass --dir")
        return 1
    scripts = _bench_scripts(directory)
    if args.only:
        scripts = [p for p in scripts if p.stem in set(args.only)]
    if not scripts:
        _err(f"bench: no benchmark scripts (*.py) in {directory}")
        return 1
    sections: list[str] = []
    failed: list[str] = []
    for script in scripts:
        print(f"shoal bench: {script} ...", file=sys.stderr, flush=True)
        text, seconds = _run_bench_script(script, args.quick)
        if text is None:
            failed.append(script.name)
            sections.append(section(script.stem, f"**{script.name} failed**; see its output."))
            print(f"shoal bench: {script.name} FAILED after {seconds:.1f} s", file=sys.stderr)
        else:
            sections.append(text)
            print(f"shoal bench: {script.name} done in {seconds:.1f} s", file=sys.stderr)
    mode = "quick mode (`--quick`, small sizes)" if args.quick else "full size"
    header = _BENCH_HEADER + f"\nThis file was produced in {mode} by `shoal bench`.\n"
    out = args.out
    if out is None and args.only:
        # A partial run must not replace the full BENCHMARKS.md: print it instead.
        print("\n".join(sections))
    else:
        out = out or "BENCHMARKS.md"
        write_benchmarks_md(out, sections, header)
        print(f"wrote {out} ({len(sections)} section(s))")
    if failed:
        _err(f"bench: {len(failed)} script(s) failed: {', '.join(failed)}")
        return 1
    return 0


# --------------------------------------------------------------------------------------
# main


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="shoal",
        description="Inspect and clean up shoal's shared memory; run the demo and benchmarks.",
    )
    p.add_argument("--version", action="version", version=f"shoal {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    ls = sub.add_parser("ls", help="list sessions, their objects, and named objects")
    ls.add_argument("--json", action="store_true", help="print JSON instead of tables")
    ls.set_defaults(func=_cmd_ls)

    gc = sub.add_parser(
        "gc",
        help="remove the runtime files of dead sessions, and the temporary files of killed "
        "shoal.save calls in each DIR",
    )
    gc.add_argument(
        "dirs",
        nargs="*",
        metavar="DIR",
        help="a directory to clear of NAME.shoal-tmp-XXXXXX files whose writer is dead "
        "(a file still being written is never removed); not searched recursively",
    )
    gc.add_argument(
        "--pins",
        action="store_true",
        help="also drop, in every live session, the pins of handles whose sending process "
        "has died (only when none of those handles is still in a queue or pipe: it would "
        "then attach as stale). Pins otherwise expire after SHOAL_PIN_TTL, at most 24 hours",
    )
    gc.add_argument(
        "--cycles",
        action="store_true",
        help="also free, in every live session, objects that only reference cycles keep alive "
        "(no process holds or pins any object that refers to them). Always safe; the broker "
        "does it anyway whenever a process of the session exits",
    )
    gc.set_defaults(func=_cmd_gc)

    rm = sub.add_parser("rm", help="remove named (persistent) objects")
    rm.add_argument("names", nargs="+", metavar="NAME")
    rm.set_defaults(func=_cmd_rm)

    info = sub.add_parser("info", help="limits, directories and settings on this machine")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(func=_cmd_info)

    demo = sub.add_parser("demo", help="show what shoal does, next to the stdlib way")
    demo.add_argument(
        "--size-mb",
        type=int,
        default=256,
        metavar="N",
        help="size of the shared segment in MiB (default 256)",
    )
    demo.add_argument(
        "--scene", action="append", metavar="NAME", help="run only this scene (repeatable)"
    )
    demo.add_argument("--list", action="store_true", help="list the scenes and exit")
    demo.set_defaults(func=_cmd_demo)

    bench = sub.add_parser("bench", help="run bench/python/*.py and write BENCHMARKS.md")
    bench.add_argument(
        "--out", help="file to write (default BENCHMARKS.md; with --only, print instead)"
    )
    bench.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    bench.add_argument("--dir", help="directory of the scripts (default: ./bench/python)")
    bench.add_argument("--only", action="append", metavar="NAME", help="run only this script")
    bench.set_defaults(func=_cmd_bench)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``shoal`` command line; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        status: int = args.func(args)
    except _shoal.ShoalError as exc:
        _err(str(exc))
        return 1
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
    return status


if __name__ == "__main__":
    sys.exit(main())
