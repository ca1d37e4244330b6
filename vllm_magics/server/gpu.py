"""What GPU this machine has, from `nvidia-smi --query-gpu ... --format=csv`.

Plain module (no IPython). `nvidia-smi` is what Colab and every NVIDIA driver install ship; asking
torch instead would cost seconds of import and initialise CUDA in the notebook's process.
"""
from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass

# The order matters: parse_query_csv reads the columns by these names.
QUERY_FIELDS = (
    "index",
    "name",
    "memory.total",
    "memory.used",
    "memory.free",
    "utilization.gpu",
    "compute_cap",
    "driver_version",
)


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    memory_total_mib: int | None
    memory_used_mib: int | None
    memory_free_mib: int | None
    utilization_pct: int | None
    compute_capability: tuple[int, int] | None
    driver_version: str | None = None

    @property
    def supports_bfloat16(self) -> bool:
        # bfloat16 kernels need Ampere (8.0) or newer; a T4 is 7.5, a V100 7.0.
        return self.compute_capability is not None and self.compute_capability >= (8, 0)

    def describe(self) -> str:
        cc = ".".join(map(str, self.compute_capability)) if self.compute_capability else "?"
        mem = f"{self.memory_total_mib / 1024:.0f} GiB" if self.memory_total_mib else "? GiB"
        return f"{self.name} ({mem}, compute capability {cc})"


def _number(cell: str) -> int | None:
    """'81559 MiB' / '0 %' / '81559' / '[N/A]' -> int or None."""
    token = cell.strip().split(" ")[0]
    try:
        return int(float(token))
    except ValueError:
        return None


def _capability(cell: str) -> tuple[int, int] | None:
    major, _, minor = cell.strip().partition(".")
    if major.isdigit() and minor.isdigit():
        return int(major), int(minor)
    return None


def parse_query_csv(text: str, fields: tuple[str, ...] = QUERY_FIELDS) -> list[GpuInfo]:
    """Parse `nvidia-smi --query-gpu=<fields> --format=csv[,noheader][,nounits]` output.

    With a header line, columns are found by name (units in brackets are ignored), so the column order
    and the presence of driver_version do not matter; without one, `fields` gives the order.
    """
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return []
    columns = list(fields)
    if lines[0].lstrip().startswith("index") or "[MiB]" in lines[0]:
        columns = [c.strip().split(" [")[0] for c in lines[0].split(",")]
        lines = lines[1:]
    gpus = []
    for line in lines:
        cells = dict(zip(columns, (c.strip() for c in line.split(","))))
        if "name" not in cells:
            continue
        gpus.append(
            GpuInfo(
                index=_number(cells.get("index", "0")) or 0,
                name=cells["name"],
                memory_total_mib=_number(cells.get("memory.total", "")),
                memory_used_mib=_number(cells.get("memory.used", "")),
                memory_free_mib=_number(cells.get("memory.free", "")),
                utilization_pct=_number(cells.get("utilization.gpu", "")),
                compute_capability=_capability(cells.get("compute_cap", "")),
                driver_version=cells.get("driver_version") or None,
            )
        )
    return gpus


def query_gpus(nvidia_smi: str = "nvidia-smi", timeout: float = 10.0) -> list[GpuInfo]:
    """The GPUs nvidia-smi reports; [] when there is no nvidia-smi or it fails (no driver, no GPU)."""
    exe = shutil.which(nvidia_smi)
    if exe is None:
        return []
    try:
        out = subprocess.run(
            [exe, f"--query-gpu={','.join(QUERY_FIELDS)}", "--format=csv"],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except (OSError, subprocess.SubprocessError):
        return []
    if out.returncode != 0:
        return []
    return parse_query_csv(out.stdout)
