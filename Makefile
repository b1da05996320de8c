# One command each: `make run` (the demo on the bundled model), `make test`, `make bench`.
# Each sets itself up in a venv in .venv: `make run` installs pxgl alone (what running needs); `make test`,
# `make lint` and `make bench` add the dev tools and every optional extra, so their tests never skip. Each
# install has its own stamp: `make run` then `make test` adds the extras; `make test` then `make run`
# installs nothing (the full install stamps the base one too).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PROMPT ?= pxOS evolution
EXTRAS := dev,safetensors,serve,chat,test,gguf,ray,reference
BASE_STAMP := $(VENV)/.installed
FULL_STAMP := $(VENV)/.installed-extras

.PHONY: run test bench lint setup setup-full clean cartridge

setup: $(BASE_STAMP)

setup-full: $(FULL_STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(BASE_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

$(FULL_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[$(EXTRAS)]'
	touch $@ $(BASE_STAMP)

run: setup
	$(BIN)/pxgl infer "$(PROMPT)"

test: setup-full
	$(BIN)/ruff check engine tests bench
	$(BIN)/python -m pytest -q

# The forward pass, generation and the server, each against its peers on this machine (docs/PERFORMANCE.md).
bench: setup-full
	$(BIN)/python -m bench.run
	$(BIN)/python -m bench.generation
	$(BIN)/python -m bench.serve

# Pack the bundled v1 into its cartridge after retraining it (shader changes never need a repack, §8); the
# v0 cartridge stays as committed.
cartridge: setup
	$(BIN)/pxgl compile -m assets/pixellm_v1.pxi
	$(BIN)/pxgl pack -m assets/pixellm_v1.pxi -o assets/pixellm_v1.pxa

lint: setup-full
	$(BIN)/ruff check engine tests bench
	$(BIN)/ruff format --check engine tests bench

clean:
	rm -rf $(VENV) build dist .pytest_cache .ruff_cache
