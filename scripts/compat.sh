#!/usr/bin/env bash
# The package and every test that needs no vLLM server, Jupyter kernel, browser or Colab mirror
# (pytest -m "not server and not kernel and not browser and not colab_mirror" over all of tests/), on each
# supported Python besides the rig's own 3.11 and Colab's 3.12 (tests/test_colab_mirror.py runs the same tests
# on 3.12 with Colab's own package versions, which says more than a 3.12 with the newest ones; its tests
# are about that venv, so running them again from here would only repeat them): 3.10 and 3.13. Each gets
# .rig/py3.X with `pip install -e .[test]` (through the rig's uv when there is one: seconds, not minutes),
# made again when setup.cfg changes. The Pythons run at once.
#
# Fails (exit 1) when a supported Python is missing here, when its install fails, or when its tests fail or
# select nothing: a skipped Python would let `make test` pass with nothing run on it. Install the missing one
# (`pyenv install 3.X`), or name on purpose the ones to run: COMPAT_PYTHONS="3.12" scripts/compat.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
selection="not server and not kernel and not browser and not colab_mirror"
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

uv="$here/.rig/venv/bin/uv"  # scripts/setup_rig.sh puts it there
install() {  # install PYTHON ARGS...: pip's arguments, into that Python's venv
  local py=$1
  shift
  if [ -x "$uv" ]; then
    "$uv" pip install -q --python "$py" --compile-bytecode "$@"
  else
    "$py" -m pip install -q "$@"
  fi
}

# One Python's install and run; its exit code says what failed (2 missing, 3 install, 1 tests).
check_python() {
  local v=$1 py venv stamp t0=$SECONDS
  if ! py=$(find_python "$v"); then
    echo "[compat] FAIL: python$v is not on this machine (PATH or pyenv): install it, or leave it out with COMPAT_PYTHONS" >&2
    return 2
  fi
  venv="$here/.rig/py$v"
  stamp="$venv/.installed-$(sha1sum "$here/setup.cfg" | cut -c1-12)"
  if [ ! -e "$stamp" ]; then
    rm -rf "$venv"
    if ! { "$py" -m venv "$venv" && install "$venv/bin/python" -e "$here[test]"; }; then
      echo "[compat] FAIL: installing the package and its test tools on python$v failed (above)" >&2
      return 3
    fi
    touch "$stamp"
  fi
  echo "[compat] $("$venv/bin/python" --version): tests -m \"$selection\""
  # pytest's own exit code: 1 for a failed test or a file that does not import (the other files still run),
  # 5 when the selection is empty; all count as failures.
  (cd "$here" && "$venv/bin/python" -m pytest -q -p no:cacheprovider --continue-on-collection-errors -m "$selection" tests) \
    || return 1
  echo "[compat] python$v: installed and tested in $((SECONDS - t0)) s"
}

# The Pythons run at once: their tests mostly wait (stand-in servers, deadlines), not compute. Each one's
# output goes to .rig/compat-3.X.log and is printed whole when it ends, in the order of $pythons.
mkdir -p "$here/.rig"
pids=()
for v in $pythons; do
  check_python "$v" > "$here/.rig/compat-$v.log" 2>&1 &
  pids+=($!)
done
i=0
for v in $pythons; do
  code=0
  wait "${pids[$i]}" || code=$?
  i=$((i + 1))
  cat "$here/.rig/compat-$v.log"
  case $code in
    0) ;;
    2) failed+=("$v (missing)") ;;
    3) failed+=("$v (install)") ;;
    *) failed+=("$v (tests)") ;;
  esac
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "[compat] FAILED on python ${failed[*]}" >&2
  exit 1
fi
echo "[compat] passed on python $pythons"
