"""What a server start costs when torch.compile's kernel cache is cold, against the same start with the
cache a bare `vllm serve` would have kept (goal: the warm start does no compiling; the kernels a first
structured-output request needs are compiled once per machine, not once per server).

VllmServer gives vLLM a private TMPDIR, which stop() deletes; inductor's kernel cache lives under the temp
folder by default, so without TORCHINDUCTOR_CACHE_DIR every start compiled again (server/manager.py). Both
runs here start the rig's SmolLM2 and ask one JSON-schema answer (structured outputs compile C++ kernels on
the CPU build); the cold run gets an empty cache folder, the warm run the same folder again. Prints the time
from ready to the answer and the CPU time of the server's processes, and the cold/warm ratios."""
from __future__ import annotations

import os
import pathlib
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from vllm_magics.ask.client import ChatClient  # noqa: E402
from vllm_magics.ask.request import ask  # noqa: E402
from vllm_magics.server.manager import VllmServer  # noqa: E402
from vllm_magics.server.plan import plan_serve  # noqa: E402

MODEL = os.environ.get("VLLM_MAGICS_DEMO_MODEL", str(REPO / ".rig/models/smollm2-135m-instruct"))
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU of the live processes of a process group (read before the stop)."""
    tick, total = os.sysconf("SC_CLK_TCK"), 0.0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            total += (int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])) / tick
    return total


def one_run(cache: str, home: str) -> tuple[float, float]:
    from socket import socket

    with socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    plan = plan_serve(MODEL, port=port, gpus=[], environ={})
    plan.env.update({"HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "TORCHINDUCTOR_CACHE_DIR": cache})
    server = VllmServer(plan, pathlib.Path(home))
    server.start()
    try:
        server.wait_ready(timeout=600)
        t0 = time.monotonic()
        answer = ask(ChatClient(server.base_url, server.api_key), [{"role": "user", "content": "A city?"}],
                     {"temperature": 0, "max_tokens": 16, "response_format": {
                         "type": "json_schema", "json_schema": {"name": "c", "schema": SCHEMA}}},
                     model=plan.model)
        took = time.monotonic() - t0
        assert answer.ok, answer.error
        return took, group_cpu_seconds(server.pgid)
    finally:
        server.stop()


def main() -> None:
    with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as home:
        cold = one_run(cache, home)
        warm = one_run(cache, home)
    print(f"cold cache: first structured answer {cold[0]:6.1f} s after ready, server CPU {cold[1]:6.1f} s")
    print(f"warm cache: first structured answer {warm[0]:6.1f} s after ready, server CPU {warm[1]:6.1f} s")
    print(f"ratio cold/warm: answer {cold[0] / warm[0]:.1f}x, CPU {cold[1] / warm[1]:.2f}x")


if __name__ == "__main__":
    main()
