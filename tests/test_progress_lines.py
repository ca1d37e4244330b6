"""StartupProgress line by line: progress bars redrawn with carriage returns, percent within a phase,
what feed() returns, and the shortened detail line. The lines are shaped like vLLM's and tqdm's output
(tests/fixtures/startup holds a whole real log)."""
from __future__ import annotations

from vllm_magics.server.progress import StartupProgress

PREFIX = "(EngineCore pid=1) INFO 11-27 10:40:15 [default_loader.py:501] "


def test_a_redrawn_bar_counts_its_last_frame():
    # tqdm redraws a bar with "\r" in one line of output; only the last frame is current
    p = StartupProgress()
    assert p.feed("Downloading: 10%|#  |\rDownloading: 50%|##  |\rDownloading: 90%|###|") is True
    assert (p.phase, p.percent, p.detail) == ("download", 90, "Downloading: 90%|###|")


def test_percent_moves_within_a_phase_and_resets_on_the_next():
    p = StartupProgress()
    p.feed("model-00001-of-00002.safetensors:  10%|#         | 0.4G/4G")
    assert p.feed("model-00001-of-00002.safetensors:  60%|######    | 2.4G/4G") is True
    assert (p.phase, p.percent) == ("download", 60)
    assert p.history == ["download"]  # the same phase is not entered twice
    p.feed(PREFIX + "Loading safetensors checkpoint shards: 50% Completed | 1/2")
    assert (p.phase, p.percent) == ("load", 50)
    p.feed(PREFIX + "Loading weights took 0.08 seconds")
    assert p.percent == 50  # a later line of the same phase without a bar keeps the figure
    p.feed(PREFIX + "Available KV cache memory: 4.0 GiB 75%")
    assert p.phase == "kv_cache" and p.percent is None  # a new phase starts without a percent
    assert p.history == ["download", "load", "kv_cache"]


def test_only_download_and_load_lines_give_a_percent():
    p = StartupProgress()
    p.feed(PREFIX + "Maximum concurrency for 8192 tokens per request: 12.5%")
    assert p.phase == "kv_cache" and p.percent is None


def test_feed_says_when_the_detail_changed_even_in_the_same_phase():
    p = StartupProgress()
    assert p.feed(PREFIX + "Starting to load model /models/m...") is True
    assert p.feed(PREFIX + "Initializing a V1 LLM engine (v0.32.0) with config: ...") is True
    assert p.phase == "engine" and p.detail.startswith("Initializing a V1 LLM engine")


def test_the_detail_is_cut_to_160_characters():
    p = StartupProgress()
    exact = "Downloading " + "x" * 148  # 160 characters
    p.feed(PREFIX + exact)
    assert p.detail == exact
    longer = exact + "y"
    p.feed(PREFIX + longer)
    assert p.detail == exact[:159] + "…" and len(p.detail) == 160
