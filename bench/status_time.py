"""`%vllm_status` on a ready server (goal <= 150 ms), against the raw cost of what it asks for: one
`requests` GET of /metrics (the largest of its four calls), in the same run. Medians of 20.

Then `%vllm_status --url` against a server that sends one byte a second forever (the stand-in in
tests/standins/hostile_server.py): it must end with its one-line error within its deadline (each probe's
total time limit), however slowly the server drips. `--drip-only` measures that part alone (no vLLM).
"""
from __future__ import annotations

import os
import pathlib
import statistics
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from vllm_magics.server.plan import plan_serve  # noqa: E402
from vllm_magics.server.manager import VllmServer  # noqa: E402

MODEL = os.environ.get("VLLM_MAGICS_DEMO_MODEL", str(REPO / ".rig/models/smollm2-135m-instruct"))
RUNS = 20


def make_shell():
    from IPython.core.displaypub import CapturingDisplayPublisher
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.display_pub = CapturingDisplayPublisher()
    if "vllm_magics" not in shell.extension_manager.loaded:  # run_all runs the benches in one process
        shell.run_line_magic("load_ext", "vllm_magics")
    return shell


def slow_drip(shell, card_ms: float | None = None) -> dict:
    """Seconds `%vllm_status --url` takes against a one-byte-a-second server (median of 3)."""
    import inspect

    from IPython.core.error import UsageError

    from vllm_magics.status.collect import collect_status

    sys.path.insert(0, str(REPO / "tests" / "standins"))
    from hostile_server import start

    deadline = inspect.signature(collect_status).parameters["timeout"].default
    proc, port = start()
    times, message = [], ""
    try:
        for _ in range(3):
            t = time.perf_counter()
            try:
                shell.run_line_magic("vllm_status", f"--url http://127.0.0.1:{port}/m/drip/v1")
            except UsageError as exc:
                message = str(exc)
            times.append(time.perf_counter() - t)
    finally:
        proc.kill()
        proc.wait()
    d = statistics.median(times)
    ratio = f"; x{d * 1000 / card_ms:.0f} the ready server's card" if card_ms else ""
    print(f"%vllm_status vs slow drip median {d * 1000:6.0f} ms  (x{d / deadline:.2f} its {deadline:g} s deadline"
          f"{ratio}; a server sending 1 byte/s)")
    print(f"  it says: {message[:150]}")
    return {"drip_ms": d * 1000, "drip_deadline_s": deadline}


def main() -> dict:
    import requests

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    server = VllmServer(plan_serve(MODEL, port=8196, gpus=[]), pathlib.Path(tempfile.mkdtemp()))
    server.start()
    server.wait_ready(timeout=300)
    try:
        shell = make_shell()
        magics = shell._vllm_magics
        magics.server = server
        magics._in_notebook = lambda: True  # the HTML card, as in a notebook
        t = time.perf_counter()
        shell.run_line_magic("vllm_status", "")
        first = time.perf_counter() - t
        raw, card, js = [], [], []
        for _ in range(RUNS):
            t = time.perf_counter()
            requests.get(f"{server.base_url}/metrics", timeout=5).text
            raw.append(time.perf_counter() - t)
            t = time.perf_counter()
            shell.run_line_magic("vllm_status", "")
            card.append(time.perf_counter() - t)
            t = time.perf_counter()
            shell.run_line_magic("vllm_status", "--json")
            js.append(time.perf_counter() - t)
            shell.display_pub.outputs.clear()
        r, c, j = (statistics.median(x) * 1000 for x in (raw, card, js))
        print(f"raw GET /metrics          median {r:6.1f} ms")
        print(f"%vllm_status (HTML card)  median {c:6.1f} ms  (x{c / r:.1f} the raw GET; goal <= 150 ms)")
        print(f"%vllm_status --json       median {j:6.1f} ms")
        print(f"first call in a session   {first * 1000:6.1f} ms  (imports prometheus_client and jinja2 once)")
        magics.server = None
        return {"raw_ms": r, "card_ms": c, "json_ms": j, "first_ms": first * 1000, **slow_drip(shell, c)}
    finally:
        server.stop()


if __name__ == "__main__":
    if "--drip-only" in sys.argv:
        slow_drip(make_shell())
    else:
        main()
