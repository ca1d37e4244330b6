"""%vllm_status: metrics parsing, the status dict, the card (no vLLM server needed here)."""
import re

import pytest

from helpers import FIXTURES
from vllm_magics.server import gpu
from vllm_magics.notebook.views.status_card import StatusCard, sparkline_svg, sparkline_text
from vllm_magics.status.metrics import Histogram, generation_rate, parse_metrics
from test_hostile import assert_outcome, hostile, hostile_server, run  # noqa: F401 (fixtures)

METRICS = FIXTURES / "metrics"
METRIC_KEYS = {"requests_running", "requests_waiting", "kv_cache_usage", "prompt_tokens_total",
               "generation_tokens_total", "generation_tokens_per_s", "preemptions_total", "requests_finished",
               "time_to_first_token", "e2e_latency", "inter_token_latency"}


def test_vllm_0_32_metrics():
    snap = parse_metrics((METRICS / "vllm-0.32.0-cpu-smollm2.txt").read_text(), taken_at=10.0)
    d = snap.as_dict()
    assert set(d) == METRIC_KEYS
    assert d["prompt_tokens_total"] == 182 and d["generation_tokens_total"] == 37
    assert d["requests_finished"]["stop"] == 4 and d["requests_finished"]["length"] == 1
    assert d["kv_cache_usage"] == 0.0 and d["requests_running"] == 0
    ttft = d["time_to_first_token"]
    assert ttft["count"] == 5 and 0.04 <= ttft["p50_s"] <= 0.06 and ttft["p50_s"] <= ttft["p90_s"] <= ttft["p99_s"]
    assert d["generation_tokens_per_s"] is None  # one sample only


def test_older_metric_names_are_read():
    snap = parse_metrics((METRICS / "vllm-v0-gpu-cache-usage.txt").read_text())
    assert snap.gauges == {"requests_running": 0.0, "requests_waiting": 0.0, "kv_cache_usage": 0.0}


def test_histogram_quantiles_interpolate_like_prometheus():
    h = Histogram([(0.1, 2.0), (0.5, 6.0), (1.0, 10.0), (float("inf"), 10.0)], count=10, total=4.0)
    assert h.quantile(0.5) == pytest.approx(0.1 + 0.4 * 3 / 4)
    assert h.quantile(0.1) == pytest.approx(0.05) and h.quantile(1.0) == pytest.approx(1.0)
    assert Histogram([], 0).quantile(0.5) is None and h.mean == 0.4


def test_generation_rate_needs_two_samples_and_survives_restarts():
    text = (METRICS / "vllm-0.32.0-cpu-smollm2.txt").read_text()
    a = parse_metrics(text, taken_at=100.0)
    b = parse_metrics(text.replace("vllm:generation_tokens_total{", "X{").replace(
        "# TYPE vllm:generation_tokens_total", "# TYPE X") + 'vllm:generation_tokens_total{engine="0"} 137.0\n',
        taken_at=102.0)
    assert generation_rate(a, b) == pytest.approx(50.0)
    assert generation_rate(b, a) is None and generation_rate(None, a) is None


def status_dict(gpus=()):
    snap = parse_metrics((METRICS / "vllm-0.32.0-cpu-smollm2.txt").read_text())
    from vllm_magics.status.collect import _gpu_dict

    return {"url": "http://127.0.0.1:8000", "api_key": "vm-…abcd", "collected_at": "now", "took_ms": 3.0,
            "process": {"state": "ready", "pid": 11, "pgid": 10, "exit_code": None, "uptime_s": 75.0,
                        "host": "127.0.0.1", "port": 8000, "model": "m", "log_path": "/x", "detach": False,
                        "adopted": False},
            "health": {"status": 200, "ok": True}, "version": "0.32.0",
            "models": [{"id": "m", "root": "m", "max_model_len": 8192}], "models_error": None,
            "gpus": [_gpu_dict(g) for g in gpus], "metrics": snap.as_dict(), "metrics_error": None, "tunnel": None,
            "log_tail": ["INFO <b>line</b>"], "diagnoses": []}


@pytest.mark.parametrize("folder, expected", [
    ("h100-80gb", "GPU 0          NVIDIA H100 80GB HBM3: 0 / 81559 MiB, 0% busy"),
    ("t4-15gb", "GPU 0          Tesla T4: 0 / 15360 MiB, 0% busy"),
])
def test_gpu_section_from_nvidia_smi_recordings(folder, expected):
    gpus = gpu.parse_query_csv((FIXTURES / "nvidia-smi" / folder / "query-csv.txt").read_text())
    card = StatusCard(status_dict(gpus))
    assert expected in card.text()
    assert card.status["gpus"][0]["compute_capability"] in ("9.0", "7.5")


