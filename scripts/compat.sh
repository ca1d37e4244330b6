#!/usr/bin/env bash
# The notebook side on every Python the extension supports (3.10 to 3.13; Colab runs 3.12): installs
# `pip install .` plus the test tools into .rig/py3.X and runs the tests that need no vLLM. A Python
# that is not on this machine is reported and skipped (the rig itself uses 3.11).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
fast_tests="tests/test_magics.py tests/test_plan.py tests/test_gpu.py tests/test_progress.py tests/test_reasoning.py
  tests/test_markdown.py tests/test_ask_unit.py tests/test_process.py tests/test_diagnose.py"
status=0
for v in ${COMPAT_PYTHONS:-3.10 3.12 3.13}; do
  py=""
  # On PATH, or installed by pyenv without being selected (its shim then refuses to run).
  for cand in "$(command -v "python$v" || true)" ${PYENV_ROOT:-$HOME/.pyenv}/versions/$v*/bin/python$v; do
    if [ -n "$cand" ] && [ -x "$cand" ] && "$cand" -c 'import venv' 2>/dev/null; then py=$cand; break; fi
  done
  if [ -z "$py" ]; then
    echo "[compat] python$v is not on this machine: skipped"
    continue
  fi
  venv="$here/.rig/py$v"
  stamp="$venv/.installed-$(sha1sum "$here/setup.cfg" | cut -c1-12)"
  if [ ! -e "$stamp" ]; then
    rm -rf "$venv"
    "$py" -m venv "$venv"
    "$venv/bin/python" -m pip install -q -e "$here" pytest pytest-timeout hypothesis >/dev/null
    touch "$stamp"
  fi
  echo "[compat] $("$venv/bin/python" --version): the tests that need no vLLM"
  (cd "$here" && "$venv/bin/python" -m pytest -q -p no:cacheprovider $fast_tests | tail -1) || status=1
done
exit $status
