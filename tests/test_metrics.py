"""vllm_magics.status.metrics to the exact figure: sums over engines, old metric names, histogram
quantiles at their edges, the token rate's guards. The expositions below follow the Prometheus text
format that vLLM serves (names and labels as in tests/fixtures/metrics/vllm-0.32.0-cpu-smollm2.txt)."""
from __future__ import annotations

import time

import pytest

from vllm_magics.status.metrics import Histogram, MetricsSnapshot, generation_rate, parse_metrics

TWO_ENGINES = """\
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 2.0
vllm:num_requests_running{engine="1",model_name="m"} 3.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="m"} 1.0
vllm:num_requests_waiting{engine="1",model_name="m"} 0.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.25
vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.5
# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{engine="0",model_name="m"} 0.9
# TYPE vllm:prompt_tokens counter
vllm:prompt_tokens_total{engine="0",model_name="m"} 100.0
vllm:prompt_tokens_total{engine="1",model_name="m"} 20.0
# TYPE vllm:generation_tokens counter
vllm:generation_tokens_total{engine="0",model_name="m"} 40.0
vllm:generation_tokens_total{engine="1",model_name="m"} 2.0
# TYPE vllm:num_preemptions counter
vllm:num_preemptions_total{engine="0",model_name="m"} 1.0
vllm:num_preemptions_total{engine="1",model_name="m"} 6.0
# TYPE vllm:request_success counter
vllm:request_success_total{engine="0",finished_reason="stop",model_name="m"} 4.0
vllm:request_success_total{engine="1",finished_reason="stop",model_name="m"} 1.0
vllm:request_success_total{engine="0",finished_reason="length",model_name="m"} 2.0
vllm:request_success_total{engine="0",model_name="m"} 7.0
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.1",model_name="m"} 1.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.5",model_name="m"} 3.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf",model_name="m"} 4.0
vllm:time_to_first_token_seconds_count{engine="0",model_name="m"} 4.0
vllm:time_to_first_token_seconds_sum{engine="0",model_name="m"} 2.0
vllm:time_to_first_token_seconds_bucket{engine="1",le="0.1",model_name="m"} 1.0
vllm:time_to_first_token_seconds_bucket{engine="1",le="0.5",model_name="m"} 5.0
vllm:time_to_first_token_seconds_bucket{engine="1",le="+Inf",model_name="m"} 6.0
vllm:time_to_first_token_seconds_count{engine="1",model_name="m"} 6.0
vllm:time_to_first_token_seconds_sum{engine="1",model_name="m"} 3.0
"""


def test_every_figure_is_summed_over_the_engines():
    snap = parse_metrics(TWO_ENGINES, taken_at=5.0)
    assert snap.taken_at == 5.0
    assert snap.gauges == {"requests_running": 5.0, "requests_waiting": 1.0, "kv_cache_usage": 0.75}
    assert snap.counters == {"prompt_tokens_total": 120.0, "generation_tokens_total": 42.0,
                             "preemptions_total": 7.0}
    # a success sample without finished_reason still counts, under "?"
    assert snap.finished == {"stop": 5.0, "length": 2.0, "?": 7.0}
    h = snap.histograms["time_to_first_token"]
    assert h.buckets == [(0.1, 2.0), (0.5, 8.0), (float("inf"), 10.0)]
    assert (h.count, h.total) == (10.0, 5.0)
    assert set(snap.histograms) == {"time_to_first_token"}


def test_the_documented_dict_to_the_figure():
    earlier = MetricsSnapshot(taken_at=3.0, counters={"generation_tokens_total": 22.0})
    d = parse_metrics(TWO_ENGINES, taken_at=5.0).as_dict(earlier)
    assert d == {
        "requests_running": 5.0, "requests_waiting": 1.0, "kv_cache_usage": 0.75,
        "prompt_tokens_total": 120.0, "generation_tokens_total": 42.0, "preemptions_total": 7.0,
        "requests_finished": {"stop": 5.0, "length": 2.0, "?": 7.0},
        # ranks 5, 9, 9.9 of 10: inside (0.1, 0.5] at 3/6, then past the last finite bound
        "time_to_first_token": {"count": 10.0, "mean_s": 0.5, "p50_s": pytest.approx(0.1 + 0.4 * 3 / 6),
                                "p90_s": 0.5, "p99_s": 0.5},
        "generation_tokens_per_s": 10.0,
    }


def test_the_newer_name_wins_and_the_older_one_is_the_fallback():
    old_only = '# TYPE vllm:gpu_cache_usage_perc gauge\nvllm:gpu_cache_usage_perc{engine="0"} 0.9\n'
    assert parse_metrics(old_only).gauges == {"kv_cache_usage": 0.9}
    assert parse_metrics(TWO_ENGINES).gauges["kv_cache_usage"] == 0.75  # not 0.9, not 1.65


def test_a_zero_figure_is_kept_and_a_missing_one_is_none():
    text = "# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting 0.0\n"
    snap = parse_metrics(text, taken_at=1.0)
    assert snap.gauges == {"requests_waiting": 0.0}
    d = snap.as_dict()
    assert d["requests_waiting"] == 0.0 and d["requests_running"] is None and d["prompt_tokens_total"] is None
    assert d["requests_finished"] == {} and d["generation_tokens_per_s"] is None
    assert "time_to_first_token" not in d


