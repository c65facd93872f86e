# Makefile for slowfast_hf. Everything runs inside a local virtual environment (.venv).
#
#   make install    create .venv (if missing) and install the package + test deps (CPU torch)
#   make test       run the test suite (offline); extra pytest args via PYTEST_ARGS="..."
#   make demo       run the end-to-end demo on built-in data (offline)
#   make benchmark  run every benchmarks/*.py script in turn (files starting with _ are helpers, skipped)
#   make test-eval  build the isolated lmms-eval environment (.venv-eval) and run the lmms-eval tests in it

PYTHON ?= python3
VENV := .venv
VENV_PY := $(VENV)/bin/python
VENV_PIP := $(VENV)/bin/pip
CONSTRAINTS := constraints-cpu.txt
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install test test-eval demo benchmark clean

install: $(STAMP)

$(VENV_PY):
	$(PYTHON) -m venv $(VENV)

# Re-run pip only when the packaging metadata or the constraints change.
$(STAMP): $(VENV_PY) setup.cfg pyproject.toml $(CONSTRAINTS)
	$(VENV_PIP) install -c $(CONSTRAINTS) -e ".[test]"
	touch $@

# pytest exit code 5 means "no tests collected": treat it as a failure with a clear message.
test: install
	@rc=0; HF_HUB_OFFLINE=1 $(VENV_PY) -m pytest modeling_tests -q $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "ERROR: pytest collected no tests (exit code 5)." >&2; fi; \
	exit $$rc

# lmms-eval pulls torchvision, which cannot load beside the CPU torch wheel: it gets its own environment.
test-eval:
	bash modeling_tests/run_eval_tests.sh $(PYTEST_ARGS)

demo: install
	HF_HUB_OFFLINE=1 $(VENV_PY) examples/demo.py

benchmark: install
	@set -e; found=0; \
	for script in benchmarks/*.py; do \
		[ -f "$$script" ] || continue; \
		case "$$(basename "$$script")" in _*) continue;; esac; \
		found=1; \
		echo "==> $$script"; \
		HF_HUB_OFFLINE=1 $(VENV_PY) "$$script"; \
	done; \
	if [ $$found -eq 0 ]; then echo "ERROR: no scripts found in benchmarks/" >&2; exit 1; fi

clean:
	rm -rf build dist src/*.egg-info .pytest_cache benchmarks/out examples/out
	find . -path './.venv*' -prune -o -name __pycache__ -type d -print -exec rm -rf {} +
