"""The diagnosis for a command line vLLM refuses, as plain data for vllm_magics/server/diagnose_rules.py:
    Rule(**REJECTED_FLAG_RULE)
(kept here, beside the flag lists it refers to, and free of imports from diagnose: no import cycle).

vLLM's argparse ends with one line and exit code 2 (recorded in tests/fixtures/colab/vllm_logs/):
    vllm: error: unrecognized arguments: false
    vllm serve: error: argument --max-num-seqs: invalid int value: 'lots'
    vllm serve: error: argument --kv-cache-dtype: invalid choice: 'fp9' (choose from 'auto', ...)
Both patterns start with a literal and hold no unbounded repeat before a literal that may be missing (linear).
"""
from __future__ import annotations

import re

QUOTE_MAX = 200


def _error_line(log: str) -> str:
    m = re.search(r"^vllm(?: serve)?: error: ([^\n]*)", log, re.M)
    line = m.group(1).strip() if m else ""
    return line if len(line) <= QUOTE_MAX else line[:QUOTE_MAX] + "…"


def _summary(groups: dict, log: str) -> str:
    return f"vLLM refused its command line: “{_error_line(log)}”"


def _fix(groups: dict, log: str) -> str:
    if groups.get("unknown") is not None:
        words = groups["unknown"].split()
        if words and all(w.lower() in ("true", "false", "yes", "no", "on", "off", "0", "1") for w in words):
            return ("vLLM's on/off flags take no value now: write --flag to turn one on and --no-flag to turn it "
                    "off (e.g. --no-enable-chunked-prefill instead of --enable-chunked-prefill false).")
        return (f"this vLLM has no flag {words[0] if words else ''} (misspelt, or from another vLLM version): "
                "`vllm serve --help=all` lists its flags; %vllm_serve's own options are in %vllm_serve?.")
    flag = groups.get("flag") or "that flag"
    return f"the value given to {flag} is not one vLLM accepts (see the quote); `vllm serve --help={flag.lstrip('-')}` " \
           "shows what it takes."


REJECTED_FLAG_RULE = dict(
    key="vllm_rejected_flag",
    patterns=(r"^vllm(?: serve)?: error: unrecognized arguments: (?P<unknown>[^\n]*)",
              r"^vllm(?: serve)?: error: argument (?P<flag>-[\w-]*)"),
    summary=_summary,
    fix=_fix,
    exit_codes=(),
)
