"""`%vllm_status` on a ready server (goal <= 150 ms), against the raw cost of what it asks for: one
`requests` GET of /metrics (the largest of its four calls), in the same run. Medians of 20."""
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


def main() -> dict:
    import requests
    from IPython.core.displaypub import CapturingDisplayPublisher
    from IPython.core.interactiveshell import InteractiveShell

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    server = VllmServer(plan_serve(MODEL, port=8196, gpus=[]), pathlib.Path(tempfile.mkdtemp()))
    server.start()
    server.wait_ready(timeout=300)
    try:
        shell = InteractiveShell.instance()
        shell.display_pub = CapturingDisplayPublisher()
        if "vllm_magics" not in shell.extension_manager.loaded:  # run_all runs the benches in one process
            shell.run_line_magic("load_ext", "vllm_magics")
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
        return {"raw_ms": r, "card_ms": c, "json_ms": j, "first_ms": first * 1000}
    finally:
        server.stop()


if __name__ == "__main__":
    main()
