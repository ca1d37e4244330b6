"""How much of one GPU the next server may take when several servers share it (`--gpu-memory-utilization`).

vLLM's rules, as of 0.32 (vllm/config/cache.py, vllm/v1/worker/utils.py):
- the share is per instance: a server uses up to `share × total` for weights, activations and KV cache,
  whatever other servers on the GPU hold ("two instances ... 0.5 for each");
- at start it checks `free >= share × total` and refuses to start otherwise ("Free memory on device
  (31.44/47.38 GiB) on startup is less than desired GPU memory utilization", vllm#20305);
- the default share is 0.92 (0.9 before 0.20): a second server beside a default one cannot start.

So the next server's share is what is free, split among the servers still to come, less a margin for
the CUDA context each process makes outside its share. "What is free" is the smaller of what
nvidia-smi says now (it sees the notebook's own tensors and other programs) and what the running
servers' shares leave (a server still loading has not taken its share yet, but will).

Pure functions: the numbers come in (GpuInfo, the running servers' shares), a Share with its reason
comes out. The user's own `--gpu-memory-utilization` always wins; it is only checked.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Sequence

from vllm_magics.server.gpu import GpuInfo

VLLM_DEFAULT_SHARE = 0.92  # vllm/config/cache.py, gpu_memory_utilization's default in 0.32
# A CUDA context with torch's kernels loaded sits outside the share: a few hundred MiB (guess, from
# nvidia-smi readings of idle torch processes; the exact size depends on the driver and the GPU).
CONTEXT_MIB = 512
# Below this a server has no room for a KV cache worth having (a 0.5B model's weights alone are 1 GiB
# at fp16, about 0.07 of a T4).
MIN_SHARE = 0.10
_FLAG = re.compile(r"^--gpu[-_]memory[-_]utilization(?:=(.*))?$")


@dataclass(frozen=True)
class RunningShare:
    """A server already on the GPU: its name and the share it was started with (None: vLLM's default)."""

    name: str
    share: float | None

    @property
    def effective(self) -> float:
        return VLLM_DEFAULT_SHARE if self.share is None else self.share


@dataclass(frozen=True)
class Share:
    """The share for the next server. `share` None: pass no flag (vLLM's default is right, or nothing
    fits). `fits` False: vLLM would refuse to start; `reason` says why and what to do."""

    share: float | None
    reason: str
    fits: bool = True
    chosen: bool = True  # False when the user gave the share themselves

    @property
    def setting(self) -> str:
        return f"--gpu-memory-utilization {self.share:.2f}" if self.share is not None else ""


def share_in_argv(argv: Sequence[str]) -> float | None:
    """The --gpu-memory-utilization a server's command line gives (None: not given, or not a number)."""
    for i, arg in enumerate(argv):
        m = _FLAG.match(arg)
        if m:
            value = m.group(1) if m.group(1) is not None else (argv[i + 1] if i + 1 < len(argv) else "")
            try:
                share = float(value)
            except ValueError:
                return None
            return share if 0 < share <= 1 else None
    return None


def _gib(mib: float) -> str:
    return f"{mib / 1024:.1f} GiB"


def _names(running: Sequence[RunningShare]) -> str:
    return ", ".join(f"{r.name}: {r.effective:.2f}" + (" (vLLM's default)" if r.share is None else "")
                     for r in running)


def _usable_mib(gpu: GpuInfo, running: Sequence[RunningShare]) -> tuple[float, str]:
    """Memory a new server can count on, and the figure it came from (for the reason)."""
    total, free, used = gpu.memory_total_mib, gpu.memory_free_mib, gpu.memory_used_mib
    # What the driver keeps back is neither used nor free (a T4: 15360 MiB in all, 15095 free when idle).
    reserved = total - used - free if used is not None and free is not None else 0
    by_shares = total - max(reserved, 0) - sum(r.effective * total + CONTEXT_MIB for r in running)
    if free is None or by_shares < free:
        return by_shares, (f"the running servers' shares ({_names(running)}) leave {_gib(max(by_shares, 0))}"
                           if running else f"{_gib(total)} in all")
    return free, f"{_gib(free)} is free now"


def next_share(gpu: GpuInfo | None, running: Sequence[RunningShare] = (), *, requested: float | None = None,
               expected: int | None = None) -> Share:
    """The --gpu-memory-utilization for the next server on `gpu`, beside `running`.

    `expected`: how many servers will share the GPU in all, this one included (default: the running
    ones and this one); the free memory is split evenly among the ones still to start. `requested`:
    the user's own share, kept as it is and only checked.
    """
    expected = max(expected or 0, len(running) + 1)
    if gpu is None or not gpu.memory_total_mib:
        if requested is not None:
            return Share(requested, "your --gpu-memory-utilization (no GPU memory figures to check it "
                         "against)", chosen=False)
        return Share(None, "no GPU memory figures (no GPU, or nvidia-smi did not report them): vLLM's "
                     "default share applies")
    total = gpu.memory_total_mib
    usable, source = _usable_mib(gpu, running)
    rule = "vLLM starts only if free memory ≥ share × total"
    if requested is not None:
        room = (usable - CONTEXT_MIB) / total
        if requested <= room:
            return Share(requested, f"your --gpu-memory-utilization: {_gib(requested * total)} of the "
                         f"{gpu.name}'s {_gib(total)}; {source}", chosen=False)
        return Share(requested, f"your --gpu-memory-utilization {requested:g} asks for "
                     f"{_gib(requested * total)}, but {source}, less {CONTEXT_MIB} MiB for its CUDA context "
                     f"({rule}): vLLM would refuse to start. " + _advice(room, requested, running),
                     fits=False, chosen=False)
    if expected == 1 and not running:
        return Share(None, f"one server on the {gpu.name}: vLLM's default share "
                     f"({VLLM_DEFAULT_SHARE:g} of {_gib(total)})")
    to_start = expected - len(running)
    share = math.floor((usable - to_start * CONTEXT_MIB) / to_start / total * 100) / 100
    if share < MIN_SHARE:
        room = (usable - CONTEXT_MIB) / total  # below 0 when even the context does not fit
        want = (max((r.effective for r in running), default=0.0) + room) / 2  # an even split with the biggest
        return Share(None, f"{source} of the {gpu.name}'s {_gib(total)}: too little for another "
                     f"server ({rule}). " + _advice(room, want, running), fits=False)
    beside = f" beside {', '.join(r.name for r in running)}" if running else ""
    split = f", split evenly among the {to_start} servers to start" if to_start > 1 else ""
    return Share(share, f"{_gib(share * total)} of the {gpu.name}'s {_gib(total)}, so {expected} servers fit"
                 f"{beside}: {source}{split}, less {CONTEXT_MIB} MiB each for a CUDA context ({rule}). "
                 "Override with --gpu-memory-utilization")


def _advice(room: float, want: float, running: Sequence[RunningShare]) -> str:
    """What to do when `want` does not fit in `room`: ask for less, or shrink the largest running share."""
    options = []
    if room >= MIN_SHARE:
        options.append(f"ask for at most --gpu-memory-utilization {math.floor(room * 100) / 100:.2f}")
    if running:
        biggest = max(running, key=lambda r: r.effective)
        smaller = math.floor((biggest.effective - (want - room)) * 100) / 100
        if smaller >= MIN_SHARE:
            options.append(f"restart {biggest.name} with --gpu-memory-utilization {smaller:.2f}")
        options.append("stop a server (%vllm_stop NAME)")
    else:
        options.append("free GPU memory first (another program, or the notebook's own tensors, holds it)")
    return "To make room: " + ", or ".join(options) + "."
