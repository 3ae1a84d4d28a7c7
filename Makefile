# snn_compile — the two set-up commands of the README:
#   make demo   shipped SpikeDecoder → NIR → Loihi 2 fixed point → Lava simulation → energy per token
#   make test   the whole test suite
# Both create .venv with Python 3.10 and install the project first if needed.

SHELL       := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV     := .venv
VENV_PY  := $(VENV)/bin/python
STAMP    := $(VENV)/.installed
SNN      := $(VENV)/bin/snn-compile
EXTRAS   ?= dev,hf
DEMO_OUT := out/demo
PROMPT   ?= The with statement
# the Lava simulator runs the 4 x 128 default at a few seconds per character on 2 cores
LAVA_PROMPT ?= The w
PYTEST_ARGS ?=
# PyPI's torch 2.3.1 is the CUDA build: .venv is about 5.6 GB with its nvidia-* wheels, and
# --no-cache-dir keeps pip from storing a second, compressed copy of them in ~/.cache/pip
PIP_FLAGS ?= --no-cache-dir

.PHONY: help venv test demo lint clean

help:  ## show this help
	@echo "snn_compile: spiking language models → NIR → Loihi 2 fixed point → Lava → energy per token"
	@echo
	@echo "usage: make <target>"
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z]+):.*## (.*)/  \1\t\2/' | expand -t 10
	@echo
	@echo "Needs Python 3.10 (lava-nc 0.10 requires >=3.10,<3.11); found via"
	@echo "python3.10 on PATH, pyenv, or PYTHON=/path/to/python3.10."

# Python 3.10: $(PYTHON) if given, else python3.10 on PATH, else pyenv's. Every candidate is
# run, because a pyenv shim can exist on PATH without 3.10 being selected.
$(VENV_PY):
	@py=""; \
	is310() { [ -n "$$1" ] && "$$1" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))' >/dev/null 2>&1; }; \
	for c in "$(PYTHON)" "$$(command -v python3.10 || true)"; do is310 "$$c" && { py="$$c"; break; }; done; \
	if [ -z "$$py" ] && command -v pyenv >/dev/null 2>&1; then \
	  c="$$(pyenv which python3.10 2>/dev/null || true)"; is310 "$$c" && py="$$c"; \
	  if [ -z "$$py" ]; then for c in "$$(pyenv root)"/versions/3.10*/bin/python3.10; do is310 "$$c" && py="$$c"; done; fi; \
	fi; \
	if [ -z "$$py" ]; then for c in "$${PYENV_ROOT:-$$HOME/.pyenv}"/versions/3.10*/bin/python3.10; do is310 "$$c" && py="$$c"; done; fi; \
	if [ -z "$$py" ]; then \
	  echo "error: Python 3.10 is required (lava-nc 0.10.0 declares Requires-Python >=3.10,<3.11; Lava's compiler fails to import on 3.11+)." >&2; \
	  echo "       Install it (e.g. 'pyenv install 3.10') or run 'make PYTHON=/path/to/python3.10 ...'." >&2; \
	  exit 1; \
	fi; \
	echo "creating $(VENV) with $$py ($$("$$py" --version 2>&1))"; \
	"$$py" -m venv $(VENV)

$(STAMP): pyproject.toml | $(VENV_PY)
	@$(VENV_PY) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))' || { \
	  echo "error: $(VENV) is not a Python 3.10 environment; remove it ('rm -rf $(VENV)') and run make again." >&2; exit 1; }
	$(VENV_PY) -m pip install $(PIP_FLAGS) -e ".[$(EXTRAS)]"
	@touch $@

venv: $(STAMP)  ## create .venv (Python 3.10) and install the project (extras: EXTRAS=dev,hf)

test: $(STAMP)  ## run the whole test suite
	$(VENV_PY) -m pytest $(PYTEST_ARGS)

# The demo is the toolchain run on the shipped default, one real CLI call per stage (the
# emulator generates the long text; Lava, bit-identical but slow, a short one and the bench).
# Make stops at the first command that fails; nothing here pretends to succeed.
demo: $(STAMP)  ## shipped SpikeDecoder → NIR → Loihi 2 fixed point → text on the Lava simulator → energy per token
	@mkdir -p $(DEMO_OUT)
	$(SNN) eval default:spikedecoder --max-tokens 8192
	$(SNN) export default:spikedecoder -o $(DEMO_OUT)/spikedecoder.nir
	$(SNN) inspect $(DEMO_OUT)/spikedecoder.nir
	$(SNN) compile $(DEMO_OUT)/spikedecoder.nir -o $(DEMO_OUT)/spikedecoder.qgraph
	$(SNN) generate $(DEMO_OUT)/spikedecoder.qgraph --backend emulator --prompt "$(PROMPT)" -n 48
	$(SNN) generate $(DEMO_OUT)/spikedecoder.qgraph --backend lava-sim --prompt "$(LAVA_PROMPT)" -n 6
	$(SNN) bench $(DEMO_OUT)/spikedecoder.nir --backend lava-sim --tokens 8 --out $(DEMO_OUT)/bench
	@echo "demo finished: outputs in $(DEMO_OUT)/ (report: $(DEMO_OUT)/bench/report.md)"

lint: $(STAMP)  ## ruff over the package and the tests
	$(VENV)/bin/ruff check snn_compile tests

clean:  ## remove demo outputs (keeps .venv)
	rm -rf $(DEMO_OUT)
