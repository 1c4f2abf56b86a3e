# thpvm: the two commands a fresh Debian machine needs are `make vm-test` and `make test`.
# Both run `setup` first (idempotent: Debian packages as root or via sudo, then .venv).

VENV    ?= .venv
PY      := $(VENV)/bin/python
THPVM   := $(VENV)/bin/thpvm
ARGS    ?=
PYTEST_ARGS ?=
BENCH_OUT ?= bench-results/bench-$(shell date +%Y%m%d-%H%M%S).json
STRESS_OUT ?= bench-results/stress-$(shell date +%Y%m%d-%H%M%S).json
STRESS_ARGS ?=

.PHONY: setup setup-test vm-test test check unit bench stress clean clean-cache

setup:
	@scripts/setup.sh $(VENV) run

## set-up plus the packages only the test suite needs (chromium for the report tests)
setup-test:
	@scripts/setup.sh $(VENV) test

## the main job: build/reuse kernel + image, boot, selftest + workloads vs model, verdict
vm-test: setup
	$(THPVM) vm-test $(ARGS)

## the full test suite: unit tests, then integration tests (real kernel build, QEMU, SSH)
test: setup-test
	$(PY) -m pytest tests $(PYTEST_ARGS)

## lint + type check + unit tests only (no VM, seconds)
check: setup
	$(VENV)/bin/ruff check orchestrator tests bench
	$(VENV)/bin/mypy orchestrator
	$(PY) -m pytest -m "not integration" tests $(PYTEST_ARGS)

unit: setup
	$(PY) -m pytest -m "not integration" tests $(PYTEST_ARGS)

## speed targets (boot->SSH, warm vm-test, model PTEs/s), written to $(BENCH_OUT)
bench: setup
	$(PY) bench/run.py --out $(BENCH_OUT)

## verdicts under load: 20 x all workloads, 5 x vm-test, 20 x each seeded kernel bug, every core busy, to $(STRESS_OUT)
stress: setup
	$(PY) bench/stress.py --out $(STRESS_OUT) $(STRESS_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info bench-results

## removes every cached tree, kernel, image and run ($$THPVM_CACHE or ~/.cache/thpvm)
clean-cache:
	rm -rf "$${THPVM_CACHE:-$${XDG_CACHE_HOME:-$$HOME/.cache}/thpvm}"
