"""A CPU server (no GPU) answering a batch beside two busy processes, with OpenMP's default wait policy
(its threads spin between steps) against OMP_WAIT_POLICY=PASSIVE, which plan_serve now sets on a machine
without a GPU (goal: the server keeps most of its idle speed when it shares its cores, as it does with a
notebook's kernel on a 2-core Colab CPU runtime or with a second server).

Each run starts the rig's SmolLM2, answers 50 items to warm up, then the same batch (BENCH_ITEMS, 500
one-token answers, 64 at a time) on an idle machine and beside two `while True: pass` processes. Prints the
wall time and the CPU time of the server's processes for each, and the ratios against the default policy,
measured in the same run."""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from vllm_magics.ask.batch_store import run_to_store  # noqa: E402
from vllm_magics.ask.client import ChatClient  # noqa: E402
from vllm_magics.server import process  # noqa: E402
from vllm_magics.server.manager import VllmServer  # noqa: E402
from vllm_magics.server.plan import plan_serve  # noqa: E402

MODEL = os.environ.get("VLLM_MAGICS_DEMO_MODEL", str(REPO / ".rig/models/smollm2-135m-instruct"))
ITEMS = int(os.environ.get("BENCH_ITEMS", "500"))


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU of the live processes of the server's group (/proc/PID/stat's utime and stime)."""
    tick, total = os.sysconf("SC_CLK_TCK"), 0.0
    for pid in process.group_members(pgid):
        fields = process._stat_fields(pid)  # after the command name: utime and stime are the 12th and 13th
        if fields is not None:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def batch(server: VllmServer, n: int, path: pathlib.Path) -> tuple[float, float]:
    messages = [[{"role": "system", "content": "."}, {"role": "user", "content": "n"},
                 {"role": "assistant", "content": f"#{i}:"}] for i in range(n)]
    params = {"temperature": 0, "max_tokens": 1, "echo": True, "add_generation_prompt": False,
              "continue_final_message": True}
    cpu0, t0 = group_cpu_seconds(server.pgid), time.monotonic()
    done = run_to_store(lambda: ChatClient(server.base_url, api_key=server.api_key), messages, params, path,
                        model=server.plan.model, concurrency=64)
    assert len(done) == n and all(a.ok for a in done)
    return time.monotonic() - t0, group_cpu_seconds(server.pgid) - cpu0


def one_policy(passive: bool, home: pathlib.Path) -> dict:
    from socket import socket

    with socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    plan = plan_serve(MODEL, port=port, gpus=[], environ={})
    plan.env.update({"HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1"})
    assert plan.env["OMP_WAIT_POLICY"] == "PASSIVE"
    if not passive:  # OpenMP's own default, as before plan_serve chose PASSIVE
        del plan.env["OMP_WAIT_POLICY"]
    server = VllmServer(plan, home)
    server.start()
    try:
        server.wait_ready(timeout=600)
        batch(server, 50, home / "warm.jsonl")
        idle = batch(server, ITEMS, home / "idle.jsonl")
        hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
        try:
            loaded = batch(server, ITEMS, home / "loaded.jsonl")
        finally:
            for hog in hogs:
                hog.kill()
                hog.wait()
        return {"idle": idle, "loaded": loaded}
    finally:
        server.stop()


def main() -> None:
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        spinning = one_policy(False, pathlib.Path(a))
        passive = one_policy(True, pathlib.Path(b))
    for name, runs in (("OpenMP default (spins)", spinning), ("OMP_WAIT_POLICY=PASSIVE", passive)):
        for when in ("idle", "loaded"):
            wall, cpu = runs[when]
            print(f"{name:24} {when:6}: {ITEMS} answers in {wall:6.1f} s, server CPU {cpu:6.1f} s")
    for when in ("idle", "loaded"):
        print(f"ratio default/passive, {when}: wall {spinning[when][0] / passive[when][0]:.2f}x, "
              f"CPU {spinning[when][1] / passive[when][1]:.2f}x")


if __name__ == "__main__":
    main()
