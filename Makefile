# The only commands anyone needs to remember. Each target sets up what it needs.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
NB_DIR = $(shell $(PY) -m nanobind --cmake_dir)
CMAKE_PY = -DPython_EXECUTABLE=$(abspath $(PY)) -Dnanobind_DIR=$(NB_DIR)
FUZZ_RUNS ?= 20000
DICT_TORTURE_ROUNDS ?= 3000
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup setup-test install dev asan tsan fuzz-build test test-cpp test-python test-pythons test-install test-asan test-tsan \
        fuzz-smoke fuzz fuzz-views torture torture-dict torture-list torture-containers torture-channels stubs stub-check demo bench bench-heap heap-bench-build docs lint lint-python lint-layers clean

# setup: what building shoal needs (make install, make demo); setup-test: also GoogleTest and
# clang-16, which only the test builds use.
setup:
	@scripts/setup.sh

setup-test:
	@scripts/setup.sh --test

setup-bench:
	@scripts/setup.sh --bench

# A real (non-editable) install: spawned children import it without rebuilding anything. The
# build tree is kept in build/<wheel tag> (scripts/pip_install.sh), so rebuilds are quick.
install: setup
	@scripts/pip_install.sh $(PY)

dev: setup-test
	cmake --preset dev $(CMAKE_PY) >/dev/null
	cmake --build --preset dev

asan: setup-test
	cmake --preset asan $(CMAKE_PY) >/dev/null
	cmake --build --preset asan

tsan: setup-test
	cmake --preset tsan >/dev/null
	cmake --build --preset tsan --target threaded_tests shoal-broker

fuzz-build: setup-test
	cmake --preset fuzz >/dev/null
	cmake --build --preset fuzz

test-cpp: dev
	ctest --preset dev

test-python: install
	scripts/run_pytest.sh $(PY)

# The other CPythons shoal supports: each built and run through the parallel part of the suite
# (scripts/test_other_pythons.sh finds them on PATH or under pyenv, and names any that is missing).
OTHER_PYTHONS ?= 3.12 3.13
test-pythons: setup
	scripts/test_other_pythons.sh $(OTHER_PYTHONS)

# A plain `pip install <checkout>` into a fresh venv with the oldest numpy allowed: it leaves the
# checkout untouched and works from elsewhere (scripts/test_install.sh; needs PyPI).
test-install: setup-test
	scripts/test_install.sh

# The ASan build of the extension, loaded into the venv's CPython (msgspec's recipe).
test-asan: asan
	ctest --preset asan
	PYTHONPATH=build/asan/pkg \
	  LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libstdc++.so)" \
	  PYTHONMALLOC=malloc ASAN_OPTIONS=detect_leaks=0 \
	  $(PY) -m pytest -q -p no:cacheprovider -m asan tests/python

test-tsan: tsan
	ctest --preset tsan

fuzz-smoke: fuzz-build
	@for f in handle segment_header array_header frozen hold_ring heap robust_mutex sync_header dict list queue thaw; do \
	  echo "fuzz: $$f ($(FUZZ_RUNS) runs, seed 1)"; \
	  mkdir -p build/fuzz/work/$$f; \
	  build/fuzz/fuzz/$${f}_fuzzer -seed=1 -runs=$(FUZZ_RUNS) -artifact_prefix=build/fuzz/ \
	    build/fuzz/work/$$f fuzz/corpus/$$f || exit 1; \
	done

fuzz: fuzz-build fuzz-views
	@for f in handle segment_header array_header frozen hold_ring heap robust_mutex sync_header dict list queue thaw; do \
	  build/fuzz/fuzz/$${f}_fuzzer -max_total_time=60 -artifact_prefix=build/fuzz/ \
	    fuzz/corpus/$$f || exit 1; \
	done

# The Python frozen views under mutated images (fuzz/frozen_views_fuzz.py): a random seed,
# printed, for FUZZ_VIEWS_SECONDS; `make test` runs 1500 cases of seed 1 through pytest.
FUZZ_VIEWS_SECONDS ?= 600
fuzz-views: install
	$(PY) fuzz/frozen_views_fuzz.py --seconds $(FUZZ_VIEWS_SECONDS) --artifacts build/fuzz

# The sync torture test (tests/python/test_sync_torture.py) for TORTURE_SECONDS, a random seed
# (printed; SHOAL_TORTURE_SEED=N repeats one). `make test` runs it for 20 s.
TORTURE_SECONDS ?= 300
torture: install
	SHOAL_TORTURE_SECONDS=$(TORTURE_SECONDS) $(PY) -m pytest -q -s -p no:cacheprovider \
	  tests/python/test_sync_torture.py

