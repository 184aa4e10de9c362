"""The seed examples at a size where their memory checks mean something (256 MiB: the 1%
rule allows a worker 2.56 MiB of private growth, a hundredth of a copy).

Each example checks its own figures and exits 1 if one fails; these tests also read the
figures it writes with ``--json`` and check them again, so a broken check cannot pass
silently. Serial: they read the machine's Shmem.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
from typing import Any

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples" / "python"
SIZE_MB = 256
SLACK = 4 << 20


def _run(script: str, method: str, tmp_path: pathlib.Path) -> tuple[dict[str, Any], str]:
    out = tmp_path / "figures.json"
    r = subprocess.run(
        [
            sys.executable,
            str(EXAMPLES / script),
            "--size-mb",
            str(SIZE_MB),
            "--start-method",
            method,
            "--json",
            str(out),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    figures: dict[str, Any] = json.loads(out.read_text())
    return figures, r.stdout


@pytest.mark.serial
@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_seed003_workers_share_one_copy_of_the_matrix(method: str, tmp_path: pathlib.Path) -> None:
    f, stdout = _run("seed003_shared_matrix.py", method, tmp_path)
    nbytes = f["bytes"]
    assert nbytes == SIZE_MB << 20
    assert f["anonymous_limit"] == max(nbytes // 100, 2 << 20)
    assert f["ok"] is True
    assert len(f["workers"]) == 5
    for w in f["workers"]:
        assert w["block_ok"] and w["whole_ok"]
        assert w["kind"] == "Array" and w["writeable"] is False  # a read-only shoal.Array
        assert w["anonymous_growth"] <= f["anonymous_limit"]
        assert str(w["pid"]) in stdout  # each worker's figures are printed
    assert f["shmem_growth"] <= nbytes + SLACK
    # The shared pages that this process and the workers map add up to one copy: every
    # worker read all of it (so the measurement saw the pages), and nobody had another.
    assert 0.98 * nbytes <= f["pss_shmem_total"] <= nbytes + SLACK
    assert "Shmem grew by" in stdout and "private growth" in stdout


@pytest.mark.serial
@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_seed000_shoal_workers_copy_nothing_under_any_start_method(
    method: str, tmp_path: pathlib.Path
) -> None:
    f, stdout = _run("seed000_numpy_fork.py", method, tmp_path)
    limit = f["anonymous_limit"]
    assert f["ok"] is True
    runs = {r["way"]: r for r in f["runs"]}
    shoal_run, seed_run = runs["shoal.share"], runs["the seed's global np.ones"]
    nbytes = shoal_run["bytes"]
    assert limit == max(nbytes // 100, 2 << 20) and nbytes > (SIZE_MB - 1) << 20
    for w in shoal_run["workers"]:
        assert w["sum_ok"]
        assert w["anonymous_growth"] <= limit
        assert w["pss_shmem"] > 0  # it mapped and read the shared pages
        assert str(w["pid"]) in stdout
    assert shoal_run["shmem_growth"] <= nbytes + SLACK
    # The seed's global: shared by fork's copy-on-write, a private copy per worker under
    # spawn. This is what the measurement must see, or the checks above prove nothing.
    for w in seed_run["workers"]:
        assert w["sum_ok"]
        if method == "fork":
            assert w["anonymous_growth"] <= limit
        else:
            assert w["anonymous_growth"] >= 0.9 * nbytes
