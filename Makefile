# Every target creates the virtual environment on first use (.venv, from pyproject.toml).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
CIFAR10_ZIP ?= ../shared/data/cifar10-jpg.zip

.PHONY: venv quickstart test test-all lint accuracy clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

## The main job end to end on the built-in synthetic data (CPU, no download).
quickstart: venv
	$(BIN)/python -m bench.accuracy --data shapes --methods all \
		--protocol seed,episodes,retrieval --out results/quickstart/accuracy.json

## Fast tests (what CI runs).
test: venv
	$(BIN)/python -m pytest -q

## Every test, slow ones included.
test-all: venv
	$(BIN)/python -m pytest -q -m ""

lint: venv
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

## The committed accuracy tables (shapes, and the real CIFAR-10 zip where present).
accuracy: venv
	$(BIN)/python -m bench.accuracy --data shapes --methods pixels,color-hist \
		--out results/shapes/accuracy-baselines.json
	$(BIN)/python -m bench.accuracy --data imagefolder:$(CIFAR10_ZIP) --methods pixels,color-hist \
		--out results/cifar10/accuracy-baselines.json

clean:
	rm -rf $(VENV) results/quickstart
