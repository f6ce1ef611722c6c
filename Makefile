# Two commands on a fresh machine with Python >= 3.11 and make:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.jaxlab-installed

.PHONY: demo test lint format install clean bench docs

$(VENV)/bin/python:
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "jaxlab needs Python >= 3.11, found " + sys.version.split()[0]'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

# A small icl-regression sweep on the CPU (under 2 minutes); writes runs/demo/report.md.
demo: $(STAMP)
	$(VENV)/bin/jaxlab run icl-regression --preset quick --out runs/demo --overwrite
	@echo "report: runs/demo/report.md"

lint: $(STAMP)
	$(VENV)/bin/ruff check jaxlab tests
	$(VENV)/bin/ruff format --check jaxlab tests

format: $(STAMP)
	$(VENV)/bin/ruff format jaxlab tests
	$(VENV)/bin/ruff check --fix jaxlab tests

# Test files run in parallel worker processes (one per core; files stay whole so module fixtures are shared);
# the 15 slowest tests are listed at the end (the suite should stay near 6 minutes on 2 cores).
TEST_WORKERS ?= auto
test: lint
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=15

# The API reference, generated from the docstrings by pdoc (the `docs` extra): docs/api/index.html
# (git-ignored; rebuilt from scratch each time).
DOCS_STAMP := $(VENV)/.jaxlab-docs-installed
$(DOCS_STAMP): pyproject.toml | $(STAMP)
	$(PY) -m pip install --quiet -e '.[docs]'
	@touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	rm -rf docs/api
	$(PY) scripts/api_docs.py docs/api

clean:
	rm -rf $(VENV) runs .pytest_cache docs/api
