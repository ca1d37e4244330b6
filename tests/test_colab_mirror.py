"""Colab's notebook stack, for real (issue 9, item 1): a Python 3.12 venv holding Colab's versions
(scripts/colab_mirror.sh, from tests/fixtures/colab/pip-freeze.txt) in which installing this package changes
nothing of Colab's, the tests that need no vLLM pass, and a real kernel of that stack serves, asks, watches
and stops. A machine without Python 3.12 FAILS here: a skip would let the Colab road go unchecked."""
import json
import re
import subprocess

import pytest

import colab_mirror
from helpers import FIXTURES, REPO, RIG, SMOLLM2, free_port, vllm_processes

mirror_python = colab_mirror.mirror_python  # the fixture (tests/colab_mirror.py)

pytestmark = pytest.mark.colab_mirror
FREEZE = FIXTURES / "colab" / "pip-freeze.txt"


def _name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()  # PEP 503


def colab_versions() -> dict[str, str]:
    pins = (line.split("==", 1) for line in FREEZE.read_text().splitlines() if "==" in line and " @ " not in line)
    return {_name(n): v for n, v in pins}


def test_the_mirror_holds_colabs_versions(mirror_python):
    listed = json.loads(subprocess.run([mirror_python, "-m", "pip", "list", "--format", "json"],
                                       capture_output=True, text=True, check=True).stdout)
    colab = colab_versions()
    held = {_name(p["name"]): p["version"] for p in listed}
    for name in ("ipython", "ipykernel", "ipywidgets", "traitlets", "jupyter-client", "tornado", "psutil",
                 "prometheus-client", "requests", "jinja2", "markdown-it-py", "pydantic", "pandas"):
        assert held[name] == colab[name], name
    differ = {n: (v, colab[n]) for n, v in held.items() if n in colab and v != colab[n] and n not in ("pip",)}
    assert differ == {}


def test_pip_install_changes_none_of_colabs_packages(mirror_python, tmp_path):
    report = tmp_path / "report.json"
    subprocess.run([mirror_python, "-m", "pip", "install", "--dry-run", "--quiet", "--report", str(report),
                    str(REPO)], capture_output=True, text=True, check=True)
    installs = {_name(i["metadata"]["name"]): i["metadata"]["version"] for i in json.loads(report.read_text())["install"]}
    colab = colab_versions()
    changed = {n: f"{colab[n]} -> {v}" for n, v in installs.items() if n in colab and colab[n] != v}
    assert changed == {}
    assert set(installs) == {"vllm-magics"}  # everything else it needs is already there


@pytest.mark.timeout(3600)  # the whole fast suite (about 800 tests), once more on Colab's stack
def test_the_tests_that_need_no_vllm_pass_on_colabs_stack(mirror_python):
    run = subprocess.run([mirror_python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m",
                          "not server and not kernel and not browser and not colab_mirror"],
                         cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert re.search(r"\d+ passed", run.stdout)


@pytest.mark.server
@pytest.mark.kernel
def test_a_kernel_of_colabs_stack_serves_the_seed_flags_asks_watches_and_stops(mirror_python, rig):
    vllm = str(RIG / "venv" / "bin" / "vllm")  # the rig's vLLM, run from the mirror's kernel
    port = free_port()
    run = subprocess.run([mirror_python, str(REPO / "tests" / "colab_kernel_flow.py"), vllm, str(SMOLLM2),
                          str(port)], capture_output=True, text=True, timeout=1800)
    assert run.returncode == 0, run.stderr[-3000:]
    steps = json.loads(run.stdout.strip().splitlines()[-1])
    problems = {k: s.get("error") for k, s in steps.items() if s["status"] != "ok" or s.get("error")}
    assert problems == {}
    versions = json.loads(steps["versions"]["text"])
    assert (versions["python"][:4], versions["ipython"], versions["ipykernel"], versions["ipywidgets"],
            versions["traitlets"], versions["jupyter_client"]) == ("3.12", "7.34.0", "6.17.1", "7.7.1", "5.7.1", "7.4.9")
    assert versions["executable"] == mirror_python
    serve = steps["serve"]
    assert "vLLM is ready" in serve["html"][-1] or "vLLM is ready" in serve["text"]
    assert "you wrote `--enable-chunked-prefill false`" in " ".join(serve["html"] + [serve["text"]])
    assert steps["ask"]["text"].strip() or any(h.strip() for h in steps["ask"]["html"])
    assert "smollm2" in (steps["status"]["text"] + " ".join(steps["status"]["html"])).lower()
    assert len(steps["watch"]["kinds"]) >= 2  # a display updated at least once
    assert "Stopped the vLLM server" in steps["stop"]["text"]
    assert steps["after_stop"]["text"].strip() == "gone"
    assert not [p for p in vllm_processes() if f"--port {port}" in p]
