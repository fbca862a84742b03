# The two commands of the README: `make demo` and `make test` (and `make device-check` on a GPU).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.moopt-installed

.PHONY: setup test test-slow demo bench device-check lint clean

$(STAMP): pyproject.toml setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[all,test]'
	touch $(STAMP)

setup: $(STAMP)

test: $(STAMP)
	# MOOPT_COMPILE=0: the fused path runs eagerly (compiling every kernel would take
	# minutes; the slow suite compiles them all, the default run one). The native CPU
	# kernels build in about a second, before the first step (MOOPT_NATIVE=sync is the
	# default; kept for clarity). Doctests of moopt/ run too (pyproject).
	MOOPT_COMPILE=0 MOOPT_NATIVE=sync $(PY) -m pytest -q -m "not slow"

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

demo: $(STAMP)
	MOOPT_NATIVE=sync $(VENV)/bin/moopt compare unlearning --preset demo --out runs/demo --resume

bench: $(STAMP)
	$(PY) benchmarks/step_time.py --out runs/bench

# Where a CUDA device exists: the tests marked cuda, a step-time benchmark and a smoke run
# of every task on the device (bf16-mixed); summary in runs/device-check/summary.json.
# Without CUDA it says so and exits 0.
device-check: $(STAMP)
	$(PY) benchmarks/device_check.py --out runs/device-check

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) runs build *.egg-info
