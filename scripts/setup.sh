#!/usr/bin/env bash
# scripts/setup.sh [--test] — make a fresh Debian machine ready: Debian packages, then .venv with
# the pinned pip packages. Idempotent, and quick when everything is already there (dpkg -s).
#
#   scripts/setup.sh          what building and running shoal needs (make install, make demo):
#                             a C++20 compiler, CMake >= 3.24, make, Python headers and venv
#   scripts/setup.sh --test   also what only the test targets need (make dev/asan/tsan/fuzz,
#                             make test): GoogleTest, clang-16 and its libFuzzer runtime, git
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(g++ cmake make python3-dev python3-venv)
if [ "${1:-}" = "--test" ]; then
  APT_PACKAGES+=(libgtest-dev clang-16 libclang-rt-16-dev git)
elif [ $# -gt 0 ]; then
  echo "usage: scripts/setup.sh [--test]" >&2
  exit 2
fi
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
stamp=.venv/.requirements-dev.stamp
if [ ! -f "$stamp" ] || ! cmp -s requirements-dev.txt "$stamp"; then
  echo "setup: installing pip packages"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r requirements-dev.txt
  cp requirements-dev.txt "$stamp"
fi
