# Two commands for a fresh clone: `make demo` and `make test`. Both create .venv and start
# throwaway PostgreSQL (primary + streaming replica), Redis and PgBouncer servers.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
WITH_SERVICES := $(PY) -m django_scaleops.testing.services run --

.PHONY: install servers test-servers test test-installed test-units fuzz demo bench bench-smoke bench-report lint format clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# PostgreSQL, Redis and PgBouncer (and python3 -m venv) installed, or the one command to run; first,
# before the venv is made.
# The suite also needs Chromium (browser tests) and promtool (the /metrics test): --tests.
servers:
	@VENV=$(VENV) PYTHON=$(PYTHON) sh scripts/ensure-servers.sh
test-servers:
	@VENV=$(VENV) PYTHON=$(PYTHON) sh scripts/ensure-servers.sh --tests

# The suite on the checkout, then what users install: the wheel in a fresh virtualenv, its smoke subset
# (tests marked "installed": stock project, example project, admin, every command) off the source tree.
test: test-servers install
	$(WITH_SERVICES) $(PY) -m pytest $(PYTEST_ARGS)
	$(MAKE) test-installed

# Tests that need no server, with settings that reach none (quick, and for machines without servers).
test-units: install
	$(PY) -m pytest -m units -o scaleops_services=false --ds=tests.settings_units $(PYTEST_ARGS)

test-installed: install
	$(WITH_SERVICES) $(PY) tests/run_installed.py

# The differential tests with many more generated examples than CI runs (tests/test_cache_differential.py).
fuzz: install
	SCALEOPS_FUZZ_EXAMPLES=$${SCALEOPS_FUZZ_EXAMPLES:-500} SCALEOPS_FUZZ_STEPS=$${SCALEOPS_FUZZ_STEPS:-50} \
		$(WITH_SERVICES) $(PY) -m pytest tests/test_cache_differential.py $(PYTEST_ARGS)

demo: servers install
	$(WITH_SERVICES) $(PY) -m example_project.demo

# Every benchmark against its peer, each in a database of its own; figures in benchmarks/results/*.json.
bench: install
	# The peers we compare against (DRF, django-ratelimit's rivals, cacheops, ...).
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	$(WITH_SERVICES) sh -c 'set -e; for bench in benchmarks/bench_*.py; do $(PY) "$$bench"; done'

# Every benchmark with tiny sizes and one round, no figure judged: proves each still runs (CI runs it).
bench-smoke: install
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	SCALEOPS_BENCH_SMOKE=1 $(WITH_SERVICES) sh -c 'set -e; for bench in benchmarks/bench_*.py; do \
		echo "== $$bench"; $(PY) "$$bench"; done'

# The latest results as a Markdown table and charts (docs/benchmarks.md, docs/images/benchmarks/),
# with a "before" column from BENCH_BASELINE (a results folder) when it exists.
BENCH_BASELINE ?= benchmarks/results/issue22-before
BENCH_BASELINE_LABEL ?= issue 22's starting point: the code at fa8f352 with its own benchmarks, run on 2026-12-04 on the machine of the results below (the chat.Message lines: today's bench_bulk against that code, whose table had no id trigger yet)
bench-report: install
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	$(PY) -m benchmarks.report $(if $(wildcard $(BENCH_BASELINE)/*.json),--baseline $(BENCH_BASELINE) --baseline-label "$(BENCH_BASELINE_LABEL)")

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	# mypy's Django plugin reads tests.settings_units, which starts no server.
	$(VENV)/bin/mypy django_scaleops example_project tests benchmarks

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) build dist *.egg-info .mypy_cache .ruff_cache