def test_card_views_escape_and_plot():
    card = StatusCard(status_dict(), history=[(0, 10.0, 0.1), (1, 30.0, 0.5), (2, None, 0.2)])
    html = card.html()
    assert "vLLM server: ready" in html and "&lt;b&gt;line" in html and "<b>line" not in html
    assert html.count("<svg") == 2 and "182 in, 37 out" in html
    assert "ready, pid 11, up 75.0 s" in card.text() and "tokens/s" in card.text()
    assert sparkline_text([0, 5, 10]) == "▁▄█" and sparkline_svg([1]) == ""


def test_dead_server_card():
    s = status_dict()
    s["process"].update(state="exited", exit_code=0)
    s["health"] = {"status": None, "ok": False}
    s["metrics"] = None
    s["diagnoses"] = [{"key": "engine_died", "summary": "vLLM's engine process stopped", "fix": "read the log"}]
    text = StatusCard(s).text()
    assert text.startswith("vLLM server: exited (code 0)") and "Why: vLLM's engine process stopped" in text


def documented_keys() -> tuple[set, set, dict]:
    """(top-level keys, figures of `metrics`, {key: fields of its nested dicts}) as status/collect.py's
    docstring writes them: `key`: for a top-level key, `figure` without a colon inside `metrics`."""
    import vllm_magics.status.collect as status_module

    doc = status_module.__doc__
    top = set(re.findall(r"`(\w+)`:", doc))
    metrics_part = re.search(r"^- `metrics`:(.*?)^- ", doc, re.M | re.S).group(1)
    figures = set(re.findall(r"`(\w+)`(?!:)", metrics_part))
    nested = {k: set(re.search(rf"`{k}`: [^{{]*\{{([\w,\s]+)\}}", doc).group(1).replace(",", " ").split())
              for k in ("process", "health", "models", "gpus", "diagnoses")}
    return top, figures, nested


def assert_documented(status: dict, managed: bool):
    """The real dict's keys are exactly the documented ones (and the nested dicts' too)."""
    top, figures, nested = documented_keys()
    assert set(status) == top
    if status["metrics"] is not None:
        assert set(status["metrics"]) == figures
    assert set(status["health"]) == nested["health"]
    assert set(status["process"]) == (nested["process"] if managed else {"state"})
    for m in status["models"]:
        assert set(m) == nested["models"]


def test_documented_keys_are_read_from_the_docstring():
    top, figures, nested = documented_keys()
    assert {"url", "took_ms", "models_error", "metrics_error", "diagnoses"} <= top and len(top) == 15
    assert figures == METRIC_KEYS and "requests_running" not in top
    assert nested["health"] == {"status", "ok"} and "adopted" in nested["process"]


def test_real_json_keys_are_the_documented_ones(hostile, shell):  # noqa: F811 (fixtures from test_hostile)
    """%vllm_status --json of an external server (the stand-in answers as vLLM 0.32.0 does); the
    session server's (managed) is checked in test_status_real.py."""
    status = shell.run_line_magic("vllm_status", f"--json --url http://127.0.0.1:{hostile}/m/ok/v1")
    assert status["process"] == {"state": "external"} and status["metrics"] is not None
    assert_documented(status, managed=False)
    assert set(status_dict()) == documented_keys()[0]  # the card tests' dict is a real one's shape


def test_an_unreachable_external_url_is_one_line(run):  # noqa: F811
    from helpers import free_port

    port = free_port()
    error, printed = run(f"%vllm_status --url http://127.0.0.1:{port}/v1")
    assert_outcome(error, printed, f"nothing answers at http://127.0.0.1:{port}: check the URL")
    assert str(error).startswith("nothing answers")
    error, printed = run("%vllm_status")
    assert_outcome(error, printed, "no server: start one with %vllm_serve")


def test_card_of_a_server_missing_figures():
    """Another server's /metrics may lack vLLM's gauges (None) or send NaN: the card shows what it has."""
    s = status_dict()
    s["metrics"].update(requests_running=None, requests_waiting=None, kv_cache_usage=None)
    s["models"] = [{"id": "m", "root": None, "max_model_len": None}]
    card = StatusCard(s, history=[(0, float("nan"), None), (1, 5.0, float("inf")), (2, 7.0, 0.5)])
    assert "– running, – waiting" in card.text() and "model          m\n" in card.text()
    assert "KV cache" in card.html() and sparkline_text([float("nan"), 1.0]) == " █"
    s["metrics"], s["metrics_error"] = None, "no vLLM figures"
    assert "/metrics: no vLLM figures" in StatusCard(s).text()
