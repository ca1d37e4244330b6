"""How late `wait_ready` notices that a real vLLM server is ready (goal: <= 0.25 s).

Baseline in the same run: a thread that polls /health every 5 ms and records when it first gets
200. The delay is the time from that moment to `wait_ready` returning. Uses the rig's SmolLM2."""
from __future__ import annotations

import os
import pathlib
import statistics
import sys
import tempfile
import threading
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from vllm_magics.status.probes import health_status  # noqa: E402
from vllm_magics.server.plan import plan_serve  # noqa: E402
from vllm_magics.server.manager import VllmServer  # noqa: E402

RUNS = int(os.environ.get("BENCH_READY_RUNS", "3"))
MODEL = os.environ.get("VLLM_MAGICS_DEMO_MODEL", str(REPO / ".rig/models/smollm2-135m-instruct"))


def one_run(port: int, home: str) -> tuple[float, float]:
    plan = plan_serve(MODEL, port=port, gpus=[])
    server = VllmServer(plan, pathlib.Path(home))
    first_200 = []
    stop = threading.Event()

    def baseline():
        while not stop.is_set():
            if health_status(plan.base_url, timeout=2.0) == 200:
                first_200.append(time.monotonic())
                return
            time.sleep(0.005)

    t0 = time.monotonic()
    server.start()
    thread = threading.Thread(target=baseline, daemon=True)
    thread.start()
    try:
        server.wait_ready(timeout=300)
        returned = time.monotonic()
        thread.join(5)
    finally:
        stop.set()
        server.stop()
    return returned - first_200[0], returned - t0


def failure_delay(port: int, home: str) -> float:
    """From vLLM's exit (recorded by the supervisor) to wait_ready raising, for a model that does not exist."""
    from vllm_magics.errors import ServerStartError

    server = VllmServer(plan_serve("/nonexistent/model", port=port, gpus=[]), pathlib.Path(home))
    server.start()
    try:
        server.wait_ready(timeout=120)
    except ServerStartError:
        raised = time.time()
    else:
        raise AssertionError("a missing model started")
    return raised - server.proc.state()["ended_at"]


def main() -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
    delays, startups = [], []
    with tempfile.TemporaryDirectory() as home:
        for i in range(RUNS):
            delay, startup = one_run(8190 + i, home)
            delays.append(delay)
            startups.append(startup)
            print(f"run {i + 1}: ready after {startup:5.1f} s, noticed {delay * 1000:6.1f} ms after the 5 ms poller")
        failures = [failure_delay(8195, home) for _ in range(RUNS)]
    f = statistics.median(failures)
    print(f"failure detection delay (vLLM exits -> error raised, with its log and diagnosis): median "
          f"{f * 1000:.0f} ms over {RUNS} runs (goal <= 1000 ms)")
    d = statistics.median(delays)
    print(f"readiness detection delay: median {d * 1000:.1f} ms over {RUNS} runs (goal <= 250 ms); "
          f"startup median {statistics.median(startups):.1f} s")
    return {"delay_ms": d * 1000, "startup_s": statistics.median(startups), "failure_ms": f * 1000}


if __name__ == "__main__":
    main()
