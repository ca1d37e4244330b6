#!/usr/bin/env bash
# A Python 3.12 virtualenv holding Colab's notebook stack (the versions in tests/fixtures/colab/pip-freeze.txt,
# googlecolab/backend-info), with this project installed on top the way a Colab user installs it.
# Prints the path of the venv's python on its last line. Cached under .rig/colab-mirror, keyed on the pins,
# the freeze and the Python: a second run costs a hash and a stat.
#
# Exit codes: 0 ready; 2 no Python 3.12 on this machine (a failure, not a skip: the mirror is a test).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
freeze="$here/tests/fixtures/colab/pip-freeze.txt"
venv="${COLAB_MIRROR:-$here/.rig/colab-mirror}"

# Colab's notebook stack (its versions, pinned) and what the tests use. pyngrok, hypothesis and
# pytest-timeout are not on Colab: pinned to versions that need nothing Colab does not already hold
# (pyngrok: the newest, 9.1.0, which is what `pip install` of this package brings to Colab).
pins=(
  ipython==7.34.0 ipykernel==6.17.1 ipywidgets==7.7.1 widgetsnbextension==3.6.10 jupyterlab-widgets==3.0.16
  traitlets==5.7.1 jupyter_client==7.4.9 tornado==6.5.1 psutil==5.9.5 prometheus_client==0.25.0
  requests==2.32.4 Jinja2==3.1.6 markdown-it-py==4.2.0 pydantic==2.12.3 pandas==2.2.2
  pyngrok==9.1.0 pytest==8.4.2 pytest-timeout==2.4.0 hypothesis==6.140.3 nbclient==0.10.4 nbformat==5.10.4
)

py=""
for cand in "$(command -v python3.12 || true)" "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.12*/bin/python3.12; do
  if [ -n "$cand" ] && [ -x "$cand" ] && "$cand" -c 'import venv, ensurepip' 2>/dev/null; then py=$cand; break; fi
done
if [ -z "$py" ]; then
  echo "[colab-mirror] no Python 3.12 on this machine (Colab's Python): install it (pyenv install 3.12)" >&2
  exit 2
fi

# Keyed on what the venv holds: the pins, Colab's freeze (the constraints) and the Python. The project is
# installed editable and without its dependencies, so setup.cfg is not part of the key: the dry-run test
# reads it fresh each time.
key=$( (printf '%s\n' "${pins[@]}" "$py"; cat "$freeze") | sha1sum | cut -c1-12)
stamp="$venv/.ready-$key"
mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
flock 9  # two test runs at once: the second waits for the first's build instead of deleting it
if [ ! -e "$stamp" ]; then
  echo "[colab-mirror] building $venv with $("$py" --version)" >&2
  rm -rf "$venv"
  "$py" -m venv "$venv"
  # Every other package at Colab's version too: the freeze (less its URL and +local lines) as constraints.
  grep -E '^[A-Za-z0-9_.-]+==[^+]+$' "$freeze" > "$venv/colab-constraints.txt"
  log="$venv/build.log"
  pip=("$venv/bin/python" -m pip install --disable-pip-version-check)
  "${pip[@]}" -c "$venv/colab-constraints.txt" "${pins[@]}" >"$log" 2>&1 || { tail -20 "$log" >&2; exit 1; }
  # The project itself, editable (the tests import the working tree); its dependencies are already met,
  # and tests/test_colab_mirror.py checks that `pip install .` would change none of them.
  "${pip[@]}" --no-deps -e "$here" >>"$log" 2>&1 || { tail -20 "$log" >&2; exit 1; }
  touch "$stamp"
fi
echo "$venv/bin/python"
