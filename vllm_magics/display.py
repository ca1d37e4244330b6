"""What the magics show: display objects with an HTML view (jinja2 templates, autoescaped) and a
plain-text view for terminals, GitHub and nbviewer. They take plain data, never do I/O."""
from __future__ import annotations

import html
import threading
import time
from dataclasses import dataclass, field

_env = None


def render(template: str, **context) -> str:
    """Render templates/<template> (imported on first use: jinja2 costs ~90 ms, %load_ext stays instant)."""
    global _env
    if _env is None:
        import jinja2

        _env = jinja2.Environment(
            loader=jinja2.PackageLoader("vllm_magics", "templates"),
            autoescape=True,  # model output and log lines are untrusted text
            trim_blocks=True,
            lstrip_blocks=True,
        )
    return _env.get_template(template).render(**context)


class _Bundle:
    def _repr_mimebundle_(self, include=None, exclude=None):
        return {"text/plain": self.text(), "text/html": self.html()}

    def __repr__(self):
        return self.text()


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


def escape(text: str) -> str:
    return html.escape(text, quote=True)


class LiveAnswer:
    """Shows an Answer while it streams: in a notebook one output area updated in place (at most
    `updates_per_second`, then always a final full render); in a terminal the text as it arrives."""

    def __init__(self, notebook: bool, hide_reasoning: bool = False, updates_per_second: float = 15.0):
        from vllm_magics.answer import Answer

        self.notebook = notebook
        self.hide_reasoning = hide_reasoning
        self.min_gap = 1.0 / max(updates_per_second, 0.5)
        self.answer = Answer(streaming=True)
        self.handle = None
        self.last = 0.0
        self.printed = {"reasoning": 0, "text": 0}
        self.updates = 0  # display updates sent (the benchmark and tests read it)

    def _view(self, answer):
        if not self.hide_reasoning:
            return answer
        from dataclasses import replace

        return replace(answer, reasoning="")

    def update(self, answer) -> None:
        if self.notebook:
            now = time.monotonic()
            if now - self.last < self.min_gap:
                return
            self.last = now
            self._draw(answer)
        else:
            self._print_new(answer)

    def _draw(self, answer) -> None:
        from IPython.display import display

        self.updates += 1
        if self.handle is None:
            self.handle = display(self._view(answer), display_id=True)
        else:
            self.handle.update(self._view(answer))

    def _print_new(self, answer) -> None:
        import sys

        out = sys.stdout
        if answer.reasoning and not self.hide_reasoning and len(answer.reasoning) > self.printed["reasoning"]:
            if self.printed["reasoning"] == 0:
                out.write("[reasoning]\n")
            out.write(answer.reasoning[self.printed["reasoning"]:])
            self.printed["reasoning"] = len(answer.reasoning)
        if answer.text and len(answer.text) > self.printed["text"]:
            if self.printed["text"] == 0 and self.printed["reasoning"]:
                out.write("\n[/reasoning]\n\n")
            out.write(answer.text[self.printed["text"]:])
            self.printed["text"] = len(answer.text)
        out.flush()

    def finish(self, answer) -> None:
        answer.streaming = False
        if self.notebook:
            self._draw(answer)
            return
        self._print_new(answer)
        lines = [""] + [f"! {w}" for w in answer.warnings()] + ["-- " + " · ".join(answer.footer_items())]
        print("\n".join(lines), flush=True)


class BatchProgress:
    """A progress bar for `%%ask --each`: a display updated in place, or lines in a terminal."""

    def __init__(self, total: int, notebook: bool):
        self.total, self.notebook = total, notebook
        self.handle = None
        self.started = time.monotonic()
        self.last = 0.0
        self.last_printed = -1
        self.lock = threading.Lock()  # called from the batch's worker threads

    def _html(self, done: int, failed: int) -> str:
        return render("batch_progress.html.j2", done=done, total=self.total, failed=failed,
                      percent=int(100 * done / max(self.total, 1)), elapsed=time.monotonic() - self.started)

    def _text(self, done: int, failed: int) -> str:
        fail = f", {failed} failed" if failed else ""
        return f"asked {done}/{self.total}{fail} in {time.monotonic() - self.started:.1f} s"

    def update(self, done: int, total: int, results) -> None:
        with self.lock:
            self._update(done, total, results)

    def _update(self, done: int, total: int, results) -> None:
        failed = sum(1 for a in results if a.error)
        now = time.monotonic()
        if self.notebook:
            if now - self.last < 0.2 and done < total:
                return
            self.last = now
            from IPython.display import display

            bundle = {"text/plain": self._text(done, failed), "text/html": self._html(done, failed)}
            if self.handle is None:
                self.handle = display(bundle, raw=True, display_id=True)
            else:
                self.handle.update(bundle, raw=True)
        elif done * 10 // max(total, 1) != self.last_printed:
            self.last_printed = done * 10 // max(total, 1)
            print(self._text(done, failed), flush=True)

    def finish(self, results) -> None:
        self.update(len(results), len(results), results)
