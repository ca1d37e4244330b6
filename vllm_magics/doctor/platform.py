"""What this machine offers vLLM, read without importing torch or vllm (seconds each, and torch would
initialise CUDA in the notebook): package metadata, torch/version.py as text, nvidia-smi, the disk."""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from vllm_magics.server.gpu import GpuInfo


@dataclass
class Platform:
    python: tuple[int, int]
    gpus: list[GpuInfo] = field(default_factory=list)
    torch: str | None = None  # installed version, e.g. "2.11.0+cu128"
    torch_cuda: str | None = None  # torch.version.cuda, e.g. "12.8"; None for a CPU build
    torch_loaded: str | None = None  # the version this Python imported, if it did
    vllm: str | None = None  # installed version, e.g. "0.26.0+cu129"
    disk_free_gib: float | None = None  # where Hugging Face keeps the weights
    hf_token: bool = False

    @property
    def gpu(self) -> GpuInfo | None:
        return self.gpus[0] if self.gpus else None


def installed_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


_CUDA_LINE = re.compile(r"^cuda\s*(?::[^=\n]*)?=\s*['\"]([^'\"]+)['\"]", re.M)


def torch_cuda_from_version_py(text: str) -> str | None:
    """`cuda: Optional[str] = '12.8'` (torch/version.py) -> '12.8'; None for `cuda = None` (CPU build)."""
    m = _CUDA_LINE.search(text)
    return m.group(1) if m else None


def torch_cuda() -> str | None:
    spec = importlib.util.find_spec("torch")  # finds the folder; does not import torch
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "version.py"
    try:
        return torch_cuda_from_version_py(path.read_text(errors="replace")[:20000])
    except OSError:
        return None


def hf_cache_dir(environ=os.environ) -> str:
    if environ.get("HF_HUB_CACHE"):
        return environ["HF_HUB_CACHE"]
    home = environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
    return os.path.join(home, "hub")


def has_hf_token(environ=os.environ) -> bool:
    if environ.get("HF_TOKEN") or environ.get("HUGGING_FACE_HUB_TOKEN"):
        return True
    home = environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
    return os.path.isfile(os.path.join(home, "token"))


def free_disk_gib(path: str) -> float | None:
    while path and not os.path.exists(path):
        path = os.path.dirname(path)
    try:
        return shutil.disk_usage(path or "/").free / 2**30
    except OSError:
        return None


def read_platform(nvidia_smi: str = "nvidia-smi", environ=os.environ) -> Platform:
    from vllm_magics.server.gpu import query_gpus

    loaded = sys.modules.get("torch")
    return Platform(
        python=sys.version_info[:2],
        gpus=query_gpus(nvidia_smi),
        torch=installed_version("torch"),
        torch_cuda=torch_cuda(),
        torch_loaded=getattr(loaded, "__version__", None) if loaded is not None else None,
        vllm=installed_version("vllm"),
        disk_free_gib=free_disk_gib(hf_cache_dir(environ)),
        hf_token=has_hf_token(environ),
    )


def platform_from_freeze(freeze_text: str, gpus: list[GpuInfo], python: tuple[int, int]) -> Platform:
    """A Platform from a `pip freeze` (Colab's published one: tests, and %vllm_install --dry-run's
    explanations). torch's CUDA comes from its local label (+cu128 -> 12.8)."""
    pins = dict(line.split("==", 1) for line in freeze_text.splitlines() if "==" in line and " @ " not in line)
    pins = {k.lower(): v.strip() for k, v in pins.items()}
    torch = pins.get("torch")
    m = re.search(r"\+cu(\d+)(\d)$", torch or "")
    return Platform(python=python, gpus=gpus, torch=torch, torch_cuda=f"{m.group(1)}.{m.group(2)}" if m else None,
                    vllm=pins.get("vllm"))
