# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The CPU build of this torch lies on the development machines' disk; pyproject.toml
# itself accepts any torch >= 2.4, so GPU users keep their own build.
TORCH ?= torch==2.13.0

.PHONY: install demo test lint format browser postgres serve bench bench-quick peers clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check "$(TORCH)"
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# the rating model (test RMSE) and the ranking model whose lists are the best (NDCG@10);
# the lists come from the ranking model, the predicted stars beside them from the rating model
RATINGS_MODEL := models/demo
LISTS_MODEL := models/demo-lists
TRAIN_LISTS := --data movielens-small --model ease --split user --test-fraction 0.2

demo: install
	$(BIN)/latentrec train --data movielens-small --out $(RATINGS_MODEL)
	$(BIN)/latentrec train $(TRAIN_LISTS) --out $(LISTS_MODEL)
	$(BIN)/latentrec recommend $(LISTS_MODEL) --rating-model $(RATINGS_MODEL) --user 1 -k 10

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: install
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

# the browser test drives Debian's Chromium; nothing downloads a browser of its own
browser:
	command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)

# the database tests start Debian's PostgreSQL server (tests/pg_ctl.sh finds its pg_ctl)
postgres:
	ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || command -v pg_ctl >/dev/null || \
		(apt-get update && apt-get install -y postgresql)

test: install lint browser postgres
	$(BIN)/pytest

serve: install
	test -d $(RATINGS_MODEL) || $(BIN)/latentrec train --out $(RATINGS_MODEL)
	test -d $(LISTS_MODEL) || $(BIN)/latentrec train $(TRAIN_LISTS) --out $(LISTS_MODEL)
	$(BIN)/latentrec serve $(LISTS_MODEL) --rating-model $(RATINGS_MODEL)

# side-by-side benchmarks; the peers (fastai, Surprise, cornac) live in benchmarks/.peers
peers:
	bash benchmarks/setup_peers.sh

bench: install peers
	$(BIN)/python benchmarks/compare.py --repeats 3 --cases dot,nn,mf,scale-1m,scale-5m,scale-25m,curve-5m,curve-25m
	$(BIN)/python benchmarks/bytes_per_rating.py --data scale-25m --repeats 3
	$(BIN)/python benchmarks/train_speed.py --ratings 5000000 --users 100000 --items 20000 --repeats 3

bench-quick: install peers
	$(BIN)/python benchmarks/compare.py --repeats 1 --cases dot1024,scale-1m

clean:
	rm -rf $(VENV) models .pytest_cache .ruff_cache
