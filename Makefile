# One command sets up (if needed) and tests, one runs the main job. The CPU build of torch is
# pinned here, not in pyproject.toml: a bare "torch" requirement on a clean machine pulls a
# multi-GB CUDA build.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0

.PHONY: setup test toy clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile setup.py $(wildcard csrc/cpu/*)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=23" "setuptools>=77" wheel
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet --no-build-isolation -e ".[dev,examples]"
	touch $@

test: setup
	TRITON_INTERPRET=1 $(BIN)/python -m pytest tests

toy: setup
	$(BIN)/python examples/toy_conflict.py

clean:
	rm -rf $(VENV) build *.egg-info
