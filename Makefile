# The README's two commands are `make serve` and `make test`; each sets up .venv when needed.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# On the CPU path pin torch: the pinned CPU wheel comes from local disk on our machines, while a
# looser range would download a multi-GB CUDA build.
TORCH_CPU ?= torch==2.13.0

.PHONY: serve test lint bench bench-sandbox bench-gateway bench-discovery sandbox-deps clean

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_CPU)"
	$(PY) -m pip install --quiet -e ".[worker,embedded,dev]"
	touch $@

# bubblewrap isolates candidate programs; install it when missing (Debian/Ubuntu).
sandbox-deps:
	@command -v bwrap >/dev/null 2>&1 || { \
	  echo "bubblewrap (bwrap) is missing: installing it with apt-get"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq bubblewrap; \
	} || { echo "Could not install bubblewrap; install it yourself (e.g. apt-get install bubblewrap)."; exit 1; }

serve: $(VENV)/.installed sandbox-deps
	$(VENV)/bin/sdpo serve

test: $(VENV)/.installed sandbox-deps
	$(PY) -m pytest

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

clean:
	rm -rf $(VENV) bench/results .pytest_cache
