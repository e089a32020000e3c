# Front door: `make demo` and `make test` each create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: demo test test-slow test-all bench bench-engine lint clean-venv

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt "torch==2.13.0"
	$(PY) -m pip install -q -c constraints.txt -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/radynversion demo

test: $(STAMP)
	$(PY) -m pytest -m "not slow" -q $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(PY) -m pytest -m slow -q $(PYTEST_ARGS)

test-all: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

# quick versions of every benchmark, in sequence (under 10 minutes on 2 cores); the JSON summary
# of each (its last stdout line) is printed and kept in $(BENCH_OUT)/<name>.json
BENCH_OUT ?= /tmp/radynversion-bench
BENCHES := synth engine efficiency baseline scaling training

bench: $(STAMP)
	@mkdir -p $(BENCH_OUT)
	@for b in $(BENCHES); do \
		echo "== benchmarks/$$b.py --quick" >&2; \
		$(PY) benchmarks/$$b.py --quick > $(BENCH_OUT)/$$b.json || exit 1; \
		tail -n 1 $(BENCH_OUT)/$$b.json; \
	done

bench-engine: $(STAMP)
	$(PY) benchmarks/engine.py

lint: $(STAMP)
	$(VENV)/bin/ruff check radynversion tests benchmarks

clean-venv:
	rm -rf $(VENV)
