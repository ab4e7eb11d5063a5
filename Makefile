# The README's two commands. Each makes .venv and installs what it needs.
# GPU users: `make demo TORCH_SPEC=torch` (or install a CUDA torch into .venv first).
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first: a later resolver that wanted a newer torch would pull a multi-GB CUDA build
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[test,samples,bench]"
	# only the CT head atlas file of this wheel is used; its dependencies are not needed
	$(BIN)/pip install -q --no-deps totalsegmentator
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python demo/run_demo.py

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python bench/bench_train.py
	$(BIN)/python bench/bench_blocked_conv.py
	$(BIN)/python bench/bench_sampler.py
	$(BIN)/python bench/bench_memory.py
	$(BIN)/python bench/bench_apply.py
	$(BIN)/python bench/bench_quality.py
	xvfb-run -a $(BIN)/python bench/bench_napari.py

clean:
	rm -rf $(VENV) demo/out