def test_a_histogram_without_count_or_sum_reads_as_zero():
    text = ('# TYPE vllm:e2e_request_latency_seconds histogram\n'
            'vllm:e2e_request_latency_seconds_bucket{le="1.0"} 0.0\n'
            'vllm:e2e_request_latency_seconds_bucket{le="+Inf"} 0.0\n')
    h = parse_metrics(text).histograms["e2e_latency"]
    assert (h.count, h.total, h.mean, h.quantile(0.5)) == (0.0, 0.0, None, None)


def test_without_a_time_the_snapshot_takes_the_monotonic_clock():
    before = time.monotonic()
    snap = parse_metrics("")
    assert before <= snap.taken_at <= time.monotonic()
    assert parse_metrics("", taken_at=0.0).taken_at == 0.0


@pytest.mark.parametrize("q, expected", [
    (0.2, 0.1),    # rank 2 == the first bucket's count: its upper bound, not the next bucket
    (0.1, 0.05),   # half of the first bucket, from 0
    (0.3, 0.2 + 0.3 * 1 / 4),  # rank 3: past the empty bucket (0.1, 0.2], then (0.2, 0.5] at 1/4
    (0.6, 0.5),
    (0.8, 0.75),   # in (0.5, 1.0] at 2/4
])
def test_quantiles_interpolate_inside_the_bucket(q, expected):
    # cumulative counts: 2 up to 0.1, still 2 up to 0.2, 6 up to 0.5, 10 up to 1.0
    h = Histogram([(0.1, 2.0), (0.2, 2.0), (0.5, 6.0), (1.0, 10.0)], count=10.0, total=5.0)
    assert h.quantile(q) == pytest.approx(expected)


def test_quantile_edges():
    # all observations past the last finite bound: the bound is all we know
    assert Histogram([(0.5, 0.0), (float("inf"), 4.0)], count=4.0).quantile(0.5) == 0.5
    # a bucket reached with nothing inside it (rank 0): its upper bound
    assert Histogram([(0.25, 0.0), (1.0, 4.0)], count=4.0).quantile(0.0) == 0.25
    # buckets that end before the count (a scrape caught mid-update): the last bound
    assert Histogram([(0.5, 1.0), (2.0, 2.0)], count=4.0).quantile(0.99) == 2.0
    assert Histogram([(0.5, 2.0)], count=2.0, total=3.0).mean == 1.5


def test_generation_rate_guards():
    def snap(at, tokens):
        return MetricsSnapshot(taken_at=at, counters={} if tokens is None else {"generation_tokens_total": tokens})

    assert generation_rate(snap(1.0, 10.0), snap(3.0, 30.0)) == 10.0
    assert generation_rate(snap(1.0, 10.0), snap(3.0, 10.0)) == 0.0  # idle: zero, not unknown
    assert generation_rate(snap(1.0, 10.0), snap(1.0, 30.0)) is None  # same instant
    assert generation_rate(snap(3.0, 10.0), snap(1.0, 30.0)) is None  # clock order reversed
    assert generation_rate(snap(1.0, None), snap(3.0, 30.0)) is None
    assert generation_rate(snap(1.0, 10.0), snap(3.0, None)) is None
    assert generation_rate(snap(1.0, 30.0), snap(3.0, 10.0)) is None  # restarted in between
    assert generation_rate(None, snap(3.0, 10.0)) is None


def test_not_a_number_is_not_a_figure():
    # Prometheus' text format allows NaN and +Inf sample values; a figure we show must be a number
    text = ("vllm:num_requests_running NaN\nvllm:num_requests_waiting 2.0\n"
            "vllm:prompt_tokens_total +Inf\nvllm:generation_tokens_total 5.0\n")
    snap = parse_metrics(text, taken_at=1.0)
    assert snap.gauges == {"requests_waiting": 2.0}
    assert snap.counters == {"generation_tokens_total": 5.0}


def test_a_bucket_without_a_usable_bound_is_skipped_not_the_rest():
    text = ('vllm:inter_token_latency_seconds_bucket{le="soon"} 9.0\n'
            'vllm:inter_token_latency_seconds_bucket{engine="0"} 9.0\n'
            'vllm:inter_token_latency_seconds_bucket{le="0.5"} 1.0\n'
            'vllm:inter_token_latency_seconds_bucket{le="+Inf"} 2.0\n'
            'vllm:inter_token_latency_seconds_count 2.0\n')
    h = parse_metrics(text).histograms["inter_token_latency"]
    assert h.buckets == [(0.5, 1.0), (float("inf"), 2.0)] and h.count == 2.0


def test_a_rate_over_less_than_a_second():
    a = MetricsSnapshot(taken_at=10.0, counters={"generation_tokens_total": 10.0})
    b = MetricsSnapshot(taken_at=10.5, counters={"generation_tokens_total": 20.0})
    assert generation_rate(a, b) == 20.0
