# The two commands: `make report` (set up, run the demo audit) and `make test` (set up, run tests).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup report test lint format docs examples bench clean

setup: $(STAMP)

# Re-install only when pyproject.toml changes; torch/torchvision come from the local disk cap.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

report: $(STAMP)
	$(VENV)/bin/reporter audit --out report

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check $(wildcard reporter tests benchmarks docs scripts)
	$(VENV)/bin/ruff format --check $(wildcard reporter tests benchmarks docs scripts)
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

format: $(STAMP)
	$(VENV)/bin/ruff format reporter tests benchmarks
	$(VENV)/bin/ruff check --fix reporter tests benchmarks

docs: $(STAMP)
	$(VENV)/bin/sphinx-build -W --keep-going -b html docs docs/_build/html

examples: $(STAMP)
	$(PY) scripts/make_examples.py

bench: $(STAMP)
	$(PY) benchmarks/bench_cam.py
	$(PY) benchmarks/bench_layout.py
	$(PY) benchmarks/bench_featvis.py
	$(PY) benchmarks/bench_trust.py
	$(PY) benchmarks/bench_audit.py

clean:
	rm -rf report docs/_build .pytest_cache
