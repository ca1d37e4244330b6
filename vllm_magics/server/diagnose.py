"""Turn a failed `vllm serve` log into plain-language advice.

`diagnose(log_text, exit_code)` matches the log against a table of known failures (each a few
regexes written against real vLLM output) and returns what went wrong and what to do next, most
specific first; a generic diagnosis (the engine died) comes after any specific one. The table is in
diagnose_rules.py. Plain modules: stdlib only, no IPython; the regexes are compiled on first use. The
cost is bounded whatever the log's size: a long log is read at its head and its tail (HEAD_CHARS,
TAIL_CHARS), and every pattern is linear in what it reads.

    >>> diagnose("ValueError: Bfloat16 is only supported on GPUs with compute capability of at least "
    ...          "8.0. Your Tesla T4 GPU has compute capability 7.5.")[0].key
    'bf16_unsupported_gpu'
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from vllm_magics.server.diagnose_rules import RULES, EVIDENCE_MAX, Rule
from vllm_magics.server.vllm_log import LOG_PREFIX

__all__ = ["Diagnosis", "diagnose", "KEYS"]

# What is read of a long log: its start (the configuration vLLM logged, which some advice quotes) and its
# end (a failure stops the server, so its error is last). Bounds the cost whatever the log's size.
HEAD_CHARS = 64_000
TAIL_CHARS = 1_000_000


@dataclass(frozen=True)
class Diagnosis:
    """One known failure found in a vLLM log."""

    key: str  # stable id, e.g. "bf16_unsupported_gpu"
    summary: str  # one plain-language sentence: what went wrong
    fix: str  # what to do next, concrete (flags / commands), may quote values from the log
    evidence: str  # the log line that matched (stripped, trimmed to ~300 chars)


KEYS: tuple[str, ...] = tuple(r.key for r in RULES)

_compiled: list | None = None


def _compile() -> list:
    global _compiled
    if _compiled is None:
        _compiled = [(rule, tuple(re.compile(p, re.M) for p in rule.patterns)) for rule in RULES]
    return _compiled


# The start of a quoted source line in a traceback. A plain string, like the table: re compiles and
# caches it on first use.
_SOURCE_LINE = r"[^\S\n]*(?:raise\b|File \")"


def _on_source_line(log: str, pos: int) -> bool:
    """Whether `pos` is on a quoted source line (only the start of its line is read)."""
    return re.compile(_SOURCE_LINE).match(log, log.rfind("\n", 0, pos) + 1) is not None


def _best_match(rx: "re.Pattern", log: str, first: "re.Match") -> "re.Match":
    """Prefer a match on the line that states the error over one in a quoted source line
    (`raise RuntimeError("Failed to infer device type")`)."""
    if not _on_source_line(log, first.start()):
        return first
    for n, m in enumerate(rx.finditer(log)):
        if n > 50:
            break
        if not _on_source_line(log, m.start()):
            return m
    return first


def _evidence(log: str, start: int, end: int) -> str:
    """The line holding the match, stripped; a long one loses vLLM's log prefix and is cut to
    about EVIDENCE_MAX characters around the match."""
    line_start = log.rfind("\n", 0, start) + 1
    line_end = log.find("\n", end)
    if line_end == -1:
        line_end = len(log)
    line = log[line_start:line_end]
    lead = len(line) - len(line.lstrip())
    line = line.strip()
    if len(line) <= EVIDENCE_MAX:
        return line
    prefix = LOG_PREFIX.match(line)
    if prefix and prefix.end() and start - line_start - lead >= prefix.end():
        lead += prefix.end()  # a long line: drop vLLM's "(EngineCore pid=1) ERROR date [file:line] " prefix
        line = line[prefix.end():]
        if len(line) <= EVIDENCE_MAX:
            return line
    at = start - line_start - lead  # where the match starts within `line`
    offset = 0 if at + (end - start) <= EVIDENCE_MAX - 2 else max(0, at - 40)
    piece = line[offset: offset + EVIDENCE_MAX - 2]
    return ("…" if offset else "") + piece.strip() + "…"


def _window(log: str) -> str:
    """The part of a log worth reading: all of a short one; the head and the tail of a long one."""
    if len(log) <= HEAD_CHARS + TAIL_CHARS:
        return log
    return log[:HEAD_CHARS] + "\n[...]\n" + log[-TAIL_CHARS:]


def _render(text, groups: dict, log: str) -> str:
    return text(groups, log) if callable(text) else text


def diagnose(log_text: str, exit_code: int | None = None) -> list[Diagnosis]:
    """Most specific first; [] when nothing known matched.

    `log_text` is the server's combined stdout+stderr; `exit_code` its exit status if it has exited
    (a negative number is a signal, as subprocess reports it). Call it for a server that stopped on its
    own: an exit code of -9/137 is read as "killed for lack of RAM", so not for one you killed.
    """
    log = _window(log_text or "").replace("\r\n", "\n").replace("\r", "\n")
    if "\x1b" in log:  # colours, when vLLM believed it wrote to a terminal
        log = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", log)
    found: list[tuple[Rule, dict, str]] = []
    for rule, patterns in _compile():
        hit = None
        groups: dict = {}
        for rx in patterns:
            m = rx.search(log)
            if m is None:
                continue
            if hit is None:
                hit = _best_match(rx, log, m)  # the first pattern that matches is the evidence ...
            for k, v in m.groupdict().items():  # ... every matching pattern may fill in values
                if v is not None:
                    groups.setdefault(k, v)
        if hit is not None:
            groups["_start"] = hit.start()
            found.append((rule, groups, _evidence(log, hit.start(), hit.end())))
        elif exit_code is not None and exit_code in rule.exit_codes:
            found.append((rule, {}, f"exit code {exit_code}"))
    keys = {rule.key for rule, _, _ in found}
    out = []
    for rule, groups, evidence in found:
        if keys.intersection(rule.suppressed_by):
            continue
        out.append(Diagnosis(
            key=rule.key,
            summary=_render(rule.summary, groups, log),
            fix=_render(rule.fix, groups, log),
            evidence=evidence,
        ))
    return out
