# Two entry points: `make run` (the main job) and `make test` (lint, types, tests).
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# the main job needs the package alone; tests, lint and benches add the test, dev and LRP extras
RUN_STAMP := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test

.PHONY: setup run test lint format bench clean

$(RUN_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $(RUN_STAMP)

$(TEST_STAMP): $(RUN_STAMP)
	# the lrp extra (lxt, optional for users) is installed here so the tests exercise attnlrp and cplrp
	$(BIN)/python -m pip install --quiet -e '.[test,dev,lrp]'
	# Quantus 0.6 is the test oracle for localisation metrics; its opencv-python pin would shadow the headless cv2
	$(BIN)/python -m pip install --quiet --no-deps 'quantus==0.6.0'
	touch $(TEST_STAMP)

setup: $(TEST_STAMP)

run: $(RUN_STAMP)
	$(BIN)/gradsum run

lint: $(TEST_STAMP)
	$(BIN)/ruff check benchmark tests
	$(BIN)/ruff format --check benchmark tests
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -n 2 --durations=15

format: $(TEST_STAMP)
	$(BIN)/ruff check --fix benchmark tests
	$(BIN)/ruff format benchmark tests

bench: $(TEST_STAMP)
	$(BIN)/gradsum bench --out results/bench.json

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
