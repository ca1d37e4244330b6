"""GPU memory shares for several servers on one GPU (server/sharing.py), over the nvidia-smi fixtures:
the T4 figures (Colab's free GPU, published figures) and the recorded H100.

vLLM's start-up check, which every chosen share must pass: free memory ≥ share × total
(vllm/v1/worker/utils.py in 0.32; vllm#20305; tests/fixtures/vllm_logs/gpu_memory_in_use.log)."""
from __future__ import annotations

import dataclasses

import pytest

from helpers import FIXTURES
from vllm_magics.server.gpu import parse_query_csv
from vllm_magics.server.sharing import CONTEXT_MIB, MIN_SHARE, RunningShare, next_share, share_in_argv

T4 = parse_query_csv((FIXTURES / "nvidia-smi" / "t4-15gb" / "query-csv.txt").read_text())[0]
H100 = parse_query_csv((FIXTURES / "nvidia-smi" / "h100-80gb" / "query-csv.txt").read_text())[0]


def vllm_would_start(gpu, share: float, free_mib: float) -> bool:
    """vLLM's check, after the new process made its CUDA context (CONTEXT_MIB, a guess)."""
    return free_mib - CONTEXT_MIB >= share * gpu.memory_total_mib


def start_servers(gpu, n: int) -> list[RunningShare]:
    """Start n servers one after the other, as the shares say, on a GPU whose free memory drops by
    each server's share and context; every one must pass vLLM's check."""
    running, free = [], gpu.memory_free_mib
    for i in range(n):
        chosen = next_share(dataclasses.replace(gpu, memory_free_mib=free,
                                                memory_used_mib=gpu.memory_free_mib - free), running, expected=n)
        assert chosen.fits and chosen.chosen, chosen.reason
        assert vllm_would_start(gpu, chosen.share, free), (i, chosen)
        running.append(RunningShare(f"s{i}", chosen.share))
        free -= chosen.share * gpu.memory_total_mib + CONTEXT_MIB
    return running


def test_one_server_keeps_vllms_default():
    chosen = next_share(T4, [])
    assert chosen.share is None and chosen.setting == "" and chosen.fits
    assert "vLLM's default share (0.92" in chosen.reason


@pytest.mark.parametrize("gpu, n", [(T4, 2), (T4, 3), (H100, 2), (H100, 4)])
def test_servers_planned_together_all_fit_and_use_most_of_the_gpu(gpu, n):
    running = start_servers(gpu, n)
    shares = [r.share for r in running]
    assert max(shares) - min(shares) <= 0.02  # an even split
    used = sum(shares) * gpu.memory_total_mib + n * CONTEXT_MIB
    assert gpu.memory_free_mib - used < n * 0.01 * gpu.memory_total_mib + 1  # nothing but rounding left over


def test_two_1_5b_models_on_a_t4_get_about_half_each():
    first = next_share(T4, [], expected=2)
    assert first.share == 0.45 and first.setting == "--gpu-memory-utilization 0.45"
    assert "6.8 GiB of the Tesla T4's 15.0 GiB, so 2 servers fit" in first.reason
    assert "Override with --gpu-memory-utilization" in first.reason
    # The second, while the first is still loading (nvidia-smi shows it has taken only 1 GiB so far):
    # the first's share counts, not what is free right now.
    loading = dataclasses.replace(T4, memory_free_mib=T4.memory_free_mib - 1024, memory_used_mib=1024)
    second = next_share(loading, [RunningShare("r1", 0.45)])
    assert second.fits and vllm_would_start(T4, second.share, T4.memory_free_mib - 0.45 * 15360 - CONTEXT_MIB)
    assert "beside r1" in second.reason and "shares (r1: 0.45) leave" in second.reason


def test_memory_held_by_the_notebook_counts():
    # The notebook holds 6 GiB of tensors: nvidia-smi's free figure is below what the shares leave.
    busy = dataclasses.replace(T4, memory_free_mib=T4.memory_free_mib - 6144, memory_used_mib=6144)
    chosen = next_share(busy, [], expected=2)
    assert chosen.fits and "8.7 GiB is free now" in chosen.reason
    assert vllm_would_start(T4, chosen.share, busy.memory_free_mib / 2)


def test_beside_a_server_with_vllms_default_share_nothing_fits():
    chosen = next_share(T4, [RunningShare("qwen", None)])
    assert not chosen.fits and chosen.share is None
    assert "qwen: 0.92 (vLLM's default)" in chosen.reason
    assert "restart qwen with --gpu-memory-utilization 0.45" in chosen.reason
    restarted = next_share(T4, [RunningShare("qwen", 0.45)])  # as advised: then both get as much
    assert restarted.fits and restarted.share >= 0.45


def test_the_users_share_wins_and_is_checked():
    ok = next_share(T4, [RunningShare("a", 0.45)], requested=0.3)
    assert (ok.share, ok.fits, ok.chosen) == (0.3, True, False)
    too_big = next_share(T4, [RunningShare("a", 0.45)], requested=0.6)
    assert (too_big.share, too_big.fits, too_big.chosen) == (0.6, False, False)
    assert "vLLM would refuse to start" in too_big.reason
    assert "ask for at most --gpu-memory-utilization 0.46" in too_big.reason
    assert not vllm_would_start(T4, 0.6, T4.memory_free_mib - 0.45 * 15360 - CONTEXT_MIB)
    assert vllm_would_start(T4, 0.46, T4.memory_free_mib - 0.45 * 15360 - CONTEXT_MIB)


def test_too_many_servers_for_the_gpu():
    chosen = next_share(T4, [], expected=1 + int(1 / MIN_SHARE))
    assert not chosen.fits and "too little for another server" in chosen.reason


def test_no_gpu_figures():
    assert next_share(None, []).share is None
    unknown = dataclasses.replace(T4, memory_total_mib=None)
    assert next_share(unknown, [RunningShare("a", 0.5)]).share is None
    assert next_share(None, [], requested=0.4).share == 0.4


@pytest.mark.parametrize("argv, share", [
    (["vllm", "serve", "m", "--gpu-memory-utilization", "0.45"], 0.45),
    (["vllm", "serve", "m", "--gpu_memory_utilization=0.3"], 0.3),
    (["vllm", "serve", "m"], None),
    (["vllm", "serve", "m", "--gpu-memory-utilization", "lots"], None),
    (["vllm", "serve", "m", "--gpu-memory-utilization", "1.5"], None),
    (["vllm", "serve", "m", "--gpu-memory-utilization"], None),
])
def test_share_in_a_servers_command_line(argv, share):
    assert share_in_argv(argv) == share
