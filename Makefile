# Two entry points: `make run` (the main job) and `make test` (lint, types, tests).
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test lint format bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# the lrp extra (lxt, optional for users) is installed here so the tests exercise attnlrp and cplrp
	$(BIN)/python -m pip install --quiet -e '.[test,dev,lrp]'
	# Quantus 0.6 is the test oracle for localisation metrics; its opencv-python pin would shadow the headless cv2
	$(BIN)/python -m pip install --quiet --no-deps 'quantus==0.6.0'
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/gradsum run

lint: $(STAMP)
	$(BIN)/ruff check benchmark tests
	$(BIN)/ruff format --check benchmark tests
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -n 2 --durations=15

format: $(STAMP)
	$(BIN)/ruff check --fix benchmark tests
	$(BIN)/ruff format benchmark tests

bench: $(STAMP)
	$(BIN)/gradsum bench --out results/bench.json

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
