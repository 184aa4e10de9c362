#!/usr/bin/env python3
"""Fails when a C++ include points up a layer (run by `make lint-layers`, part of `make test`).

Usage: lint_layers.py [ROOT]  (default: this repository)

The layers, bottom up. A file may include headers of its own layer and of the layers below it,
never above; a layer in LEAVES (an executable) is included by nobody else. Every folder of src/
and every public header must be listed, so a new one is placed on purpose.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent

# (layer, the paths that belong to it, relative to the repository root), bottom up.
LAYERS: list[tuple[str, list[str]]] = [
    ("base", ["src/base/", "include/shoal/error.hpp"]),
    ("layout", ["src/layout/", "include/shoal/detail/"]),
    ("platform", ["src/platform/", "include/shoal/system.hpp"]),
    (
        "session",
        [
            "src/session/",
            "include/shoal/handle.hpp",
            "include/shoal/kind.hpp",
            "include/shoal/session.hpp",
        ],
    ),
    ("broker", ["src/broker/"]),
    ("segment", ["src/segment/", "include/shoal/segment.hpp"]),
    ("sync", ["src/sync/", "include/shoal/sync.hpp"]),
    ("memory", ["src/memory/", "include/shoal/heap.hpp"]),
    ("codec", ["src/codec/", "include/shoal/codec.hpp"]),
    (
        "objects",
        [
            "src/array/",
            "src/frozen/",
            "src/containers/",
            "src/channels/",
            "include/shoal/array.hpp",
            "include/shoal/frozen.hpp",
            "include/shoal/dict.hpp",
            "include/shoal/list.hpp",
            "include/shoal/queue.hpp",
        ],
    ),
    ("umbrella", ["include/shoal/shoal.hpp"]),
    ("bindings", ["python/bindings/"]),
]
LEAVES = {"broker"}
CHECKED = ["src", "include/shoal", "python/bindings"]
INCLUDE_DIRS = ["src", "include"]  # where a quoted include is looked up, after the file's folder

RANK = {name: i for i, (name, _) in enumerate(LAYERS)}
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.MULTILINE)


def layer_of(rel: str) -> str | None:
    best = None
    for name, prefixes in LAYERS:
        for p in prefixes:
            if (rel == p or (p.endswith("/") and rel.startswith(p))) and (
                best is None or len(p) > len(best[1])
            ):
                best = (name, p)
    return best[0] if best else None


def resolve(src: Path, target: str) -> str | None:
    for base in [src.parent] + [ROOT / d for d in INCLUDE_DIRS]:
        cand = (base / target).resolve()
        if cand.is_file():
            return cand.relative_to(ROOT).as_posix()
    return None


def main() -> int:
    errors: list[str] = []
    files = sorted(
        f for d in CHECKED for f in (ROOT / d).rglob("*") if f.suffix in {".hpp", ".cpp", ".h"}
    )
    for f in files:
        rel = f.relative_to(ROOT).as_posix()
        mine = layer_of(rel)
        if mine is None:
            errors.append(f"{rel}: in no layer; add its folder to LAYERS in {Path(__file__).name}")
            continue
        text = f.read_text()
        for m in INCLUDE.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            target = resolve(f, m.group(1))
            if target is None:
                errors.append(f'{rel}:{line}: cannot find "{m.group(1)}"')
                continue
            theirs = layer_of(target)
            if theirs is None:
                errors.append(f'{rel}:{line}: "{m.group(1)}" is in no layer')
            elif theirs in LEAVES and theirs != mine:
                errors.append(
                    f"{rel}:{line}: includes {target}, of {theirs}, which nothing includes"
                )
            elif RANK[theirs] > RANK[mine]:
                errors.append(
                    f"{rel}:{line}: {mine} includes {target}, of {theirs}, a layer above it "
                    f"(order: {' < '.join(n for n, _ in LAYERS)})"
                )
    for e in errors:
        print(e, file=sys.stderr)
    if errors:
        print(f"lint-layers: {len(errors)} include(s) break the layering", file=sys.stderr)
        return 1
    print(f"lint-layers: {len(files)} files, every include points down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
