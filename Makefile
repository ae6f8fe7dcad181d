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
# make test runs the notebooks in three steps: 00 alone (it builds the shared smoke store, SAE and feature pass), then
# two groups at once, one torch thread each (much of a notebook is single-threaded Python, so two at once on two
# cores finish sooner than one after the other). The groups share no cache that either one builds: the SmolLM2 notebooks (its
# standard SAE, persona vectors, the flattery, ocean and hidden-objective fine-tunes, in that order, since 14 and 15
# read what 08-09 build) and every other notebook (a new one lands there; 12, which only reads the models, moved
# back there when 14 and 15 joined the SmolLM2 group).
NB_FIRST := notebooks/00_quickstart.ipynb
NB_SMOL  := notebooks/08_steering.ipynb notebooks/09_persona_vectors.ipynb notebooks/10_model_diffing.ipynb \
            notebooks/11_audit.ipynb notebooks/14_hidden_objective_audit.ipynb notebooks/15_persona_selection.ipynb
NB_REST  := $(filter-out $(NB_FIRST) $(NB_SMOL),$(sort $(wildcard notebooks/*.ipynb)))
NBMAKE   := WORKBENCH_PROFILE=$(TEST_PROFILE) $(PY) -m pytest -q -p no:cacheprovider --nbmake

.PHONY: demo full notebooks test lab install assets bench clean-venv check-install

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

# The notebooks committed with outputs: each one executed at the full profile (build `make full` first, or its SAE is
# trained on the way) and written back in place, shrunk to <= 1.5 MB; unchanged ones are skipped, so it resumes.
# NOTEBOOKS=notebooks/12_attention_as_sdm.ipynb picks some; make test still runs them at smoke size on its own copy.
NOTEBOOKS ?= $(sort $(wildcard notebooks/*.ipynb))
notebooks: assets
	$(PY) -m workbench notebooks $(NOTEBOOKS)

test: assets
	$(PY) -m ruff check workbench widgets
	$(PY) -m mypy workbench
	WORKBENCH_PROFILE=$(TEST_PROFILE) $(PY) -m pytest -q -n 2 --dist loadfile tests
	$(NBMAKE) $(NB_FIRST)
	@mkdir -p test-artifacts; echo "notebooks, two groups at once: $(notdir $(NB_SMOL)) | $(notdir $(NB_REST))"; \
	OMP_NUM_THREADS=1 $(NBMAKE) $(NB_REST) > test-artifacts/notebooks-rest.log 2>&1 & rest=$$!; \
	OMP_NUM_THREADS=1 $(NBMAKE) $(NB_SMOL); smol=$$?; \
	wait $$rest; rest=$$?; cat test-artifacts/notebooks-rest.log; \
	test $$smol -eq 0 && test $$rest -eq 0

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
