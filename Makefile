# Two entry points for a fresh machine: `make demo` and `make test`.
# Each creates/refreshes the virtual environment $(VENV) (default .venv) first.
#
# TORCH is what `pip install` gets for torch before the package, passed unquoted so that pip
# options split: the default takes the local CPU wheel on our build machines; CUDA users e.g.
#   make TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu124" demo
# (a specifier with < or > needs its own quotes: make TORCH="'torch>=2.3,<3'" test).
# Torch is (re)installed whenever TORCH differs from the value of the last install: its stamp
# $(VENV)/.torch-<checksum of TORCH> names the value, and torch is uninstalled first so that
# the same version from another index (CPU -> CUDA build) really replaces it.
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_ID := $(shell printf '%s' '$(subst ','"'"',$(TORCH))' | cksum | cut -d' ' -f1)
TORCH_STAMP := $(VENV)/.torch-$(TORCH_ID)
STAMP := $(VENV)/.meddiff-installed

.PHONY: demo test venv bench clean

$(TORCH_STAMP):
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	rm -f $(VENV)/.torch-*
	$(BIN)/python -m pip uninstall -qq -y torch
	$(BIN)/python -m pip install -q $(TORCH)
	touch $(TORCH_STAMP)

# order-only on torch: a new TORCH reinstalls torch, not the package
$(STAMP): pyproject.toml | $(TORCH_STAMP)
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/meddiff demo --out demo_out --overwrite

test: $(STAMP)
	$(BIN)/python -m pytest

# Benchmarks behind the README's numbers (bench/results/*.json); not part of the tests.
bench: $(STAMP)
	$(BIN)/python bench/sampler_overhead.py
	$(BIN)/python bench/speed_vs_monai.py
	$(BIN)/meddiff demo --out bench/results/demo --overwrite --json > bench/results/demo.json
	$(BIN)/python bench/operators.py
	$(BIN)/python bench/reconstruction.py
	$(BIN)/python bench/detection.py
	$(BIN)/python bench/segmentation.py
	$(BIN)/python bench/denoising.py
	$(BIN)/python bench/translation.py --n 8 --n-fd 48
	$(BIN)/python bench/resolution.py
	$(BIN)/python bench/ct_resolution.py
	$(BIN)/python bench/noisy.py
	$(BIN)/python bench/selfcheck.py
	$(BIN)/python bench/priors.py

clean:
	rm -rf $(VENV) demo_out .pytest_cache
