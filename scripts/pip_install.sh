#!/usr/bin/env bash
# scripts/pip_install.sh PYTHON — build shoal from this checkout and install it (not editable)
# into PYTHON's environment, with the build packages already there (--no-build-isolation): used
# by `make install` and scripts/test_other_pythons.sh.
#
# The CMake build tree stays in build/<wheel tag>, so a rebuild compiles only what changed (a
# plain `pip install .` builds in a temporary directory, and leaves the checkout untouched).
# CMake's progress lines are shown as it compiles; pip's whole output goes to build/, and its
# end is printed if the install fails.
set -euo pipefail
cd "$(dirname "$0")/.."
py=$1
mkdir -p build
log=build/install-$(basename "$(dirname "$(dirname "$py")")").log
echo "install: building shoal for $("$py" -c 'import sys; print(sys.version.split()[0])') (pip's output: $log)"
set +e
# Ninja prints "[3/18] Building ...", Make "[ 12%] Building ...": keep those, without the
# CMakeFiles/<target>.dir/ prefix of each object.
"$py" -m pip install -v --no-build-isolation -Cbuild-dir='build/{wheel_tag}' . 2>&1 |
  tee "$log" |
  grep --line-buffered -E '^ *\[ *[0-9]+(%|/[0-9]+)\] ' |
  sed -u -E 's#^ +#  #; s#CMakeFiles/[^ ]*\.dir/##'
rc=${PIPESTATUS[0]}
set -e
if [ "$rc" -ne 0 ]; then
  tail -n 60 "$log" >&2
  echo "install: pip failed (exit $rc); the whole output is in $log" >&2
  exit "$rc"
fi
echo "install: $(grep -E '^Successfully installed' "$log" || echo 'shoal is up to date')"
