# The two commands a new user runs: `make run` (the main job) and `make test` (the whole suite).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: run test test-data bench install clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[test]"
	rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

# The first Prefect run on a fresh PREFECT_HOME migrates a database: give its temporary
# server time to start on a small machine.
# Prefect does not create the parents of its home: made here, whatever --out is.
run: $(STAMP)
	home=$${PREFECT_HOME:-$(CURDIR)/runs/.prefect}; mkdir -p "$$home" && \
		PREFECT_HOME="$$home" PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=180 $(PY) -m flows.demo $(ARGS)

# Lint and format checks (ruff, 100 columns) run before the suite: style fails fast.
test: $(STAMP) test-data
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q tests

# Real data the tests read: the COADS climatology from Debian's ferret-datasets (root only;
# without it those tests are skipped with a note).
COADS := /usr/share/ferret-vis/data/coads_climatology.cdf
test-data:
	@test -f $(COADS) || { if [ "$$(id -u)" = 0 ]; then \
		{ apt-get update -qq && apt-get install -y -qq --no-install-recommends ferret-datasets >/dev/null; } \
		|| echo "note: could not install ferret-datasets: the COADS tests will be skipped"; \
	else echo "note: apt-get install ferret-datasets to run the COADS tests"; fi; }

# Every benchmark (25-30 min at the issues' sizes on the 2-core VM); bench/results/latest.{json,md}.
# `make bench ARGS=--quick` checks the machinery in a few minutes.
bench: $(STAMP)
	$(PY) bench/suite.py $(ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache
