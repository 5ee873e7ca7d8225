# Two commands from nothing: `make demo` and `make test` (each creates .venv if missing).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# the CPU build on this workplace's disk; override e.g. TORCH_SPEC='torch>=2.4' for a CUDA box
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: demo test bench install clean browser

$(STAMP): pyproject.toml constraints.txt Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check "$(TORCH_SPEC)" 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[dev]" 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -c "import vramplan.cli, torch, transformers, peft, bitsandbytes"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/vramplan estimate --model 8b --gpu t4

test: $(STAMP) browser
	$(PY) -m pytest -q

# Debian's chromium for the HTML report tests (they skip, saying why, where it cannot be installed)
browser:
	@command -v chromium >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && \
		apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
		echo "chromium could not be installed: the browser tests will skip"

# the planner sweep also runs against BENCH_BASELINE (the commit before this milestone's work) for
# a new/old ratio measured in the same run; `make bench BENCH_BASELINE=` skips it
BENCH_BASELINE ?= e802755
bench: $(STAMP)
	$(PY) benchmarks/bench.py $(if $(BENCH_BASELINE),--baseline-ref $(BENCH_BASELINE))
	$(PY) benchmarks/callback_overhead.py

clean:
	rm -rf $(VENV) build *.egg-info
