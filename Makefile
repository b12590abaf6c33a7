# Two entry points for a fresh machine: `make demo` and `make test`.
# Each creates/refreshes the local virtual environment .venv first.
# TORCH selects the torch requirement installed before the package; the default takes the
# local CPU wheel on our build machines. GPU users: `make TORCH=torch demo` (or any spec).
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.meddiff-installed

.PHONY: demo test venv bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/meddiff demo --out demo_out

test: $(STAMP)
	$(BIN)/python -m pytest

# Benchmarks behind the README's numbers (bench/results/*.json); not part of the tests.
bench: $(STAMP)
	$(BIN)/python bench/sampler_overhead.py
	$(BIN)/python bench/speed_vs_monai.py
	$(BIN)/meddiff demo --out bench/results/demo --json > bench/results/demo.json
	$(BIN)/python bench/operators.py
	$(BIN)/python bench/reconstruction.py
	$(BIN)/python bench/detection.py
	$(BIN)/python bench/segmentation.py

clean:
	rm -rf $(VENV) demo_out .pytest_cache
