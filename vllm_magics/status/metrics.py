"""vLLM's Prometheus metrics, read into plain figures (no IPython).

Parsed with prometheus_client's own text parser (imported on first use). Names that changed between
vLLM releases are read under each name (`vllm:kv_cache_usage_perc`, formerly
`vllm:gpu_cache_usage_perc`). Labels (engine, model_name) are summed over: one server, one model.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

# figure -> names to try, newest first
GAUGES = {
    "requests_running": ("vllm:num_requests_running",),
    "requests_waiting": ("vllm:num_requests_waiting",),
    "kv_cache_usage": ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
}
COUNTERS = {  # sample names (the parser's family names drop "_total")
    "prompt_tokens_total": ("vllm:prompt_tokens_total",),
    "generation_tokens_total": ("vllm:generation_tokens_total",),
    "preemptions_total": ("vllm:num_preemptions_total",),
}
HISTOGRAMS = {
    "time_to_first_token": "vllm:time_to_first_token_seconds",
    "e2e_latency": "vllm:e2e_request_latency_seconds",
    "inter_token_latency": "vllm:inter_token_latency_seconds",
}
QUANTILES = (0.5, 0.9, 0.99)


@dataclass
class Histogram:
    buckets: list[tuple[float, float]]  # (upper bound, cumulative count), sorted
    count: float = 0.0
    total: float = 0.0

    def quantile(self, q: float) -> float | None:
        """Linear interpolation inside the bucket (what Prometheus' histogram_quantile does)."""
        if not self.count:
            return None
        rank = q * self.count
        lower_bound, lower_count = 0.0, 0.0
        for bound, cumulative in self.buckets:
            if cumulative >= rank:
                if math.isinf(bound):
                    return lower_bound  # beyond the last finite bucket: its bound is all we know
                inside = cumulative - lower_count
                fraction = (rank - lower_count) / inside if inside else 1.0
                return lower_bound + (bound - lower_bound) * fraction
            lower_bound, lower_count = bound, cumulative
        return lower_bound

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None


@dataclass
class MetricsSnapshot:
    taken_at: float  # time.monotonic()
    gauges: dict[str, float] = field(default_factory=dict)
    counters: dict[str, float] = field(default_factory=dict)
    finished: dict[str, float] = field(default_factory=dict)  # finished_reason -> count
    histograms: dict[str, Histogram] = field(default_factory=dict)

    @property
    def has_vllm_figures(self) -> bool:
        """False for a /metrics page of some other server (no name vLLM exports)."""
        return bool(self.gauges or self.counters or self.finished or self.histograms)

    def as_dict(self, previous: "MetricsSnapshot | None" = None) -> dict:
        """The documented figures (see vllm_magics.status.collect for the keys)."""
        out = {k: self.gauges.get(k) for k in GAUGES}
        out.update({k: self.counters.get(k) for k in COUNTERS})
        out["requests_finished"] = dict(self.finished)
        for name, h in self.histograms.items():
            out[name] = {"count": h.count, "mean_s": h.mean,
                         **{f"p{int(q * 100)}_s": h.quantile(q) for q in QUANTILES}}
        out["generation_tokens_per_s"] = generation_rate(previous, self)
        return out


def parse_metrics(text: str, taken_at: float | None = None) -> MetricsSnapshot:
    from prometheus_client.parser import text_string_to_metric_families

    snap = MetricsSnapshot(taken_at=time.monotonic() if taken_at is None else taken_at)
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)

    def total(name: str) -> float | None:
        found = samples.get(name)
        value = sum(s.value for s in found) if found else None
        return value if value is not None and math.isfinite(value) else None  # NaN/Inf: not a figure

    for table, into in ((GAUGES, snap.gauges), (COUNTERS, snap.counters)):
        for key, names in table.items():
            value = next((v for v in map(total, names) if v is not None), None)
            if value is not None:
                into[key] = value
    for s in samples.get("vllm:request_success_total", []):
        reason = s.labels.get("finished_reason", "?")
        snap.finished[reason] = snap.finished.get(reason, 0.0) + s.value
    for key, name in HISTOGRAMS.items():
        buckets: dict[float, float] = {}
        for s in samples.get(name + "_bucket", []):
            try:
                bound = float(s.labels["le"])
            except (KeyError, ValueError):  # not a Prometheus histogram bucket: skip it
                continue
            buckets[bound] = buckets.get(bound, 0.0) + s.value
        if buckets:
            snap.histograms[key] = Histogram(sorted(buckets.items()), total(name + "_count") or 0.0,
                                             total(name + "_sum") or 0.0)
    return snap


def generation_rate(previous: MetricsSnapshot | None, current: MetricsSnapshot) -> float | None:
    """Generated tokens per second between two samples (None without a usable earlier one)."""
    if previous is None:
        return None
    dt = current.taken_at - previous.taken_at
    a, b = previous.counters.get("generation_tokens_total"), current.counters.get("generation_tokens_total")
    if dt <= 0 or a is None or b is None or b < a:  # b < a: the server restarted in between
        return None
    return (b - a) / dt
