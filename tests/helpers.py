"""Helpers shared by the tests (imported as `helpers`; pytest puts tests/ on sys.path)."""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"
RIG = pathlib.Path(os.environ.get("VLLM_MAGICS_RIG", REPO / ".rig"))
MODELS = RIG / "models"
SMOLLM2 = MODELS / "smollm2-135m-instruct"
TINY_R1 = MODELS / "tiny-r1"
VLLM_BIN = pathlib.Path(sys.executable).parent / "vllm"


def vllm_processes() -> list[str]:
    """Lines of `ps` (pid, pgid, args) for any vLLM process on the machine (API server, engine core, workers).
    Not zombies: a process that has ended but whose parent has not read its exit yet runs nothing (seen: an
    engine core's, for a moment after its server stopped, on a loaded machine)."""
    out = subprocess.run(["ps", "-ww", "-eo", "stat,pid,pgid,args"], capture_output=True, text=True).stdout
    lines = [ln.split(None, 1) for ln in out.splitlines()[1:] if ln.strip()]
    return [" " + rest for stat, rest in lines if not stat.startswith("Z")
            and ("vllm serve" in rest or "VLLM::" in rest) and "ps -ww" not in rest]


def wait_until(predicate, timeout: float, interval: float = 0.1):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ctrl_c_inside_thread_start(monkeypatch, chosen, once=lambda: True, *, thread_runs_first: bool) -> None:
    """Thread.start() waits until its thread runs, so a real Ctrl-C can land inside it (on a loaded machine it
    did). Makes one land there, in the start of the thread that `chosen(thread, n)` picks (n: 1 for the first
    thread started from now on), once `once()` holds (60 s at most); once only. `thread_runs_first`: that
    thread is already running when the Ctrl-C comes; else the Ctrl-C comes as it is being started."""
    import _thread
    import threading

    count, fired = [0], []

    class CtrlCInStart(threading.Thread):
        def start(self):
            count[0] += 1
            if fired or not chosen(self, count[0]):
                return super().start()
            fired.append(self)
            if thread_runs_first:
                super().start()
            assert wait_until(once, 60)
            _thread.interrupt_main()
            if not thread_runs_first:
                super().start()  # the Ctrl-C lands in here
            threading.Event().wait(5)  # or here

    monkeypatch.setattr(threading, "Thread", CtrlCInStart)


ADAPTER = MODELS / "smollm2-lora-pineapple"


def rig_adapter(smollm2: str) -> pathlib.Path:
    """The rig's LoRA adapter (scripts/build_lora.py: rank 8 on q_proj/v_proj, trained to talk about
    pineapples), built here if scripts/setup_rig.sh has not built it yet (about a minute, needs peft)."""
    import pytest

    if not (ADAPTER / ".complete").exists():
        try:
            import peft  # noqa: F401
        except ImportError:
            pytest.fail("the rig's LoRA adapter is missing and peft is not installed: run scripts/setup_rig.sh",
                        pytrace=False)
        sys.path.insert(0, str(REPO / "scripts"))
        import build_lora

        build_lora.build(pathlib.Path(smollm2), ADAPTER)
    return ADAPTER
