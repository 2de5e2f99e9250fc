# Two commands for a fresh Debian/Ubuntu machine with Python 3.11+: `make demo`, `make test`.
# The interpreter is Debian's /usr/bin/python3 where there is one: the Pi's (3.11 on
# Bookworm, 3.13 on Trixie). Another one: `make test PYTHON=/path/python3 VENV=.venv-3.13`.
PYTHON ?= $(if $(wildcard /usr/bin/python3),/usr/bin/python3,python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
STUBS  := $(VENV)/esp32-stubs
SYSPKG := mosquitto mosquitto-clients socat gcc-multilib xz-utils chromium chromium-driver systemd

.PHONY: demo test test-fast lint typecheck bench mutation system-deps python-venv firmware32 fresh-check clean

# A usable venv has pip and runs on PYTHON's installation (same base prefix and version);
# anything else (no pip after a venv without ensurepip, another interpreter, a dangling
# python) is re-created.
py_id      = import sys; print(sys.base_prefix, sys.hexversion)
PYTHON_ID := $(shell $(PYTHON) -c '$(py_id)' 2>/dev/null)
VENV_ID   := $(shell $(BIN)/python -c 'import pip; $(py_id)' 2>/dev/null)
ifeq ($(PYTHON_ID),)
VENV_OK :=
else ifeq ($(PYTHON_ID),$(VENV_ID))
VENV_OK := yes
endif

$(STAMP): pyproject.toml $(if $(VENV_OK),,python-venv)
	@if [ -z "$(VENV_OK)" ]; then \
	  if [ -e $(VENV) ]; then echo "$(VENV) is broken or not made by $(PYTHON): re-creating it"; fi; \
	  rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); \
	fi
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/python -m pip install -q --upgrade --target $(STUBS) 'micropython-esp32-stubs==1.29.*'
	@touch $@

# Debian's python3 has no ensurepip (so no `-m venv`) until python3-venv is installed.
python-venv:
	@command -v $(PYTHON) >/dev/null 2>&1 || { \
	  echo "no $(PYTHON): install Python 3.11 or later (apt-get install python3) or pass PYTHON=..."; exit 1; }
	@if ! $(PYTHON) -c 'import ensurepip' 2>/dev/null; then \
	  pkg=python3-venv; \
	  [ "$$(realpath $$(command -v $(PYTHON)))" = "$$(realpath /usr/bin/python3 2>/dev/null)" ] || \
	    pkg=$$($(PYTHON) -c 'import sys; print("python%d.%d-venv" % sys.version_info[:2])'); \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing $$pkg from Debian's packages"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$pkg >/dev/null && \
	    $(PYTHON) -c 'import ensurepip' || { echo "$$pkg did not give $(PYTHON) ensurepip"; exit 1; }; \
	  else \
	    echo "$(PYTHON) cannot make a venv (no ensurepip). Install it as root: sudo apt-get install $$pkg"; exit 1; \
	  fi; \
	fi

# Mosquitto (the tests' broker, and the demo's when installed), socat, gcc-multilib and
# xz-utils (the 32-bit frozen firmware build, from the .tar.xz source), chromium and
# chromium-driver (the web duty room's browser tests: no browser download) and systemd
# (systemd-analyze checks the shipped units and the report timer) from Debian.
system-deps:
	@missing=""; \
	for p in mosquitto socat xz chromium chromedriver systemd-analyze; do \
	  command -v $$p >/dev/null 2>&1 || test -x /usr/sbin/$$p || missing="$$missing $$p"; \
	done; \
	dpkg-query -W -f='$${Status}' gcc-multilib 2>/dev/null | grep -q 'ok installed' || missing="$$missing gcc-multilib"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing$$missing from Debian's packages"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSPKG) >/dev/null; \
	  else \
	    echo "missing:$$missing. Install them as root: sudo apt-get install $(SYSPKG)"; exit 1; \
	  fi; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check protocol gateway
	$(BIN)/lint-imports --no-cache

typecheck: $(STAMP)
	$(BIN)/mypy
	MYPYPATH=$(STUBS) $(BIN)/mypy --config-file firmware/mypy.ini --custom-typeshed-dir $(STUBS)

# The 32-bit unix port with asyncio and the firmware frozen in (build/firmware32/micropython,
# the ESP32 image's shape), from MICROPY_SRC: a MicroPython source tree or release archive
# (default ../shared/micropython). Rebuilt only when the firmware or the source changed.
firmware32: $(STAMP) system-deps
	$(BIN)/python -m gateway.sim.frozen32

# The firmware tests run on the 32-bit frozen build too when the source is there (built
# once, cached); without it they are skipped with one line, except under CI=true.
test: $(STAMP) system-deps lint typecheck
	$(BIN)/python -m gateway.sim.frozen32 --if-source
	$(BIN)/python -m pytest -q

# The inner loop (~3 min idle): protocol, gateway and the 64-bit firmware tests, stopping at
# the first failure; no lint or type checks, no 32-bit firmware, no HIL. Narrow it with
# TESTS=tests/gateway. `make test` (all of it, ~10 min idle) before a commit. Time budgets
# per area: README.md ("Tests and their time") and tests/support/budget.py.
TESTS ?= tests
test-fast: $(STAMP) system-deps
	$(BIN)/python -m pytest -q -x -k "not frozen32" $(TESTS)

bench: $(STAMP) system-deps
	@for b in bench/*.py; do \
	  case $$b in bench/mutation.py) continue;; esac; \
	  echo "== $$b"; $(BIN)/python $$b || exit 1; \
	done

# Mutation testing of protocol/ and the gateway's decision modules (minutes of CPU; not in
# `make test`): writes bench/mutation.json. `bench/mutation.py --reuse` prints it again.
MUTATION_STAMP := $(VENV)/.mutation-stamp
$(MUTATION_STAMP): pyproject.toml $(STAMP)
	$(BIN)/python -m pip install -q -e '.[dev,mutation]'
	@touch $@

mutation: $(MUTATION_STAMP) system-deps
	$(BIN)/python bench/mutation.py --jobs $${MUTATION_JOBS:-2}

demo: $(STAMP) system-deps
	$(BIN)/campusguard demo
	@echo "the web duty room on the same school, until Ctrl-C: $(BIN)/campusguard demo --serve"

# `make demo` and `make test` on a freshly made minimal Debian 12 (root; ~10 min)
fresh-check:
	.ci/fresh-check

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis build/firmware32 mutants mutants.log
