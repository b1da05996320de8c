# One command each: `make run` (the demo on the bundled model), `make test`, `make bench`.
# Each sets itself up: a venv in .venv with pxgl and its dev tools installed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PROMPT ?= pxOS evolution
EXTRAS := safetensors,serve,test,ray
# Optional extras are installed for the tests, so their tests never skip.

.PHONY: run test bench lint setup clean cartridge

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,$(EXTRAS)]'
	touch $@

run: setup
	$(BIN)/pxgl infer "$(PROMPT)"

test: setup
	$(BIN)/ruff check engine tests bench
	$(BIN)/python -m pytest -q

# The forward pass, generation and the server, each against its peers on this machine (docs/PERFORMANCE.md).
bench: setup
	$(BIN)/python -m bench.run
	$(BIN)/python -m bench.generation
	$(BIN)/python -m bench.serve

# Pack the bundled v1 into its cartridge after retraining it (shader changes never need a repack, §8); the
# v0 cartridge stays as committed.
cartridge: setup
	$(BIN)/pxgl compile -m assets/pixellm_v1.pxi
	$(BIN)/pxgl pack -m assets/pixellm_v1.pxi -o assets/pixellm_v1.pxa

lint: setup
	$(BIN)/ruff check engine tests bench
	$(BIN)/ruff format --check engine tests bench

clean:
	rm -rf $(VENV) build dist .pytest_cache .ruff_cache
