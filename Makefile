# Two commands do all set-up on a fresh machine: `make run` and `make test`.
# A CPU build of torch goes into a fresh .venv first (the open range in pyproject.toml would otherwise
# pull a multi-GB CUDA build); override with e.g. `make run TORCH=torch==2.9.1` or `TORCH=torch`.
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.install-stamp
PYTEST_ARGS ?=

.PHONY: run test bench lint format train-default clean help

help:
	@echo "make run            run every experiment on the bundled model -> results/report.html"
	@echo "make test           run the test suite"
	@echo "make lint           ruff check + ruff format --check + mypy (types) + the docs site (mkdocs --strict)"
	@echo "make bench          run the benchmarks in bench/"
	@echo "make train-default  re-train the bundled retina CNN from scratch (two stages, about 65 min on 2 cores)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"

# reinstall only when the project metadata changed (the package itself is installed editable)
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/mechlens run

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m mypy
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

# the bundled model's two-stage recipe on the CPU (about 65 minutes on 2 cores; resumable:
# BUNDLE_ARGS="--resume" continues); BUNDLE_ARGS passes other options on
train-default: $(STAMP)
	$(BIN)/python -m mechlens_retina.training.bundle --recipe cpu-v3 --device cpu $(BUNDLE_ARGS)

clean:
	rm -rf $(VENV) results .pytest_cache .ruff_cache build *.egg-info
