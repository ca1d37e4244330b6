"""The vLLM build that fits, and the doctor's words (issue 9, item 3), over recorded platforms: Colab's
published pip freeze, the T4 and H100 nvidia-smi fixtures, and the registry's metadata of the candidate
vLLM releases (tests/fixtures/colab/vllm_reports, `pip install --dry-run --no-deps --report`)."""
import json
import re
import subprocess
import sys

import pytest

from helpers import FIXTURES, REPO
from vllm_magics.doctor import versions
from vllm_magics.doctor.checks import check, doctor_text, weights_gib
from vllm_magics.doctor.install import decide
from vllm_magics.doctor.platform import Platform, platform_from_freeze, torch_cuda_from_version_py
from vllm_magics.server import gpu

FREEZE = (FIXTURES / "colab" / "pip-freeze.txt").read_text()
T4 = gpu.parse_query_csv((FIXTURES / "nvidia-smi/t4-15gb/query-csv.txt").read_text())
T4_BUSY = gpu.parse_query_csv((FIXTURES / "nvidia-smi/t4-15gb/query-csv-busy.txt").read_text())
H100 = gpu.parse_query_csv((FIXTURES / "nvidia-smi/h100-80gb/query-csv.txt").read_text())
REPORTS = sorted((FIXTURES / "colab" / "vllm_reports").glob("vllm-*.json"))


def colab(gpus=T4, python=(3, 12), **changes) -> Platform:
    p = platform_from_freeze(FREEZE, gpus, python)
    p.disk_free_gib, p.hf_token = 80.0, False
    for k, v in changes.items():
        setattr(p, k, v)
    return p


@pytest.mark.parametrize("report", REPORTS, ids=lambda p: p.stem)
def test_the_table_holds_what_the_registry_says(report):
    meta = json.loads(report.read_text())["install"][0]["metadata"]
    row = versions.release(meta["version"])
    assert row is not None, f"{meta['version']} is recorded but not in versions.RELEASES"
    [pin] = [d for d in meta["requires_dist"] if d.startswith("torch==")]
    assert pin == f"torch=={row.torch}"
    low = re.search(r">=(\d+)\.(\d+)", meta["requires_python"]).groups()
    high = re.search(r"<(\d+)\.(\d+)", meta["requires_python"]).groups()
    assert row.python == (tuple(map(int, low)), tuple(map(int, high)))


def test_colab_reads_as_torch_2_11_for_cuda_12_8():
    p = colab()
    assert (p.torch, p.torch_cuda, p.vllm) == ("2.11.0+cu128", "12.8", None)
    assert p.gpu.driver_version == "550.54.15"


@pytest.mark.parametrize("gpus", [T4, H100], ids=["t4", "h100"])
@pytest.mark.parametrize("python", [(3, 12), (3, 13)])
def test_on_colab_the_cuda_12_9_build_of_the_newest_release_for_torch_2_11_keeps_torch(gpus, python):
    plan = decide(colab(gpus, python))
    assert plan.action == "install" and plan.release.version == "0.26.0"
    assert plan.requirement == "vllm==0.26.0+cu129"
    assert plan.index_urls == ["https://wheels.vllm.ai/0.26.0/cu129"]
    assert plan.replaces == [] and not plan.restart
    text = plan.text()
    assert 'pip install "vllm==0.26.0+cu129" --extra-index-url https://wheels.vllm.ai/0.26.0/cu129' in text
    assert "torch stays" in text and "libcudart.so.13" in text


def test_a_torch_no_release_pins_is_replaced_and_the_runtime_must_restart():
    plan = decide(colab(torch="2.12.0+cu128"))
    assert plan.release.version == "0.33.0" and plan.restart
    assert plan.replaces == ["torch 2.12.0+cu128 -> 2.14.0"]
    assert "must restart" in plan.text()
    # Python 3.10: 0.33 needs 3.11, so the newest that installs there.
    assert decide(colab(torch="2.12.0+cu128", python=(3, 10))).release.version == "0.29.0"


def test_what_is_installed_and_fits_is_left_alone_and_a_cuda_13_build_is_replaced():
    assert decide(colab(vllm="0.26.0+cu129")).action == "nothing"
    plan = decide(colab(vllm="0.26.0"))  # PyPI's, CUDA 13
    assert plan.action == "install" and plan.replaces == ["vllm 0.26.0 -> 0.26.0+cu129"]


