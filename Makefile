# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The CPU build of this torch lies on the development machines' disk; pyproject.toml
# itself accepts any torch >= 2.4, so GPU users keep their own build.
TORCH ?= torch==2.13.0

.PHONY: install demo test lint format browser serve clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check "$(TORCH)"
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/latentrec train --data movielens-small --out models/demo
	$(BIN)/latentrec recommend models/demo --user 1 -k 10

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: install
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

# the browser test drives Debian's Chromium; nothing downloads a browser of its own
browser:
	command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)

test: install lint browser
	$(BIN)/pytest

serve: install
	test -d models/demo || $(BIN)/latentrec train --out models/demo
	$(BIN)/latentrec serve models/demo

clean:
	rm -rf $(VENV) models .pytest_cache .ruff_cache
