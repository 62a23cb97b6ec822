# The two set-up commands: `make run` (the service on the embedded default) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export LETHE_TEST_DATABASE_URL ?= postgresql+psycopg://root@127.0.0.1:5432/test
export LETHE_TEST_BROKER_URL ?= redis://127.0.0.1:6379/15
# `make run HOST=0.0.0.0 PORT=8001`: where the API and dashboard listen; without them `lethe up` reads
# LETHE_HOST and LETHE_PORT, else 127.0.0.1:8000. Set here, not taken from the environment, where HOST
# often holds the machine's name.
HOST =
PORT =

.PHONY: install run test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/lethe up$(if $(HOST), --host $(HOST))$(if $(PORT), --port $(PORT))

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf var .pytest_cache .ruff_cache
