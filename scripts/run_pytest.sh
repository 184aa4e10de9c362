#!/usr/bin/env bash
# Python tests against the installed package: the parallel part (each test has its own runtime
# directory), then the serial part (tests that read machine-wide figures such as Shmem).
set -euo pipefail
PY=${1:-.venv/bin/python}
cd "$(dirname "$0")/.."
"$PY" -m pytest -q -p no:cacheprovider -n 2 -m "not serial" tests/python
"$PY" -m pytest -q -p no:cacheprovider -m serial tests/python
