"""Which vLLM runs where: the one table of facts %vllm_install, %vllm_doctor and the GPU defaults read.

Each fact names its source (gathered 2026-11, /work/shared/COLAB-FACTS.md; the torch pins and Python ranges
are the `Requires-Dist` / `Requires-Python` of the PyPI wheels, recorded in tests/fixtures/colab/vllm_reports/
with `pip install --dry-run --no-deps --report OUT vllm==X`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Release:
    version: str
    torch: str  # the `torch==` pin of the PyPI wheel
    python: tuple[tuple[int, int], tuple[int, int]]  # Requires-Python as [low, high)
    pypi_cuda: str  # CUDA of the PyPI wheel: "13.0" from 0.20 (unslothai/notebooks#327, vllm#42338)


# Recorded pins (tests/fixtures/colab/vllm_reports/*.json). Newest first.
RELEASES = (
    Release("0.33.0", "2.14.0", ((3, 11), (3, 15)), "13.0"),
    Release("0.29.0", "2.13.0", ((3, 10), (3, 15)), "13.0"),
    Release("0.27.0", "2.13.0", ((3, 10), (3, 15)), "13.0"),
    Release("0.26.0", "2.11.0", ((3, 10), (3, 15)), "13.0"),
    Release("0.25.0", "2.11.0", ((3, 10), (3, 15)), "13.0"),
    Release("0.24.0", "2.11.0", ((3, 10), (3, 15)), "13.0"),
    Release("0.23.0", "2.11.0", ((3, 10), (3, 15)), "13.0"),
    Release("0.22.0", "2.11.0", ((3, 10), (3, 15)), "13.0"),
    Release("0.20.0", "2.11.0", ((3, 10), (3, 15)), "13.0"),
    Release("0.18.1", "2.10.0", ((3, 10), (3, 14)), "12.9"),
    Release("0.15.1", "2.9.1", ((3, 10), (3, 14)), "12.9"),
)

# vLLM publishes each release also for CUDA 12.9 on its own index, reported to run next to a CUDA 12.8
# torch (vllm#44335 comment, Open-Athena/MarinFold#115). The wheel's version carries the local label +cu129.
CU129_INDEX = "https://wheels.vllm.ai/{version}/cu129"
# The oldest driver each CUDA major runs on (NVIDIA's CUDA compatibility table: 12.x needs >= 525.60.13,
# 13.x needs >= 580.65.06; with minor-version compatibility any 12.x runtime runs on a 12.0 driver).
MIN_DRIVER = {"12": (525, 60), "13": (580, 65)}
# Crash on a T4 in CUTLASS DSL: `-arch=compute_ is an unsupported option` (microsoft/fara#57).
BROKEN_ON_SM75 = ((0, 15), (0, 17))  # [0.15, 0.17)
# FlashInfer is accepted on sm75 and picked first up to 0.23; its paged prefill fails on a T4 for head_dim
# 128 in fp16 (flashinfer-ai/flashinfer#3620). From 0.24 FlashInfer needs sm80 and a T4 gets TRITON_ATTN
# by itself (vllm#45375, #47949).
FLASHINFER_PICKED_ON_SM75_UNTIL = (0, 23)
# `--attention-backend` exists since vLLM 0.12 (vllm#26315); VLLM_ATTENTION_BACKEND is ignored from 0.26
# (vllm#30564, #50292).
ATTENTION_ENV_IGNORED_FROM = (0, 26)
# No FP8 KV cache below compute capability 8.0 (vllm#47549).
FP8_KV_CACHE_MIN_CC = (8, 0)
# Turing (7.5) is still built for; 7.0 (V100) is dropped (vllm#39878).
MIN_COMPUTE_CAPABILITY = (7, 5)


def version_tuple(version: str | None) -> tuple[int, ...] | None:
    """'0.26.0+cu129' -> (0, 26, 0); None for None or text that is no version."""
    m = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", version or "")
    return tuple(int(g) for g in m.groups() if g is not None) if m else None


def local_label(version: str | None) -> str:
    """'0.26.0+cu129' -> 'cu129'; '' without one."""
    return (version or "").partition("+")[2]


def release(version: str) -> Release | None:
    wanted = version_tuple(version)
    return next((r for r in RELEASES if version_tuple(r.version) == wanted), None)


def vllm_cuda(version: str | None) -> str | None:
    """The CUDA a vLLM build needs: its local label (+cu129 -> 12.9, +cpu -> 'cpu'), else the PyPI build's."""
    label = local_label(version)
    if label == "cpu":
        return "cpu"
    m = re.fullmatch(r"cu(\d+)(\d)", label)
    if m:
        return f"{m.group(1)}.{m.group(2)}"
    known = release(version) if version else None
    if known:
        return known.pypi_cuda
    v = version_tuple(version)
    return ("13.0" if v >= (0, 20) else "12.9") if v else None
