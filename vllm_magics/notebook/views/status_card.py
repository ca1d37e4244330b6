"""The %vllm_status card: rows from the status dict, sparklines of tokens/s and KV-cache use."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from vllm_magics.notebook.views.render import _Bundle, render

SPARK = "▁▂▃▄▅▆▇█"


def _finite(values) -> list:
    return [v if v is not None and math.isfinite(v) else None for v in values]


def sparkline_text(values, top: float | None = None) -> str:
    values = _finite(values)
    vals = [v for v in values if v is not None]
    if not vals:
        return ""
    top = top or max(vals) or 1.0
    return "".join(" " if v is None else SPARK[min(len(SPARK) - 1, int(v / top * (len(SPARK) - 1)))] for v in values)


def sparkline_svg(values, top: float | None = None, width: int = 180, height: int = 34) -> str:
    """A small line plot as inline SVG (numbers only: safe to mark as HTML)."""
    values = _finite(values)
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


def _fmt_count(n) -> str:
    return "–" if n is None else f"{n:.0f}"


@dataclass
class StatusCard(_Bundle):
    """%vllm_status: one look at the server (status dict from vllm_magics.status.collect)."""

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
            bases = [x for x in s["models"] if not x.get("parent")] or s["models"]
            rows["model"] = ", ".join(f"{x['id']}" + (f" (max {x['max_model_len']} tokens)" if x.get(
                "max_model_len") is not None else "") for x in bases)
            adapters = [x for x in s["models"] if x.get("parent")]
            if adapters:
                rows["LoRA adapters"] = ", ".join(f"{x['id']} (on {x['parent']})" for x in adapters)
        elif s.get("models_error"):
            rows["model"] = f"/v1/models: {s['models_error']}"
        for g in s.get("gpus") or []:
            rows[f"GPU {g['index']}"] = (f"{g['name']}: {g['memory_used_mib']} / {g['memory_total_mib']} MiB, "
                                         f"{g['utilization_pct']}% busy")
        if not m and s.get("metrics_error"):
            rows["metrics"] = f"/metrics: {s['metrics_error']}"
        if m:  # a figure the server does not export is None: shown as –
            rows["requests"] = f"{_fmt_count(m.get('requests_running'))} running, " \
                               f"{_fmt_count(m.get('requests_waiting'))} waiting"
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
        name = self.status.get("name")  # set when the kernel manages several servers
        return self._state() if not name else self._state().replace("vLLM server", f"vLLM server {name}", 1)

    def _state(self) -> str:
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
