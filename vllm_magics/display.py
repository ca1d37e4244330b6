"""What the magics show: display objects with an HTML view (jinja2 templates, autoescaped) and a
plain-text view for terminals, GitHub and nbviewer. They take plain data, never do I/O."""
from __future__ import annotations

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


SPARK = "▁▂▃▄▅▆▇█"


def sparkline_text(values, top: float | None = None) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return ""
    top = top or max(vals) or 1.0
    return "".join(" " if v is None else SPARK[min(len(SPARK) - 1, int(v / top * (len(SPARK) - 1)))] for v in values)


def sparkline_svg(values, top: float | None = None, width: int = 180, height: int = 34) -> str:
    """A small line plot as inline SVG (numbers only: safe to mark as HTML)."""
    pts = [(i, v) for i, v in enumerate(values) if v is not None]
    if len(pts) < 2:
        return ""
    top = top or max(v for _, v in pts) or 1.0
    n = max(len(values) - 1, 1)
    coords = " ".join(f"{i / n * (width - 2) + 1:.1f},{height - 1 - min(v / top, 1.0) * (height - 2):.1f}"
                      for i, v in pts)
    return (f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" class="vm-spark">'
            f'<polyline fill="none" stroke="#0969da" stroke-width="1.5" points="{coords}"/></svg>')


def _fmt_seconds(s) -> str:
    if s is None:
        return "–"
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


@dataclass
class StatusCard(_Bundle):
    """%vllm_status: one look at the server (status dict from vllm_magics.status)."""

    status: dict
    history: list = field(default_factory=list)  # [(monotonic time, tokens/s, kv usage 0-1)]

    def _rows(self) -> dict:
        s = self.status
        p, m = s["process"], s.get("metrics") or {}
        rows = {}
        if p["state"] != "external":
            state = p["state"] + (f" (exit code {p['exit_code']})" if p.get("exit_code") is not None else "")
            rows["process"] = f"{state}, pid {p['pid']}, up {_fmt_seconds(p['uptime_s'])}" if p.get(
                "uptime_s") is not None else state
        else:
            rows["process"] = "external server (not started by this kernel)"
        h = s["health"]["status"]
        rows["health"] = {200: "ok (200)", 503: "engine dead (503)", None: "no answer"}.get(h, f"HTTP {h}")
        rows["URL"] = f"{s['url']}/v1" + (f" · key {s['api_key']}" if s.get("api_key") else " · no API key")
        if s.get("version"):
            rows["vLLM"] = s["version"]
        if s.get("models"):
            rows["model"] = ", ".join(f"{x['id']} (max {x['max_model_len']} tokens)" for x in s["models"])
        elif s.get("models_error"):
            rows["model"] = f"/v1/models: {s['models_error']}"
        for g in s.get("gpus") or []:
            rows[f"GPU {g['index']}"] = (f"{g['name']}: {g['memory_used_mib']} / {g['memory_total_mib']} MiB, "
                                         f"{g['utilization_pct']}% busy")
        if m:
            rows["requests"] = f"{m['requests_running']:.0f} running, {m['requests_waiting']:.0f} waiting"
            if m.get("kv_cache_usage") is not None:
                rows["KV cache"] = f"{m['kv_cache_usage'] * 100:.1f}% used"
            rate = m.get("generation_tokens_per_s")
            rows["tokens"] = (f"{m.get('prompt_tokens_total') or 0:.0f} in, {m.get('generation_tokens_total') or 0:.0f} "
                              f"out" + (f" · {rate:.1f} tokens/s now" if rate is not None else
                                        " · tokens/s: run again (it needs two samples)"))
            for key, label in (("time_to_first_token", "first token"), ("e2e_latency", "request latency")):
                h_ = m.get(key) or {}
                if h_.get("count"):
                    rows[label] = (f"p50 {_fmt_seconds(h_['p50_s'])}, p90 {_fmt_seconds(h_['p90_s'])}, "
                                   f"p99 {_fmt_seconds(h_['p99_s'])} ({h_['count']:.0f} requests)")
            done = {k: v for k, v in (m.get("requests_finished") or {}).items() if v}
            if done or m.get("preemptions_total"):
                rows["finished"] = ", ".join(f"{v:.0f} {k}" for k, v in done.items()) or "none"
                rows["finished"] += f" · {m.get('preemptions_total') or 0:.0f} preemptions"
        if s.get("tunnel"):
            rows["tunnel"] = s["tunnel"]["public_url"]
        return rows

    @property
    def headline(self) -> str:
        p, h = self.status["process"], self.status["health"]["status"]
        if p["state"] in ("exited", "stopped"):
            return "vLLM server: " + ("stopped" if p["state"] == "stopped" else f"exited (code {p['exit_code']})")
        if h == 200:
            return "vLLM server: ready"
        if h == 503:
            return "vLLM server: engine dead"
        return "vLLM server: " + ("starting" if p["state"] == "starting" else "not answering")

    def text(self) -> str:
        lines = [self.headline] + [f"  {k:<14} {v}" for k, v in self._rows().items()]
        if len(self.history) > 1:
            lines.append(f"  {'tokens/s':<14} {sparkline_text([x[1] for x in self.history])}")
            lines.append(f"  {'KV cache':<14} {sparkline_text([x[2] for x in self.history], 1.0)}")
        for d in self.status.get("diagnoses") or []:
            lines += [f"  Why: {d['summary']}", f"  Fix: {d['fix']}"]
        if self.status.get("log_tail"):
            lines += ["  last log lines:"] + ["    " + ln for ln in self.status["log_tail"][-8:]]
        return "\n".join(lines)

    def html(self) -> str:
        ok = self.status["health"]["status"] == 200
        spark = None
        if len(self.history) > 1:
            spark = {"rate": sparkline_svg([x[1] for x in self.history]),
                     "kv": sparkline_svg([x[2] for x in self.history], 1.0),
                     "rate_now": self.history[-1][1], "kv_now": self.history[-1][2]}
        return render("status.html.j2", s=self.status, rows=self._rows(), headline=self.headline, ok=ok,
                      spark=spark)
