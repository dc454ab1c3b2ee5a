# BionicMemory developer entry points. `make up` starts the embedded system,
# `make test` installs what the tests need and runs them all.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
PROTO_OUT := services/common
PROTOS := $(shell find proto -name '*.proto')
PROTO_STAMP := $(PROTO_OUT)/bionic/.generated
NODE_E2E := tests/e2e/node
NODE_STAMP := $(NODE_E2E)/node_modules/.installed
# llama.cpp (the bundled SmolLM2's server) is compiled here. On x86-64 it is built for
# AVX2/FMA/F16C/BMI2 instead of -march=native: a native build takes ggml's AMX matmul on
# CPUs that have AMX, and that crashed SmolLM2 (Q4_1) on a Sapphire Rapids VM (SIGSEGV in
# ggml_backend_amx_mul_mat on the first completion).
LLAMA_CPP := $(shell grep -o '"llama-cpp-python\[server\]==[^"]*"' pyproject.toml)
LLAMA_CMAKE_ARGS := $(if $(filter x86_64,$(shell uname -m)),-DGGML_NATIVE=OFF -DGGML_AVX=ON \
	-DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON)

.PHONY: install test-install tools proto up test test-reliability lint fmt bench clean

# What the system needs to run; the tests need a little more (test-install).
install: $(STAMP) $(PROTO_STAMP)

test-install: install $(NODE_STAMP) tools

# promtool, from Debian's prometheus package, checks deploy/prometheus (tests/deploy).
tools:
	@command -v promtool >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends prometheus >/dev/null; } \
		|| echo "promtool is missing and cannot be installed here: its checks will be skipped"

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first and exactly, from the CPU wheel: nothing may pull a CUDA build.
	$(PIP) install -q torch==2.13.0
	# Not from pip's wheel cache: a wheel built natively before would bring AMX back.
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIP) install -q --no-cache-dir $(LLAMA_CPP)
	$(PIP) install -q -e '.[dev,local-llm]'
	touch $@

# The official openai Node.js client, for the gateway's end-to-end tests (needs node, npm).
$(NODE_STAMP): $(NODE_E2E)/package.json $(NODE_E2E)/package-lock.json
	npm ci --prefix $(NODE_E2E) --no-audit --no-fund
	touch $@

# Typed stubs (.py, _grpc.py, .pyi) for every proto; generated, never committed.
proto: $(PROTO_STAMP)

$(PROTO_STAMP): $(PROTOS) $(STAMP)
	rm -rf $(PROTO_OUT)/bionic
	$(PY) -m grpc_tools.protoc -Iproto \
		--python_out=$(PROTO_OUT) --grpc_python_out=$(PROTO_OUT) \
		--plugin=protoc-gen-mypy=$(VENV)/bin/protoc-gen-mypy \
		--plugin=protoc-gen-mypy_grpc=$(VENV)/bin/protoc-gen-mypy_grpc \
		--mypy_out=$(PROTO_OUT) --mypy_grpc_out=$(PROTO_OUT) $(PROTOS)
	find $(PROTO_OUT)/bionic -type d -exec touch {}/__init__.py \;
	# re-register the editable install so it maps the freshly generated package
	$(PIP) install -q --no-deps -e .
	touch $@

up: install
	$(PY) -m bionic_launcher

test: test-install
	$(PY) -m pytest

# The slow reliability scenarios (the full load soak), left out of `make test`.
test-reliability: test-install
	$(PY) -m pytest -m slow tests/reliability -o log_cli=true --log-cli-level=INFO

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy services

fmt: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: install
	$(PY) bench/embedder.py
	$(PY) bench/gateway_overhead.py

clean:
	rm -rf $(VENV) $(PROTO_OUT)/bionic .pytest_cache .mypy_cache .ruff_cache