def test_no_gpu_an_old_gpu_or_a_new_python_gets_a_plain_no():
    for p, words in ((colab(gpus=[]), "no NVIDIA GPU"), (colab(python=(3, 15)), "Python 3.15"),
                     (colab(gpus=gpu.parse_query_csv("0, Tesla V100, 16384, 0, 16000, 0, 7.0\n")),
                      "compute capability 7.0")):
        plan = decide(p)
        assert plan.action == "impossible" and words in plan.text()


def test_the_doctor_names_a_vllm_built_for_another_cuda():
    found = check(colab(vllm="0.26.0"))
    [f] = [f for f in found if "but torch" in f.message]
    assert f.level == "problem" and "built for CUDA 13.0 but torch 2.11.0+cu128 for CUDA 12.8" in f.message
    assert "libcudart.so.13" in f.message
    # And the T4's driver 550 is too old for a CUDA 13 build at all.
    assert any("needs NVIDIA driver 580.65 or newer; this machine has 550.54.15" in f.message for f in found)
    assert [f.level for f in check(colab(gpus=H100, vllm="0.26.0", torch_cuda="13.0"))] == ["ok"]


def test_the_doctor_names_a_torch_replaced_in_this_session_and_a_wrong_torch_pin():
    messages = [f.message for f in check(colab(vllm="0.26.0+cu129", torch_loaded="2.10.0+cu128"))]
    assert any("restart the runtime" in m and "2.10.0+cu128 is loaded" in m for m in messages)
    messages = [f.message for f in check(colab(vllm="0.29.0+cu129"))]
    assert any("needs torch==2.13.0" in m for m in messages)


def test_the_doctor_on_gpu_memory_in_use_gives_the_fraction_that_fits():
    [f] = [f for f in check(colab(gpus=T4_BUSY, vllm="0.26.0+cu129")) if "gpu-memory" in f.message]
    assert "asks 13.5 GiB of the GPU and 10.2 GiB is free" in f.message
    assert "use --gpu-memory-utilization 0.64" in f.message
    assert not [f for f in check(colab(gpus=T4_BUSY, vllm="0.26.0+cu129"), gpu_memory_utilization=0.6)
                if "gpu-memory" in f.message]


def test_the_doctor_on_disk_space_gated_models_broken_releases_and_python():
    seed = "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"
    assert weights_gib(seed) == pytest.approx(3.15) and weights_gib("org/no-size-here") is None
    [disk] = [f.message for f in check(colab(vllm="0.26.0+cu129", disk_free_gib=2.0), seed) if "disk" in f.message]
    assert "about 3.2 GiB of disk" in disk and "2.0 GiB is free" in disk
    gated = [f.message for f in check(colab(vllm="0.26.0+cu129"), "meta-llama/Llama-3.2-1B-Instruct")]
    assert any("gated" in m and "HF_TOKEN" in m for m in gated)
    assert not [m for m in (f.message for f in check(colab(vllm="0.26.0+cu129", hf_token=True),
                                                    "meta-llama/Llama-3.2-1B-Instruct")) if "gated" in m]
    assert any("fara#57" in f.message for f in check(colab(vllm="0.15.1")))
    assert any("Python 3.15" in f.message for f in check(colab(vllm="0.26.0+cu129", python=(3, 15))))
    [ok] = check(colab(vllm="0.26.0+cu129"), seed)
    assert ok.level == "ok" and "Tesla T4" in ok.message
    assert "✗ vLLM is not installed" in doctor_text(platform=colab())


def test_torch_cuda_is_read_from_torch_version_py_text():
    assert torch_cuda_from_version_py("__version__ = '2.11.0+cu128'\ncuda: Optional[str] = '12.8'\n") == "12.8"
    assert torch_cuda_from_version_py("cuda = '12.9'\n") == "12.9"
    assert torch_cuda_from_version_py("cuda: Optional[str] = None\n") is None


def test_reading_this_machine_imports_neither_torch_nor_vllm():
    code = ("import sys; from vllm_magics.doctor.platform import read_platform; p = read_platform(); "
            "print(p.python, p.torch, p.torch_cuda, p.vllm, 'torch' in sys.modules, 'vllm' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True).stdout
    assert out.strip().endswith("False False")
    from vllm_magics.doctor.platform import installed_version

    assert str(installed_version("torch")) in out  # None where torch is absent (the Colab-mirror venv)
