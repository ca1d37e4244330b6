"""%vllm_doctor: what stands between this machine and a running vLLM, each in plain words with the next step.

Also what %vllm_serve shows when vLLM is missing or cannot start for a platform reason: `doctor_text()`.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

from vllm_magics.doctor import versions
from vllm_magics.doctor.gpu_defaults import VLLM_DEFAULT_GPU_MEMORY_UTILIZATION, memory_utilization_that_fits
from vllm_magics.doctor.platform import Platform, read_platform

# Model families whose Hugging Face repos ask you to accept a licence first (their model pages say so).
GATED_PREFIXES = ("meta-llama/", "google/gemma", "mistralai/Mistral-Large", "google/medgemma")
# Weights: about 2 bytes per parameter in 16-bit, plus tokenizer and config files.
GIB_PER_BILLION_PARAMS = 2.0 * 1.05


@dataclass(frozen=True)
class Finding:
    level: str  # "problem" (vLLM will not run), "warning" or "ok"
    message: str


def _cuda_major(cuda: str | None) -> str | None:
    return cuda.split(".")[0] if cuda and cuda[0].isdigit() else None


def weights_gib(model: str) -> float | None:
    """A guess from the name ('...-1.5B' -> 3.2 GiB); None when the name says no size."""
    m = re.search(r"(?<![\d.])(\d+(?:\.\d+)?)[Bb](?![a-zA-Z])", model.rsplit("/", 1)[-1])
    return float(m.group(1)) * GIB_PER_BILLION_PARAMS if m else None


def _vllm_findings(p: Platform) -> list[Finding]:
    out = []
    if p.torch_loaded and p.torch and p.torch_loaded != p.torch:
        out.append(Finding("problem", f"torch {p.torch_loaded} is loaded in this session but {p.torch} is now "
                           "installed (an install replaced it): restart the runtime (Colab: Runtime > Restart "
                           "session) before starting vLLM."))
    if not p.vllm:
        out.append(Finding("problem", "vLLM is not installed in this Python: %vllm_install installs the build "
                           "that fits this machine (%vllm_install --dry-run shows it first)."))
        return out
    vc, tc = versions.vllm_cuda(p.vllm), p.torch_cuda
    if vc == "cpu" and p.gpus:
        out.append(Finding("warning", f"vLLM {p.vllm} is the CPU build, and this machine has a GPU: "
                           "%vllm_install puts in the GPU build."))
    elif _cuda_major(vc) and _cuda_major(tc) and _cuda_major(vc) != _cuda_major(tc):
        out.append(Finding("problem", f"vLLM {p.vllm} is built for CUDA {vc} but torch {p.torch} for CUDA {tc}: "
                           f"vLLM will fail to load (libcudart.so.{_cuda_major(vc)}). %vllm_install puts in the "
                           f"build for CUDA {_cuda_major(tc)}."))
    known = versions.release(p.vllm)
    if known and p.torch and p.torch.split("+")[0] != known.torch:
        out.append(Finding("problem", f"vLLM {p.vllm} needs torch=={known.torch}, and torch {p.torch} is "
                           "installed: %vllm_install --dry-run shows the vLLM that fits this torch."))
    gpu = p.gpu
    v = versions.version_tuple(p.vllm)
    low, high = versions.BROKEN_ON_SM75
    if gpu and gpu.compute_capability == (7, 5) and v and low <= v[:2] < high:
        out.append(Finding("problem", f"vLLM {p.vllm} crashes on a T4 (compute capability 7.5) in CUTLASS DSL "
                           "(microsoft/fara#57): %vllm_install puts in a release that runs there."))
    driver = versions.version_tuple(gpu.driver_version) if gpu and gpu.driver_version else None
    need = versions.MIN_DRIVER.get(_cuda_major(vc) or "")
    if driver and need and driver[:2] < need:
        out.append(Finding("problem", f"vLLM {p.vllm} is built for CUDA {vc}, which needs NVIDIA driver "
                           f"{need[0]}.{need[1]} or newer; this machine has {gpu.driver_version}."))
    return out


def _machine_findings(p: Platform, model: str | None, gpu_memory_utilization: float | None) -> list[Finding]:
    out = []
    py = p.python
    if not any(r.python[0] <= py < r.python[1] for r in versions.RELEASES):
        out.append(Finding("problem", f"no vLLM release has wheels for Python {py[0]}.{py[1]}."))
    gpu = p.gpu
    if gpu is None and versions.vllm_cuda(p.vllm) != "cpu":
        out.append(Finding("problem", "nvidia-smi reports no NVIDIA GPU: vLLM's GPU build cannot run (on Colab: "
                           "Runtime > Change runtime type > T4 GPU)."))
    elif gpu is None:
        pass  # vLLM's CPU build, as on the test rig
    elif gpu.compute_capability and gpu.compute_capability < versions.MIN_COMPUTE_CAPABILITY:
        cc = gpu.compute_capability
        out.append(Finding("problem", f"{gpu.name} has compute capability {cc[0]}.{cc[1]}; vLLM is built for 7.5 "
                           "and newer (vllm#39878)."))
    elif gpu.memory_total_mib and gpu.memory_free_mib is not None:
        util = gpu_memory_utilization or VLLM_DEFAULT_GPU_MEMORY_UTILIZATION
        need = util * gpu.memory_total_mib
        if gpu.memory_free_mib < need:
            fits = memory_utilization_that_fits(gpu)
            out.append(Finding("problem", f"--gpu-memory-utilization {util} asks {need / 1024:.1f} GiB of the GPU "
                               f"and {gpu.memory_free_mib / 1024:.1f} GiB is free (something already holds "
                               f"{(gpu.memory_used_mib or 0) / 1024:.1f} GiB): vLLM will refuse to start "
                               f"(vllm#20305); use --gpu-memory-utilization {fits:.2f}, or free the memory."))
    if model and not os.path.exists(model):
        size = weights_gib(model)
        if size and p.disk_free_gib is not None and p.disk_free_gib < size:
            out.append(Finding("problem", f"{model} needs about {size:.1f} GiB of disk for its weights and "
                               f"{p.disk_free_gib:.1f} GiB is free where Hugging Face keeps them."))
        if model.startswith(GATED_PREFIXES) and not p.hf_token:
            out.append(Finding("problem", f"{model} is gated on Hugging Face and no HF_TOKEN is set: accept its "
                               "licence on the model's page, then set HF_TOKEN (Colab: the Secrets panel)."))
    return out


def check(p: Platform, model: str | None = None, gpu_memory_utilization: float | None = None) -> list[Finding]:
    found = _vllm_findings(p) + _machine_findings(p, model, gpu_memory_utilization)
    if not found:
        gpu = p.gpu
        found.append(Finding("ok", f"vLLM {p.vllm} with torch {p.torch} (CUDA {p.torch_cuda})"
                             + (f" on {gpu.describe()}" if gpu else "") + ": nothing stands in the way."))
    return found


def doctor_text(model: str | None = None, gpu_memory_utilization: float | None = None,
                platform: Platform | None = None) -> str:
    p = platform or read_platform()
    gpu = p.gpu
    head = (f"Python {p.python[0]}.{p.python[1]} · torch {p.torch or '(none)'}"
            f"{f' (CUDA {p.torch_cuda})' if p.torch_cuda else ''} · vLLM {p.vllm or '(none)'} · "
            + (f"{gpu.describe()}, driver {gpu.driver_version or '?'}" if gpu else "no GPU"))
    marks = {"problem": "✗", "warning": "!", "ok": "✓"}
    return "\n".join([head] + [f"{marks[f.level]} {f.message}" for f in
                               check(p, model, gpu_memory_utilization)])
