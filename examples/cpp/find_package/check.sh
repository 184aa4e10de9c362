#!/usr/bin/env bash
# examples/cpp/find_package/check.sh SOURCE_DIR WORK_DIR CXX — the ctest example_find_package:
# builds shoal's library and broker with the install prefix WORK_DIR/prefix, installs them there,
# deletes that build tree (so the library can only find the installed broker), then configures
# this example against the prefix with find_package(shoal), builds it and runs it.
set -euo pipefail
src=$1 work=$2 cxx=$3
rm -rf "$work"
mkdir -p "$work/run"
cmake -S "$src" -B "$work/shoal" -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_COMPILER="$cxx" \
  -DCMAKE_INSTALL_PREFIX="$work/prefix" -DSHOAL_BUILD_TESTS=OFF -DSHOAL_BUILD_PYTHON=OFF >/dev/null
cmake --build "$work/shoal" -j2 --target shoal_core shoal-broker >/dev/null
cmake --install "$work/shoal" >/dev/null
rm -rf "$work/shoal"
cmake -S "$src/examples/cpp/find_package" -B "$work/example" -DCMAKE_CXX_COMPILER="$cxx" \
  -DCMAKE_PREFIX_PATH="$work/prefix" -DCMAKE_COMPILE_WARNING_AS_ERROR=ON >/dev/null
cmake --build "$work/example" >/dev/null
unset SHOAL_BROKER SHOAL_SESSION
SHOAL_RUNTIME_DIR=$work/run "$work/example/find_package_example"
rm -rf "$work"
