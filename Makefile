# Two commands on a fresh machine:  make demo  and  make test.
# Each creates .venv if missing, installs torch==2.13.0 first, then the package and the embedded assets.
# Stamps make a rerun a quick no-op when nothing changed.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TORCH  := torch==2.13.0
export PIP_DISABLE_PIP_VERSION_CHECK := 1
export TOKENIZERS_PARALLELISM := false
# The smoke profile keeps notebooks small enough for CI; unset it for full-size runs.
export WORKBENCH_PROFILE ?= smoke

.PHONY: demo test lab install assets bench clean-venv

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.torch: | $(PY)
	$(PIP) install -q $(TORCH)
	touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.torch
	$(PIP) install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

assets: install
	$(PY) -m workbench assets install

demo: assets
	$(PY) -m workbench demo --out runs/demo

test: assets
	$(PY) -m pytest -q tests
	$(PY) -m pytest -q --nbmake notebooks

lab: assets
	$(VENV)/bin/jupyter lab notebooks

bench: assets
	$(PY) benchmarks/bench_harvest.py

clean-venv:
	rm -rf $(VENV)
