#!/usr/bin/env bash
# The package and every test that needs no vLLM server, Jupyter kernel or browser (pytest -m "not server and
# not kernel and not browser" over all of tests/), on each supported Python besides the rig's own 3.11 and
# Colab's 3.12 (tests/test_colab_mirror.py runs the same tests on 3.12 with Colab's own package versions,
# which says more than a 3.12 with the newest ones): 3.10 and 3.13. Each gets .rig/py3.X with
# `pip install -e .[test]`, made again when setup.cfg changes.
#
# Fails (exit 1) when a supported Python is missing here, when its install fails, or when its tests fail or
# select nothing: a skipped Python would let `make test` pass with nothing run on it. Install the missing one
# (`pyenv install 3.X`), or name on purpose the ones to run: COMPAT_PYTHONS="3.12" scripts/compat.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
selection="not server and not kernel and not browser"
pythons=${COMPAT_PYTHONS:-3.10 3.13}
failed=()

find_python() {  # on PATH, or installed by pyenv without being selected (its shim then refuses to run)
  local v=$1 cand
  for cand in "$(command -v "python$v" || true)" "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$v"*/bin/python"$v"; do
    if [ -n "$cand" ] && [ -x "$cand" ] \
        && "$cand" -c "import sys, venv; sys.exit(sys.version_info[:2] != tuple(map(int, '$v'.split('.'))))" 2>/dev/null
    then
      echo "$cand"
      return 0
    fi
  done
  return 1
}

for v in $pythons; do
  if ! py=$(find_python "$v"); then
    echo "[compat] FAIL: python$v is not on this machine (PATH or pyenv): install it, or leave it out with COMPAT_PYTHONS" >&2
    failed+=("$v (missing)")
    continue
  fi
  venv="$here/.rig/py$v"
  stamp="$venv/.installed-$(sha1sum "$here/setup.cfg" | cut -c1-12)"
  if [ ! -e "$stamp" ]; then
    rm -rf "$venv"
    if ! { "$py" -m venv "$venv" && "$venv/bin/python" -m pip install -q -e "$here[test]"; }; then
      echo "[compat] FAIL: installing the package and its test tools on python$v failed (above)" >&2
      failed+=("$v (install)")
      continue
    fi
    touch "$stamp"
  fi
  echo "[compat] $("$venv/bin/python" --version): tests -m \"$selection\""
  # pytest's own exit code: 1 for a failed test or a file that does not import (the other files still run),
  # 5 when the selection is empty; all count as failures.
  if ! (cd "$here" && "$venv/bin/python" -m pytest -q -p no:cacheprovider --continue-on-collection-errors -m "$selection" tests); then
    failed+=("$v (tests)")
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "[compat] FAILED on python ${failed[*]}" >&2
  exit 1
fi
echo "[compat] passed on python $pythons"
