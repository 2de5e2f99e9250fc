# Two commands for a fresh Debian/Ubuntu machine with Python 3.11: `make demo`, `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
STUBS  := $(VENV)/esp32-stubs
SYSPKG := mosquitto mosquitto-clients socat gcc-multilib

.PHONY: demo test lint typecheck bench mutation system-deps firmware32 clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/python -m pip install -q --upgrade --target $(STUBS) 'micropython-esp32-stubs==1.29.*'
	@touch $@

# Mosquitto (the tests' broker, and the demo's when installed), socat and gcc-multilib
# (the 32-bit frozen firmware build) from Debian.
system-deps:
	@missing=""; \
	for p in mosquitto socat; do \
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

typecheck: $(STAMP)
	$(BIN)/mypy
	$(BIN)/mypy --config-file firmware/mypy.ini

# The 32-bit unix port with asyncio and the firmware frozen in (build/firmware32/micropython,
# the ESP32 image's shape), from MICROPY_SRC: a MicroPython source tree or release archive
# (default ../shared/micropython). Rebuilt only when the firmware or the source changed.
firmware32: $(STAMP) system-deps
	$(BIN)/python -m gateway.frozen32

# The firmware tests run on the 32-bit frozen build too when the source is there (built
# once, cached); without it they are skipped with one line, except under CI=true.
test: $(STAMP) system-deps lint typecheck
	$(BIN)/python -m gateway.frozen32 --if-source
	$(BIN)/python -m pytest -q

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

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis build/firmware32 mutants mutants.log
