#!/usr/bin/env bash
# scripts/setup.sh [--test | --bench] — make a fresh Debian machine ready: Debian packages, then
# .venv with the pinned pip packages. Idempotent, and quick when everything is already there
# (dpkg -s, and a stamp per requirements file).
#
#   scripts/setup.sh          what building and running shoal needs (make install, make demo):
#                             a C++20 compiler, CMake >= 3.24, make, Python headers and venv;
#                             requirements-build.txt (scikit-build-core, nanobind, numpy)
#   scripts/setup.sh --bench  also the peers and tools of requirements-dev.txt (make bench)
#   scripts/setup.sh --test   also what only the test targets need (make dev/asan/tsan/fuzz,
#                             make test): GoogleTest, clang-16 and its libFuzzer runtime, git,
#                             and requirements-dev.txt (pytest, ruff, mypy, the peers)
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(g++ cmake make python3-dev python3-venv)
REQUIREMENTS=requirements-build.txt
case "${1:-}" in
  "") ;;
  --bench) REQUIREMENTS=requirements-dev.txt ;;
  --test)
    APT_PACKAGES+=(libgtest-dev clang-16 libclang-rt-16-dev git)
    REQUIREMENTS=requirements-dev.txt
    ;;
  *)
    echo "usage: scripts/setup.sh [--test | --bench]" >&2
    exit 2
    ;;
esac
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}"
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PY" -m venv .venv
fi
# requirements-dev.txt includes requirements-build.txt: its stamp covers both files.
stamp=.venv/.$REQUIREMENTS.stamp
if [ ! -f "$stamp" ] || ! cat requirements-build.txt "$REQUIREMENTS" | cmp -s - "$stamp"; then
  echo "setup: installing pip packages ($REQUIREMENTS)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r "$REQUIREMENTS"
  cat requirements-build.txt "$REQUIREMENTS" >"$stamp"
fi
