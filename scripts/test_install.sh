#!/usr/bin/env bash
# scripts/test_install.sh — a newcomer's `pip install <checkout>`, checked (`make test-install`,
# part of `make test`):
#   1. a fresh venv in a temporary directory gets the oldest numpy pyproject.toml allows;
#   2. `pip install <checkout>` builds with build isolation (pip fetches scikit-build-core,
#      nanobind and numpy for the build, as it would for anyone) and writes nothing into the
#      checkout: `git status --porcelain` is unchanged and no file there is newer than the start;
#   3. from a directory outside the checkout, the installed package shares an array and a frozen
#      dict with a spawned child;
#   4. the tests that compare shoal.Array with ndarray run under that oldest numpy.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

# The oldest numpy allowed: pyproject's runtime floor (numpy>=X.Y under [project]), at the last
# release of that minor that has wheels for the CPython this runs on.
floor=$(sed -n 's/^dependencies = \["numpy>=\([0-9.]*\)"\]$/\1/p' pyproject.toml)
declare -A OLDEST=([1.24]=1.24.4)
numpy_pin=${OLDEST[$floor]:-}
if [ -z "$numpy_pin" ]; then
  echo "test-install: pyproject.toml's numpy floor is '$floor'; name its release in OLDEST here" >&2
  exit 1
fi
test_pins=$(grep -E '^(pytest|pytest-xdist|hypothesis)==' requirements-dev.txt)

tmp=$(mktemp -d "${TMPDIR:-/tmp}/shoal-test-install.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
venv=$tmp/venv
echo "test-install: fresh venv $venv with numpy==$numpy_pin"
python3 -m venv "$venv"
# shellcheck disable=SC2086  # one argument per pin
"$venv/bin/python" -m pip install -q "numpy==$numpy_pin" $test_pins

before=$(git status --porcelain)
touch "$tmp/start"
sleep 1  # mtimes are compared below; a file written in this second must look newer
echo "test-install: pip install $root (build isolation; a few minutes)"
(cd "$tmp" && "$venv/bin/python" -m pip install -q "$root")
after=$(git status --porcelain)
if [ "$before" != "$after" ]; then
  echo "test-install: pip install changed the checkout's git status:" >&2
  diff <(echo "$before") <(echo "$after") >&2 || true
  exit 1
fi
written=$(find "$root" -path "$root/.git" -prune -o -newer "$tmp/start" -print | head -20)
if [ -n "$written" ]; then
  echo "test-install: pip install wrote into the checkout:" >&2
  echo "$written" >&2
  exit 1
fi
"$venv/bin/python" -c "import numpy; assert numpy.__version__ == '$numpy_pin', numpy.__version__"

cat > "$tmp/smoke.py" <<'PY'
import multiprocessing as mp
import sys

import numpy as np

import shoal


def child(a, d, q):
    q.put((type(a).__name__, a.sum(), type(d).__name__, d["k"][2]))


if __name__ == "__main__":
    assert shoal.__file__.startswith(sys.prefix), f"shoal imported from {shoal.__file__}"
    ctx = mp.get_context("spawn")
    a = shoal.share(np.arange(10.0))
    d = shoal.freeze({"k": [1, 2, 3]})
    q = ctx.Queue()
    p = ctx.Process(target=child, args=(a, d, q))
    p.start()
    got = q.get(timeout=120)
    p.join(120)
    assert p.exitcode == 0 and got == ("Array", 45.0, "FrozenDict", 3), (p.exitcode, got)
    assert type(got[1]) is np.float64, type(got[1])
    print(f"test-install: a spawned child read the shared array and dict (numpy {np.__version__})")
PY
(cd "$tmp" && "$venv/bin/python" smoke.py)

echo "test-install: shoal.Array against ndarray, and numpy leaves of frozen objects, under numpy $numpy_pin"
(cd "$tmp" && PYTHONDONTWRITEBYTECODE=1 "$venv/bin/python" -m pytest -q -p no:cacheprovider -n 2 \
  -m "not serial" "$root/tests/python/test_numpy_versions.py" "$root/tests/python/test_array.py")
(cd "$tmp" && PYTHONDONTWRITEBYTECODE=1 "$venv/bin/python" -m pytest -q -p no:cacheprovider -n 2 \
  -m "not serial" "$root/tests/python/test_frozen.py" -k "ndarray or numpy or leaf")
echo "test-install: ok"
