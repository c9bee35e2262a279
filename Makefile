# One venv, pinned versions, installed only when pyproject.toml or constraints.txt change.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Outside this project's machines, pass TORCH_INDEX=https://download.pytorch.org/whl/cpu
# to take the CPU build of torch instead of PyPI's CUDA build.
TORCH_INDEX ?=
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q
PYTEST_ARGS ?=

.PHONY: demo test bench bench-quick install clean-runs help

help:
	@echo "make demo   # quickstart: dense model, search, Pareto front, export (about 3 minutes)"
	@echo "make test   # the test suite (about 25 minutes on 2 quiet cores)"
	@echo "make bench  # benchmarks against baselines (see benchmarks/README.md)"

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing pinned dependencies into $(VENV) (first time: about 2 minutes)"
	$(PIP) install -c constraints.txt $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX) --extra-index-url https://pypi.org/simple) torch
	$(PIP) install -c constraints.txt -e '.[onnx,dev,cluster]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/autoprune search search_spaces/quickstart.yaml
	$(BIN)/autoprune export quickstart --force   # --pick best: the smallest front model within 1 point of dense validation accuracy

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m benchmarks

bench-quick: $(STAMP)
	$(BIN)/python -m benchmarks --quick

clean-runs:
	rm -rf runs/*/ runs/mlflow.db runs/mlartifacts
