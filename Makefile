# Two commands for a new user: `make run` (the main job) and `make test`.
# Both create .venv if missing, install the package, and make sure the dataset is present.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.fashionlab-installed
RUN_ARGS ?= --quick
PYTEST_ARGS ?=

.PHONY: run run-full test setup data browser postgres clean

run: setup data
	$(BIN)/fashionlab run $(RUN_ARGS)

run-full: setup data
	$(BIN)/fashionlab run

test: setup data browser postgres
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest $(PYTEST_ARGS)

setup: $(STAMP)

# Reinstalls only when pyproject.toml changes; torch is pinned (==2.13.0) there.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,export,tune,tensorboard]'
	@touch $@

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
