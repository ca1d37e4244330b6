"""The fixture for the tests that use the Colab-mirror venv (scripts/colab_mirror.sh)."""
from __future__ import annotations

import subprocess

import pytest

from helpers import REPO


@pytest.fixture(scope="session")
def mirror_python() -> str:
    """The mirror venv's python, built on first use and cached under .rig/colab-mirror. No Python 3.12 on
    this machine is a failure, not a skip: the Colab road would go unchecked."""
    built = subprocess.run([str(REPO / "scripts" / "colab_mirror.sh")], capture_output=True, text=True)
    if built.returncode != 0:
        pytest.fail(f"scripts/colab_mirror.sh failed ({built.returncode}): {built.stderr[-2000:]}", pytrace=False)
    return built.stdout.strip().splitlines()[-1]
