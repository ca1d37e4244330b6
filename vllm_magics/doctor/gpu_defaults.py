"""Settings vLLM needs today on the GPU it got (a T4 above all), each with its reason; the user's own
flag always wins. Facts and sources: vllm_magics/doctor/versions.py."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from vllm_magics.doctor import versions
from vllm_magics.server.gpu import GpuInfo

VLLM_DEFAULT_GPU_MEMORY_UTILIZATION = 0.9  # vllm/config/cache.py
# Room for vLLM's own CUDA context, made before it compares free memory with utilization x total (vllm#20305).
CUDA_CONTEXT_MARGIN_MIB = 600


@dataclass
class GpuSettings:
    argv: list[str] = field(default_factory=list)  # to add
    extra: list[str] = field(default_factory=list)  # the user's vLLM flags, less what cannot work here
    defaults: list[tuple[str, str]] = field(default_factory=list)  # (setting, reason)
    notes: list[str] = field(default_factory=list)


def memory_utilization_that_fits(gpu: GpuInfo) -> float | None:
    """The --gpu-memory-utilization that the free memory holds, less the CUDA context; None if unknown."""
    if not gpu.memory_total_mib or gpu.memory_free_mib is None:
        return None
    return math.floor((gpu.memory_free_mib - CUDA_CONTEXT_MARGIN_MIB) / gpu.memory_total_mib * 100) / 100


def _flag_value(extra: list[str], flag: str) -> tuple[int, int, str] | None:
    """(start, end, value) of `flag V` / `flag=V` in extra."""
    for i, a in enumerate(extra):
        if a == flag and i + 1 < len(extra):
            return i, i + 2, extra[i + 1]
        if a.startswith(flag + "="):
            return i, i + 1, a.split("=", 1)[1]
    return None


def gpu_settings(gpu: GpuInfo, vllm_version: str | None, extra: list[str], given, environ,
                 gpu_memory_utilization: float | None) -> GpuSettings:
    out = GpuSettings(extra=list(extra))
    cc = gpu.compute_capability
    v = versions.version_tuple(vllm_version)
    shown_version = f"vLLM {vllm_version}"
    old_gpu = cc is not None and cc < (8, 0)

    kv = _flag_value(out.extra, "--kv-cache-dtype")
    if old_gpu and kv and kv[2].lower().startswith("fp8"):
        del out.extra[kv[0]:kv[1]]
        out.defaults.append(("--kv-cache-dtype auto", f"you asked for {kv[2]}: there is no FP8 KV cache below "
                             f"compute capability 8.0 and {gpu.name} has {cc[0]}.{cc[1]} (vllm#47549)"))

    if not given("--attention-backend"):
        env_backend = environ.get("VLLM_ATTENTION_BACKEND")
        if env_backend and v and v[:2] >= versions.ATTENTION_ENV_IGNORED_FROM:
            out.argv += ["--attention-backend", env_backend]
            out.defaults.append((f"--attention-backend {env_backend}", f"from your VLLM_ATTENTION_BACKEND, which "
                                 f"{shown_version} ignores (from 0.26 only the flag works: vllm#50292)"))
        elif not env_backend and old_gpu and v is not None and v[:2] <= versions.FLASHINFER_PICKED_ON_SM75_UNTIL:
            out.argv += ["--attention-backend", "TRITON_ATTN"]
            out.defaults.append(("--attention-backend TRITON_ATTN", f"{shown_version} picks FlashInfer on compute "
                                 f"capability {cc[0]}.{cc[1]}, whose prefill fails there for head size 128 in "
                                 "float16 (flashinfer-ai/flashinfer#3620); from vLLM 0.24 Triton is picked by itself"))

    fits = memory_utilization_that_fits(gpu)
    used = gpu.memory_used_mib or 0
    if fits is not None and used > 0:
        asked = gpu_memory_utilization
        if asked is None and not given("--gpu-memory-utilization"):
            if fits < VLLM_DEFAULT_GPU_MEMORY_UTILIZATION and fits >= 0.1:
                out.argv += ["--gpu-memory-utilization", f"{fits:.2f}"]
                out.defaults.append((f"--gpu-memory-utilization {fits:.2f}", f"the GPU already holds "
                                     f"{used / 1024:.1f} GiB (tensors in this notebook or another process): vLLM "
                                     f"refuses to start when free memory is below {VLLM_DEFAULT_GPU_MEMORY_UTILIZATION}"
                                     f" x {gpu.memory_total_mib / 1024:.1f} GiB (vllm#20305); {fits:.2f} is what "
                                     f"is free, less {CUDA_CONTEXT_MARGIN_MIB} MiB for vLLM's CUDA context"))
            elif fits < 0.1:
                out.notes.append(f"the GPU is nearly full ({gpu.memory_free_mib} MiB free of "
                                 f"{gpu.memory_total_mib}): free it (del tensors; torch.cuda.empty_cache()) or "
                                 "restart the runtime before starting vLLM")
        elif asked is not None and asked > fits:
            out.notes.append(f"--gpu-memory-utilization {asked} asks {asked * gpu.memory_total_mib / 1024:.1f} GiB "
                             f"but {gpu.memory_free_mib / 1024:.1f} GiB is free: vLLM will refuse to start; "
                             f"{fits:.2f} fits")
    return out
