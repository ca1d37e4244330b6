"""Server views: live startup progress, the ready card, the failure report. Plain data in, text and
HTML out."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from vllm_magics.notebook.views.render import _Bundle, render


@dataclass
class StartupView(_Bundle):
    """Live startup progress of `vllm serve`."""

    model: str
    command: str
    defaults: list = field(default_factory=list)  # ChosenDefault
    phase_label: str = "Starting"
    fraction: float = 0.0
    detail: str = ""
    recent: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    notes: list[str] = field(default_factory=list)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def text(self) -> str:
        lines = [f"Starting vLLM: {self.model}", f"  command: {self.command}"]
        lines += [f"  default: {d.setting}  ({d.reason})" for d in self.defaults]
        lines += [f"  note: {n}" for n in self.notes]
        lines.append(f"  [{self.elapsed():5.1f}s] {self.phase_label}: {self.detail}")
        return "\n".join(lines)

    def html(self) -> str:
        return render("startup.html.j2", v=self, percent=int(self.fraction * 100), elapsed=self.elapsed())


@dataclass
class ServerCard(_Bundle):
    """A ready (or adopted, or already running) server."""

    headline: str
    model: str
    base_url: str
    api_key_masked: str
    pid: int | None
    log_path: str
    ready_seconds: float | None = None
    defaults: list = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def text(self) -> str:
        lines = [self.headline, f"  model:    {self.model}", f"  base URL: {self.base_url}/v1",
                 f"  API key:  {self.api_key_masked}", f"  pid:      {self.pid}", f"  log:      {self.log_path}"]
        if self.ready_seconds is not None:
            lines.append(f"  ready in: {self.ready_seconds:.1f} s")
        lines += [f"  default:  {d.setting}  ({d.reason})" for d in self.defaults]
        lines += [f"  note:     {n}" for n in self.notes]
        return "\n".join(lines)

    def html(self) -> str:
        return render("server_card.html.j2", c=self)


@dataclass
class FailureReport(_Bundle):
    """Why the server did not start, and what to do."""

    headline: str
    exit_code: int | None
    log_path: str | None
    diagnoses: list = field(default_factory=list)  # diagnose.Diagnosis
    log_tail: str = ""

    def text(self) -> str:
        lines = [self.headline]
        for d in self.diagnoses:
            lines += [f"  Why: {d.summary}", f"  Fix: {d.fix}"]
        if not self.diagnoses:
            lines.append("  No known cause matched: read the last log lines below.")
        if self.log_path:
            lines.append(f"  Full log: {self.log_path}")
        if self.log_tail:
            lines += ["  Last log lines:"] + ["    " + line for line in self.log_tail.splitlines()]
        return "\n".join(lines)

    def html(self) -> str:
        return render("failure.html.j2", r=self)
