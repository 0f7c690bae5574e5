# fedheart: `make run` simulates the four UCI hospitals, `make test` runs the test suite.
# Both install what they need into .venv first (Python 3.11 and the package registries only).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The virtual environment itself lives outside the checkout and .venv links to it: `flwr run .`
# walks the whole app folder to build its bundle, and ~75 000 venv files cost 20-45 s per run.
VENV_REAL ?= $(HOME)/.cache/fedheart/venvs/$(notdir $(CURDIR))-$(shell printf '%s' '$(CURDIR)' | sha1sum | cut -c1-10)
# CPU build of torch: taken from the local wheel store where there is one (pip's find-links);
# elsewhere set TORCH_INDEX=https://download.pytorch.org/whl/cpu to avoid a multi-GB CUDA build.
TORCH_INDEX ?=
TORCH_PIP_ARGS := $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX),)

# The SuperLink must never `uv sync` the app (that would download a CUDA torch).
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION := 1
# The real UCI files: ../shared beside the checkout (tests, CI) unless FEDHEART_DATA_DIR is set;
# without either, the app downloads them from the UCI archive (checksum-verified).
SHARED_DATA := $(abspath ../shared/data/uci-heart-disease)
ifneq ($(wildcard $(SHARED_DATA)/processed.va.data),)
export FEDHEART_DATA_DIR ?= $(SHARED_DATA)
endif

.PHONY: install system-deps run test test-fast lint deploy bench-quality clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements/constraints.txt
	test -e $(VENV) || { mkdir -p $(VENV_REAL) && $(PYTHON) -m venv $(VENV_REAL) && ln -sfn $(VENV_REAL) $(VENV); }
	$(BIN)/python -m pip install --quiet torch==2.13.0 $(TORCH_PIP_ARGS)
	$(BIN)/python -m pip install --quiet -c requirements/constraints.txt -e ".[aws,dev,view,export]"
	touch $@

## run: the 4-hospital simulation (15 rounds of FedAvg); pass Hydra overrides with ARGS="strategy=fedprox rounds=5"
run: install
	$(BIN)/python -m launcher.simulate $(ARGS)

## test: lint, then the whole test suite (unit and end-to-end); installs missing Debian packages first
test: install system-deps
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## test-fast: lint, then the unit tests only (a couple of minutes): the edit loop; `make test` before pushing
test-fast: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q tests/unit $(PYTEST_ARGS)

## system-deps: the Debian packages the tests need (nginx, chromium), apt-get installed when missing
system-deps:
	scripts/system-deps.sh

lint: install
	$(BIN)/ruff check .

## deploy: real SuperLink + one SuperNode per hospital on loopback, TLS and node authentication
deploy: install
	$(BIN)/python -m launcher.deploy $(ARGS)

bench-quality: install
	$(BIN)/python bench/quality.py $(ARGS)

clean:
	rm -rf .fedheart outputs .pytest_cache .ruff_cache
