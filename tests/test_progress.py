from helpers import FIXTURES
from vllm_magics.server.progress import PHASE_KEYS, StartupProgress


def test_real_startup_log_goes_through_the_phases_in_order():
    progress = StartupProgress()
    for line in (FIXTURES / "startup/vllm-0.32.0-cpu-smollm2.log").read_text().splitlines():
        progress.feed(line)
    assert progress.history == ["launching", "config", "engine", "load", "kv_cache", "http", "ready"]
    assert progress.phase == "ready" and progress.fraction == 1.0


def test_phases_never_go_back_and_bars_give_percent():
    p = StartupProgress()
    assert p.fraction == 0 and "Waiting" in p.label
    p.feed("(EngineCore pid=1) INFO 11-27 10:40:15 [default_loader.py:501] Loading weights took 0.08 seconds")
    assert p.phase == "load"
    p.feed("(APIServer pid=1) INFO 11-27 10:40:07 [model.py:733] Resolved architecture: LlamaForCausalLM")
    assert p.phase == "load"  # an earlier phase's line does not move it back
    assert p.detail.startswith("Loading weights took")  # vLLM's prefix is dropped
    q = StartupProgress()
    q.feed("model-00001-of-00002.safetensors:  42%|████▏     | 1.66G/3.97G [00:10<00:14, 160MB/s]")
    assert q.phase == "download" and q.percent == 42
    assert PHASE_KEYS.index("download") < PHASE_KEYS.index("load") < PHASE_KEYS.index("ready")


def test_blank_and_unknown_lines_change_nothing():
    p = StartupProgress()
    assert not p.feed("") and not p.feed("some unrelated warning") and p.phase is None
