"""examples/colab_quickstart.ipynb in a kernel of Colab's notebook stack (issue 9, item 6): every cell parses,
and the cells run up to the first that needs a GPU (tagged "gpu"): the extension loads, %vllm_doctor and
%vllm_install --dry-run speak in plain words on a machine without a GPU."""
import json
import subprocess

import nbformat
import pytest

import colab_mirror
from helpers import REPO

mirror_python = colab_mirror.mirror_python  # the fixture (tests/colab_mirror.py)

NOTEBOOK = REPO / "examples" / "colab_quickstart.ipynb"
INSTALL_LINE = 'pip install -q "vllm_magics @ git+https://github.com/vllm-magics/vllm_magics"'


def test_the_install_line_names_this_repository_and_says_it_is_not_on_pypi():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    text = "\n".join(c.source for c in nb.cells)
    badge_repo = text.split("colab.research.google.com/github/", 1)[1].split("/blob/", 1)[0]
    assert INSTALL_LINE.split("github.com/")[1].rstrip('"') == badge_repo
    assert INSTALL_LINE in text and "not on PyPI yet" in text
    [serve] = [c.source for c in nb.cells if c.source.startswith("%vllm_serve")]
    assert "--enable-chunked-prefill false --tensor-parallel-size 1" in serve  # the seed's flags
    order = [c.source.split()[0] for c in nb.cells if c.cell_type == "code"]
    assert order.index("%vllm_install") < order.index("%vllm_serve")


@pytest.mark.colab_mirror
@pytest.mark.kernel
def test_the_quickstart_runs_in_colabs_kernel_up_to_the_gpu(mirror_python):
    run = subprocess.run([mirror_python, str(REPO / "tests" / "colab_kernel_flow.py"), "--notebook", str(NOTEBOOK)],
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    steps = json.loads(run.stdout.strip().splitlines()[-1])
    assert json.loads(steps["parse"]["text"]) == {}
    problems = {k: s.get("error") for k, s in steps.items() if s["status"] != "ok" or s.get("error")}
    assert problems == {}
    assert steps["stopped_at"]["text"] == "%vllm_install"
    ran = " ".join(s["text"] for k, s in steps.items() if k.startswith("cell"))
    assert "vLLM is not installed in this Python: %vllm_install" in ran  # %vllm_doctor, before the install
    assert "No vLLM build fits this machine" in ran and "no NVIDIA GPU" in ran  # this machine: no GPU
