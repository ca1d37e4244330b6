"""The vLLM build that runs on this platform, preferably without replacing torch (%vllm_install).

Colab (torch 2.11.0+cu128, T4, driver 550): the newest release pinning torch==2.11.0 is 0.26.0; its PyPI
wheel is built for CUDA 13 (it would fail with libcudart.so.13 beside a CUDA 12 torch and needs driver >= 580),
so the CUDA 12.9 build from vLLM's own index is taken: torch stays, no restart.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from vllm_magics.doctor import versions
from vllm_magics.doctor.platform import Platform


@dataclass
class InstallPlan:
    action: str  # "install", "nothing" (what is installed fits) or "impossible"
    release: versions.Release | None = None
    requirement: str | None = None  # what pip installs, e.g. "vllm==0.26.0+cu129"
    index_urls: list[str] = field(default_factory=list)
    replaces: list[str] = field(default_factory=list)  # "torch 2.11.0+cu128 -> 2.13.0"
    restart: bool = False
    reasons: list[str] = field(default_factory=list)

    def pip_args(self) -> list[str]:
        args = ["install", self.requirement or "vllm"]
        for url in self.index_urls:
            args += ["--extra-index-url", url]
        return args

    def command(self) -> str:
        return " ".join(["pip"] + [f'"{a}"' if "==" in a else a for a in self.pip_args()])

    def text(self) -> str:
        if self.action == "impossible":
            head = "No vLLM build fits this machine."
        elif self.action == "nothing":
            head = "The installed vLLM fits this machine: nothing to install."
        else:
            head = f"vLLM {self.release.version} fits: {self.command()}"
        lines = [head] + [f"  - {r}" for r in self.reasons]
        if self.action == "install":
            lines.append("  - It replaces: " + ", ".join(self.replaces) if self.replaces else
                         "  - It replaces nothing of this runtime's (torch stays).")
            if self.restart:
                lines.append("  - The runtime must restart after the install (Colab: Runtime > Restart session): "
                             "this kernel has the old torch loaded.")
        return "\n".join(lines)


def _cuda_major(cuda: str | None) -> str | None:
    return cuda.split(".")[0] if cuda and cuda[0].isdigit() else None


def _driver(platform: Platform) -> tuple[int, ...] | None:
    gpu = platform.gpu
    return versions.version_tuple(gpu.driver_version) if gpu and gpu.driver_version else None


def decide(platform: Platform) -> InstallPlan:
    gpu = platform.gpu
    if gpu is None:
        return InstallPlan("impossible", reasons=[
            "nvidia-smi reports no NVIDIA GPU: vLLM's CUDA build cannot run here. On Colab choose "
            "Runtime > Change runtime type > T4 GPU, then run this again."])
    cc = gpu.compute_capability
    if cc is not None and cc < versions.MIN_COMPUTE_CAPABILITY:
        return InstallPlan("impossible", reasons=[
            f"{gpu.name} has compute capability {cc[0]}.{cc[1]}; vLLM is built for 7.5 and newer (vllm#39878)."])
    py = platform.python
    candidates = [r for r in versions.RELEASES if r.python[0] <= py < r.python[1]]
    if cc == (7, 5):
        low, high = versions.BROKEN_ON_SM75
        candidates = [r for r in candidates if not low <= versions.version_tuple(r.version)[:2] < high]
    if not candidates:
        return InstallPlan("impossible", reasons=[f"no vLLM release has wheels for Python {py[0]}.{py[1]}."])
    torch_base = (platform.torch or "").split("+")[0]
    fitting = [r for r in candidates if r.torch == torch_base]
    chosen = fitting[0] if fitting else candidates[0]
    plan = InstallPlan("install", chosen)
    torch_major = _cuda_major(platform.torch_cuda)
    driver = _driver(platform)
    cuda13_ok = driver is None or driver[:2] >= versions.MIN_DRIVER["13"]
    use_cu129 = _cuda_major(chosen.pypi_cuda) == "13" and (torch_major == "12" or not cuda13_ok)
    if use_cu129:
        plan.requirement = f"vllm=={chosen.version}+cu129"
        plan.index_urls = [versions.CU129_INDEX.format(version=chosen.version)]
        why = (f"torch {platform.torch} is built for CUDA {platform.torch_cuda}" if torch_major == "12" else
               f"driver {gpu.driver_version} is older than CUDA 13 needs (580.65)")
        plan.reasons.append(f"vLLM {chosen.version} on PyPI is built for CUDA 13 and {why}: the CUDA 12.9 build "
                            "from vLLM's own wheel index runs beside it (it would fail with libcudart.so.13).")
    else:
        plan.requirement = f"vllm=={chosen.version}"
    if fitting:
        plan.reasons.insert(0, f"vLLM {chosen.version} is the newest release that pins torch=={chosen.torch}, the "
                               f"torch installed here; Python {py[0]}.{py[1]} is supported.")
    else:
        plan.replaces.append(f"torch {platform.torch or '(none)'} -> {chosen.torch}")
        plan.restart = platform.torch is not None
        plan.reasons.insert(0, f"no vLLM release pins the installed torch {platform.torch or '(none)'}: "
                               f"vLLM {chosen.version} brings torch {chosen.torch} (gigabytes; on Colab it also "
                               "conflicts with the preinstalled packages built for Colab's torch).")
    if cc == (7, 5):
        plan.reasons.append("On this T4 (compute capability 7.5) vLLM 0.15-0.16 crash (microsoft/fara#57); from "
                            "0.24 vLLM picks the Triton attention backend itself.")
    installed = platform.vllm
    if installed and versions.version_tuple(installed) == versions.version_tuple(chosen.version) and \
            _cuda_major(versions.vllm_cuda(installed)) == _cuda_major("12.9" if use_cu129 else chosen.pypi_cuda):
        return InstallPlan("nothing", chosen, reasons=[f"vLLM {installed} is installed and fits torch "
                                                       f"{platform.torch} (CUDA {platform.torch_cuda})."])
    if installed:
        plan.replaces.insert(0, f"vllm {installed} -> {plan.requirement.split('==')[1]}")
    return plan