# The channels torture test (tests/python/test_channels_torture.py): producers and consumers of
# a shoal.Queue SIGKILLed at random for CHANNELS_TORTURE_SECONDS, a random seed (printed;
# SHOAL_CHANNELS_TORTURE_SEED=N repeats one). `make test` runs it for 20 s.
CHANNELS_TORTURE_SECONDS ?= 300
torture-channels: install
	SHOAL_CHANNELS_TORTURE_SECONDS=$(CHANNELS_TORTURE_SECONDS) $(PY) -m pytest -q -s \
	  -p no:cacheprovider tests/python/test_channels_torture.py

# The dict's random-kill torture at length (make test runs 120 rounds of it in the C++ tests):
# one writer, then two concurrent writers, SIGKILLed DICT_TORTURE_ROUNDS times; seeded.
torture-dict: dev
	SHOAL_DICT_TORTURE_ROUNDS=$(DICT_TORTURE_ROUNDS) SHOAL_BROKER=build/dev/shoal-broker \
	  build/dev/tests/cpp/multiprocess_tests --gtest_filter='DictKill.Random*'

# The list's random-kill torture at length (make test runs 100 rounds of it in the C++ tests):
# one writer, then two concurrent writers, SIGKILLed LIST_TORTURE_ROUNDS times; seeded
# (LIST_TORTURE_SEED).
LIST_TORTURE_ROUNDS ?= 2000
LIST_TORTURE_SEED ?= 15
torture-list: dev
	SHOAL_LIST_TORTURE_ROUNDS=$(LIST_TORTURE_ROUNDS) SHOAL_LIST_TORTURE_SEED=$(LIST_TORTURE_SEED) \
	  SHOAL_BROKER=build/dev/shoal-broker \
	  build/dev/tests/cpp/multiprocess_tests --gtest_filter='ListKill.Random*'

# The containers' torture test (tests/python/test_containers_torture.py: workers doing random
# operations on shoal.Dict (and shoal.List) SIGKILLed at random) for CONTAINERS_TORTURE_SECONDS,
# a random seed (printed; SHOAL_CONTAINERS_TORTURE_SEED=N repeats one). `make test` runs 20 s.
CONTAINERS_TORTURE_SECONDS ?= 300
torture-containers: install
	SHOAL_CONTAINERS_TORTURE_SECONDS=$(CONTAINERS_TORTURE_SECONDS) $(PY) -m pytest -q -s \
	  -p no:cacheprovider tests/python/test_containers_torture.py

stub-check: install
	$(PY) -m pytest -q -p no:cacheprovider tests/python/test_stubs.py

stubs: install
	$(PY) -m nanobind.stubgen -m shoal._shoal -p python/stubgen-patterns.txt -o python/shoal/_shoal.pyi

# Everything CI checks (.ci/run is exactly this).
test: lint-layers docs test-cpp test-python test-pythons test-install test-asan test-tsan fuzz-smoke lint-python
	@echo "make test: all checks passed"

# C++ includes point down the layers (the order is written out in scripts/lint_layers.py).
lint-layers:
	python3 scripts/lint_layers.py

# The Python half of `make lint` (seconds): ruff and mypy.
lint-python: setup
	$(VENV)/bin/ruff check python tests bench examples fuzz scripts
	$(VENV)/bin/ruff format --check python tests bench examples fuzz scripts
	$(VENV)/bin/mypy

# The documentation site (mkdocs.yml) in build/docs, with --strict: a warning (a broken link,
# a page missing from the nav, an API name the reference cannot resolve) fails it. Its pinned
# packages are requirements-docs.txt, installed into .venv once (a stamp, as scripts/setup.sh
# keeps). The API reference reads python/shoal/ statically: nothing is built for it.
DOCS_STAMP := $(VENV)/.requirements-docs.txt.stamp
docs: setup
	@if ! cmp -s requirements-docs.txt $(DOCS_STAMP); then \
	  echo "docs: installing pip packages (requirements-docs.txt)"; \
	  $(PY) -m pip install -q -r requirements-docs.txt && cp requirements-docs.txt $(DOCS_STAMP); \
	fi
	$(VENV)/bin/mkdocs build --strict --quiet --site-dir build/docs

demo: install
	$(VENV)/bin/shoal demo

bench: setup-bench install heap-bench-build
	$(VENV)/bin/shoal bench

# The heap allocator against glibc malloc (bench/cpp/heap_bench.cpp), in a release build; its
# section of BENCHMARKS.md comes from bench/python/heap.py, which runs the same program.
heap-bench-build: setup-test
	cmake --preset release $(CMAKE_PY) >/dev/null
	cmake --build --preset release --target heap_bench channel_floors shoal-broker

bench-heap: heap-bench-build
	build/release/bench/cpp/heap_bench

# (clang-format is configured in .clang-format and run by pre-commit on changed files; the
# tree has not been reformatted wholesale yet, so it is not a gate here.)
lint: lint-layers lint-python

clean:
	rm -rf build
