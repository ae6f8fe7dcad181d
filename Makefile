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
# The notebooks' run profile under `make test`: smoke keeps them CI-sized. `make lab` and `make demo` leave
# $WORKBENCH_PROFILE as you set it (unset: the full profile); `make test TEST_PROFILE=full` runs them full size.
TEST_PROFILE ?= smoke

.PHONY: demo full test lab install assets bench clean-venv check-install

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.torch: | $(PY)
	$(PIP) install -q $(TORCH)
	touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.torch
	$(PIP) install -q -e '.[dev]'
	touch $@

# SAEBench (workbench saebench): its import-time needs from the extra, then the package without its pins
$(VENV)/.saebench: $(VENV)/.installed
	$(PIP) install -q -e '.[saebench]' && $(PIP) install -q --no-deps sae-bench==0.6.0
	touch $@

install: $(VENV)/.installed $(VENV)/.saebench

assets: install
	$(PY) -m workbench assets install

demo: assets
	$(PY) -m workbench demo --out runs/demo

# The whole-corpus profile (about an hour on 2 CPU cores, resumable): what WORKBENCH_PROFILE=full notebooks load.
full: assets
	$(PY) -m workbench full --out runs/full

test: assets
	$(PY) -m ruff check workbench widgets
	$(PY) -m mypy workbench
	WORKBENCH_PROFILE=$(TEST_PROFILE) $(PY) -m pytest -q tests
	WORKBENCH_PROFILE=$(TEST_PROFILE) $(PY) -m pytest -q --nbmake notebooks

# A fresh venv gets another torch first (torch==2.14.1, the CUDA build, with its dependencies), then this package's
# wheel: pip must keep that torch (tests/test_install.py; pip list before/after in check-install.json). Several
# minutes and ~5 GB of downloads/unpacking, so `make test` runs only its fast half.
check-install: install
	WORKBENCH_CHECK_INSTALL=1 $(PY) -m pytest -q -s tests/test_install.py

lab: assets
	$(VENV)/bin/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root) notebooks

bench: assets
	$(PY) benchmarks/bench_harvest.py

clean-venv:
	rm -rf $(VENV)
