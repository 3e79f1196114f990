# rsunet: the two commands a user needs are `make demo` and `make test`.
# Both set everything up first (tools/setup.sh, idempotent and quick when nothing changed).

SHELL := /bin/bash
PY := $(CURDIR)/.venv/bin/python
export RSUNET_PYTHON := $(PY)
export R_LIBS := $(CURDIR)/.rlib
export RSUNET_SHARED_DATA ?= $(abspath $(CURDIR)/../shared/data)
export RPY2_CFFI_MODE := ABI
export TF_CPP_MIN_LOG_LEVEL := 2
export PYTHONDONTWRITEBYTECODE := 1
export _R_CHECK_FORCE_SUGGESTS_ := false

.PHONY: setup demo test test-python test-r check-r docs vectors bench bench-quick clean

setup:
	@bash tools/setup.sh

demo: setup
	$(PY) -m rsunet demo --out demo-output --overwrite

test: setup
	@bash tools/run_tests.sh

test-python: setup
	$(PY) -m pytest

test-r: setup
	Rscript tools/run_testthat.R

check-r: setup
	@bash tools/rcheck.sh

docs: setup
	Rscript -e 'roxygen2::roxygenise(roclets = "rd")'

vectors: setup
	$(PY) tools/make_test_vectors.py

# every benchmark, full sizes (about 15-20 min on 2 cores); results go in docs/performance.md
bench: setup
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

# every benchmark's quick mode (small sizes, one repeat): what CI runs (tests/test_bench.py)
bench-quick: setup
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b --quick || exit 1; done

clean:
	rm -rf .venv .rlib .stamps .check demo-output
