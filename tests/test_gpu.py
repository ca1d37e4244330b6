import os
import stat

import pytest

from helpers import FIXTURES
from vllm_magics.server import gpu

H100 = FIXTURES / "nvidia-smi" / "h100-80gb"
T4 = FIXTURES / "nvidia-smi" / "t4-15gb"


def test_recorded_h100_query_with_units_and_header():
    [g] = gpu.parse_query_csv((H100 / "query-csv.txt").read_text())
    assert g.name == "NVIDIA H100 80GB HBM3"
    assert (g.memory_total_mib, g.memory_used_mib, g.memory_free_mib) == (81559, 0, 81079)
    assert g.utilization_pct == 0
    assert g.compute_capability == (9, 0)
    assert g.driver_version == "580.159.04"
    assert g.supports_bfloat16


def test_recorded_h100_noheader_nounits_uses_field_order():
    fields = gpu.QUERY_FIELDS[:-1]  # that recording was made without driver_version
    [g] = gpu.parse_query_csv((H100 / "query-csv-noheader-nounits.txt").read_text(), fields)
    assert g.memory_total_mib == 81559 and g.compute_capability == (9, 0) and g.driver_version is None


def test_t4_cannot_do_bfloat16():
    [g] = gpu.parse_query_csv((T4 / "query-csv.txt").read_text())
    assert g.name == "Tesla T4" and g.compute_capability == (7, 5)
    assert not g.supports_bfloat16
    assert "compute capability 7.5" in g.describe()


def test_not_available_cells_and_empty_output():
    assert gpu.parse_query_csv("") == []
    [g] = gpu.parse_query_csv("0, Some GPU, [N/A], [N/A], [N/A], [N/A], [N/A], 1.0\n")
    assert g.memory_total_mib is None and g.compute_capability is None and not g.supports_bfloat16


def _fake_nvidia_smi(tmp_path, body: str) -> str:
    # A stand-in for the real binary (no GPU here): prints a recorded answer, records its arguments.
    exe = tmp_path / "nvidia-smi"
    exe.write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path}/args\n{body}\n")
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return str(exe)


def test_query_gpus_runs_nvidia_smi_with_the_documented_query(tmp_path):
    exe = _fake_nvidia_smi(tmp_path, f"cat {T4 / 'query-csv.txt'}")
    [g] = gpu.query_gpus(exe)
    assert g.name == "Tesla T4"
    args = (tmp_path / "args").read_text()
    assert "--query-gpu=index,name,memory.total,memory.used,memory.free,utilization.gpu,compute_cap" in args
    assert "--format=csv" in args


def test_query_gpus_when_the_driver_fails_or_is_absent(tmp_path):
    # What nvidia-smi prints on a machine whose driver is not loaded (exit code 9).
    exe = _fake_nvidia_smi(tmp_path, "echo 'NVIDIA-SMI has failed because it couldn'\"'\"'t communicate with the "
                           "NVIDIA driver.'; exit 9")
    assert gpu.query_gpus(exe) == []
    assert gpu.query_gpus(str(tmp_path / "missing-nvidia-smi")) == []


@pytest.mark.skipif(os.path.exists("/dev/nvidia0"), reason="a real GPU is present")
def test_this_machine_has_no_gpu():
    assert gpu.query_gpus() == []
