# The two commands a new user needs (see README):
#   make run    set up .venv and run the main job on the embedded default (synthetic) cohort
#   make test   set up .venv and run the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
PROFILE ?= default
OUT ?= runs/default

.PHONY: setup browser run lint test test-fast bench clean

setup:
	bash scripts/setup_env.sh

run: setup
	$(VENV)/bin/spirolm run --profile $(PROFILE) --out $(OUT)

# Debian's Chromium for the HTML report's real-browser check (tests/experiments/outputs/test_report_html.py).
browser:
	bash scripts/install_browser.sh

# Lint and the architecture contracts (pyproject: [tool.ruff], [tool.importlinter]); tests/experiments/pipeline/test_architecture.py
# checks the same, so a plain pytest run catches them too.
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

test: setup browser lint
	$(PY) -m pytest -q -n 2 --dist loadfile

test-fast: setup
	$(PY) -m pytest -q -n 2 --dist loadfile -m "not slow"

bench: setup
	$(PY) benchmarks/bench_cohort.py

clean:
	rm -rf runs mlruns .pytest_cache
