"""scripts/lint_layers.py: the layering check that `make test` runs over the C++ tree."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "lint_layers.py"


def run(root: Path | None = None) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, str(SCRIPT)] + ([str(root)] if root else [])
    return subprocess.run(args, capture_output=True, text=True, check=False)


def write(root: Path, rel: str, text: str) -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)


def test_the_repository_has_no_include_pointing_up() -> None:
    r = run()
    assert r.returncode == 0, r.stderr
    assert "every include points down" in r.stdout


def test_an_include_up_a_layer_fails_and_names_the_order(tmp_path: Path) -> None:
    write(tmp_path, "src/session/client.hpp", "#pragma once\n")
    write(tmp_path, "src/platform/os.cpp", '#include <cstdio>\n#include "session/client.hpp"\n')
    r = run(tmp_path)
    assert r.returncode == 1
    assert "src/platform/os.cpp:2: platform includes src/session/client.hpp, of session" in r.stderr
    assert "base < layout < platform < session" in r.stderr


def test_an_include_down_passes_and_nothing_includes_the_broker(tmp_path: Path) -> None:
    write(tmp_path, "src/platform/os.hpp", "#pragma once\n")
    write(tmp_path, "src/segment/seg.cpp", '#include "platform/os.hpp"\n')
    assert run(tmp_path).returncode == 0
    write(tmp_path, "src/broker/broker.hpp", "#pragma once\n")
    write(tmp_path, "src/frozen/f.cpp", '#include "broker/broker.hpp"\n')
    r = run(tmp_path)
    assert r.returncode == 1
    assert "of broker, which nothing includes" in r.stderr


def test_a_folder_in_no_layer_and_a_missing_header_fail(tmp_path: Path) -> None:
    write(tmp_path, "src/misc/x.cpp", "int x;\n")
    write(tmp_path, "src/codec/y.cpp", '#include "codec/nowhere.hpp"\n')
    r = run(tmp_path)
    assert r.returncode == 1
    assert "src/misc/x.cpp: in no layer; add its folder to LAYERS" in r.stderr
    assert 'src/codec/y.cpp:1: cannot find "codec/nowhere.hpp"' in r.stderr
