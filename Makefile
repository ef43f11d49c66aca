# Two commands for a new user: `make run` (the main job) and `make test`.
# Both create .venv if missing, install the package, and make sure the dataset is present.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.fashionlab-installed
# The exact versions CI uses (torch 2.13.0 among them); pyproject.toml holds only lower bounds. Every pip install
# here goes through it, so a fresh venv gets the same packages (and this machine's CPU torch, not a CUDA build).
CONSTRAINTS := constraints.txt
PIP := $(BIN)/python -m pip --disable-pip-version-check
RUN_ARGS ?= --quick
PYTEST_ARGS ?=

.PHONY: run run-full test setup data browser postgres wheel-check constraints clean

run: setup data
	$(BIN)/fashionlab run $(RUN_ARGS)

run-full: setup data
	$(BIN)/fashionlab run

test: setup data browser postgres wheel-check
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest $(PYTEST_ARGS)

setup: $(STAMP)

# Reinstalls only when pyproject.toml or constraints.txt changes.
$(STAMP): pyproject.toml $(CONSTRAINTS)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet -c $(CONSTRAINTS) -e '.[dev,export,tune,tensorboard,audit,explain]'
	@touch $@

# Builds the sdist and, from it, the wheel; installs the wheel (with its dependencies, through constraints.txt) into
# a new venv in a temporary folder and runs `fashionlab --help`, `models` and `recipes` there, outside the checkout.
# Fails if the wheel lacks a file of src/fashionlab (measured.json...) or ships one that is not there.
wheel-check: setup
	$(BIN)/python .ci/wheel_check.py --constraints $(CONSTRAINTS)

# Rewrites constraints.txt from what .venv holds now. To move to newer versions: install them into .venv
# (e.g. `.venv/bin/pip install -U numpy`), run `make test`, then `make constraints` and commit the file.
constraints:
	@test -x $(BIN)/python || { echo "no $(VENV): run make setup first"; exit 1; }
	@{ echo "# Exact versions CI uses: every pip install in the Makefile passes -c constraints.txt."; \
	   echo "# pyproject.toml states lower bounds only. Regenerate with \`make constraints\` (from .venv's pip freeze)."; \
	   echo "# torch: the local version label (+cpu) is dropped, so this file also works where only PyPI's wheel exists."; \
	   $(PIP) freeze --all --exclude-editable | grep -v -e '^#' -e '^pip==' -e '^-e ' | sed 's/^\(torch==[^+]*\)+.*/\1/'; \
	 } > $(CONSTRAINTS).tmp && mv $(CONSTRAINTS).tmp $(CONSTRAINTS)
	@if [ -f $(STAMP) ]; then touch $(STAMP); fi  # .venv already holds these versions: no reinstall
	@echo "wrote $(CONSTRAINTS) ($$(grep -vc '^#' $(CONSTRAINTS)) packages)"

# Data found locally: nothing to do. Else, as root with apt: Debian's package. Else the CLI downloads on first use.
data: setup
	@if $(BIN)/fashionlab data --locate >/dev/null 2>&1; then \
		echo "dataset: $$($(BIN)/fashionlab data --locate)"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "dataset: installing Debian package dataset-fashion-mnist"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null; \
	else \
		echo "dataset: not found locally; fashionlab downloads it on first use"; \
	fi

# Headless Chromium for the report's end-to-end test (skipped with a reason where it cannot be installed).
browser:
	@if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "installing chromium for the browser test"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	fi

# PostgreSQL server binaries for the multi-worker tune test, which starts its own throwaway server on a free
# port (skipped with a reason where they cannot be installed).
postgres:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1 \
		&& command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "installing postgresql for the tune scale-out test"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	fi

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
