# Every target bootstraps the virtual environment itself: `make test` and `make demo` work on a fresh clone.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install test test-fast lint clean

install: $(STAMP)

# Re-installs only when pyproject.toml changes (fast no-op otherwise).
$(STAMP): pyproject.toml setup.py llmctl/data/_wordscan.c
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

lint: $(STAMP)
	$(PY) -m ruff check llmctl tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
	find llmctl -name "*.so" -delete

# The whole pipeline on the embedded default (the Python Language Reference from pydoc_data): no download.
LLMCTL := $(VENV)/bin/llmctl
.PHONY: demo bench
demo: $(STAMP)
	$(PY) -m llmctl.demo_data data/demo
	$(LLMCTL) preprocess configs/demo.yaml
	$(LLMCTL) pretrain configs/demo.yaml --overwrite
	$(LLMCTL) evaluate configs/demo.yaml
	$(LLMCTL) generate configs/demo.yaml
	$(LLMCTL) preprocess configs/demo_classify.yaml
	$(LLMCTL) finetune configs/demo_classify.yaml --overwrite
	$(LLMCTL) evaluate configs/demo_classify.yaml
	$(LLMCTL) predict configs/demo_classify.yaml --text "The return statement leaves the current function call with the expression list as return value."
	@echo "demo done: poke at runs/demo and runs/demo_classify"

# Benchmarks report ratios measured side by side in one run; they never fail on a slow machine.
bench: $(STAMP)
	$(PY) benchmarks/run_all.py
