#!/usr/bin/env bash
# Debian's Chromium for the tests that check what a person sees (rendered answers, executed notebooks).
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" != 0 ]; then echo "[browser] chromium is missing; install it: sudo apt-get install chromium" >&2; exit 1; fi
echo "[browser] installing chromium (apt-get)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq chromium >/dev/null
