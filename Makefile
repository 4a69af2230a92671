# The two commands a new user runs: `make run` (the main job) and `make test` (the whole suite).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: run test docs test-data slurm-packages test-slurm bench install clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[test,docs]"
	rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

# The first Prefect run on a fresh PREFECT_HOME migrates a database: give its temporary
# server time to start on a small machine.
# Prefect does not create the parents of its home: made here, whatever --out is.
run: $(STAMP)
	home=$${PREFECT_HOME:-$(CURDIR)/runs/.prefect}; mkdir -p "$$home" && \
		PREFECT_HOME="$$home" PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=180 $(PY) -m flows.demo $(ARGS)

# Lint and format checks (ruff, 100 columns) run before the suite: style fails fast.
test: $(STAMP) test-data slurm-packages
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q tests

# The documentation site (Sphinx, MyST Markdown, numpydoc) into docs/_build/html, warnings as
# errors; -E rereads every page, so a warning of an unchanged page is not hidden by the cache.
docs: $(STAMP)
	$(PY) -m sphinx -E -W --keep-going -q -b html docs docs/_build/html

# Real data the tests read: the COADS climatology from Debian's ferret-datasets (root only;
# without it those tests are skipped with a note).
COADS := /usr/share/ferret-vis/data/coads_climatology.cdf
test-data:
	@test -f $(COADS) || { if [ "$$(id -u)" = 0 ]; then \
		{ apt-get update -qq && apt-get install -y -qq --no-install-recommends ferret-datasets >/dev/null; } \
		|| echo "note: could not install ferret-datasets: the COADS tests will be skipped"; \
	else echo "note: apt-get install ferret-datasets to run the COADS tests"; fi; }

# SLURM for tests/test_slurm.py: Debian's slurmctld, slurmd and munge (root only; without them
# those tests are skipped with a note). The tests start their own one-node cluster on 127.0.0.1
# (tests/slurm_harness.py) and stop it; nothing system-wide is configured or started. apt's lists
# are refreshed only if the install fails without (test-data may just have done it).
SLURM_PACKAGES := slurmctld slurmd slurm-client munge
APT_INSTALL := DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends
slurm-packages:
	@command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
		&& command -v munged >/dev/null || { if [ "$$(id -u)" = 0 ]; then \
		{ $(APT_INSTALL) $(SLURM_PACKAGES) >/dev/null 2>&1 \
			|| { apt-get update -qq && $(APT_INSTALL) $(SLURM_PACKAGES) >/dev/null; }; } \
		|| echo "note: could not install $(SLURM_PACKAGES): the SLURM tests will be skipped"; \
	else echo "note: apt-get install $(SLURM_PACKAGES) (as root) to run the SLURM tests"; fi; }

# The SLURM tests alone, where SLURM can run: here they fail, not skip, if it cannot start.
test-slurm: $(STAMP) slurm-packages
	DIAGGMM_SLURM_REQUIRED=1 $(PY) -m pytest -q tests/test_slurm.py

# Every benchmark (25-30 min at the issues' sizes on the 2-core VM); bench/results/latest.{json,md}.
# `make bench ARGS=--quick` checks the machinery in a few minutes.
bench: $(STAMP)
	$(PY) bench/suite.py $(ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache docs/_build docs/auto_examples docs/sg_execution_times.rst docs/api/generated
