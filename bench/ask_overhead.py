"""%%ask against a raw `requests` client on the same real server, same requests, same run.

1. One streamed question: wall time and time to first token, %%ask (terminal and notebook display
   paths) against a raw `requests` SSE loop. Targets: wall <= 1.03x, first token <= +5 ms.
2. 32 prompts: `%%ask --each` against raw 32-way concurrency (threads + requests) and against a
   sequential loop. Target: <= 1.10x the raw concurrent time.
Medians over interleaved runs; prints ratios. Starts its own SmolLM2 server from the rig."""
from __future__ import annotations

import contextlib
import io
import json
import os
import pathlib
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import requests  # noqa: E402

from vllm_magics.server.plan import plan_serve  # noqa: E402
from vllm_magics.server.manager import VllmServer  # noqa: E402

MODEL = os.environ.get("VLLM_MAGICS_DEMO_MODEL", str(REPO / ".rig/models/smollm2-135m-instruct"))
RUNS = int(os.environ.get("BENCH_ASK_RUNS", "9"))
QUESTION = "Name three rivers in Europe and one fact about each."
MAX_TOKENS = 64


def raw_stream(session, base, model, prompt, max_tokens=MAX_TOKENS):
    t0 = time.perf_counter()
    first = None
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "temperature": 0,
            "max_tokens": max_tokens, "stream": True, "stream_options": {"include_usage": True}}
    with session.post(f"{base}/v1/chat/completions", json=body, stream=True, timeout=120) as resp:
        for line in resp.iter_lines(chunk_size=None):
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                break
            event = json.loads(data)
            for choice in event.get("choices") or []:
                if first is None and (choice.get("delta") or {}).get("content"):
                    first = time.perf_counter()
    return time.perf_counter() - t0, first - t0


def ask_cell(shell, notebook: bool, line: str, cell: str):
    """Run %%ask; returns (wall, time to the first drawn token)."""
    from vllm_magics.notebook.views import live as display

    magics = shell._vllm_magics
    magics._in_notebook = (lambda: True) if notebook else (lambda: False)
    first = []
    original = display.LiveAnswer.update

    def spy(self, answer):
        original(self, answer)  # the token is drawn (HTML rendered and published) after this
        if not first and answer.live is not None and len(answer.live.answer_text):
            first.append(time.perf_counter())

    display.LiveAnswer.update = spy
    try:
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            shell.run_cell_magic("ask", line, cell)
        return time.perf_counter() - t0, first[0] - t0
    finally:
        display.LiveAnswer.update = original


def main() -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
    from IPython.core.displaypub import CapturingDisplayPublisher
    from IPython.core.interactiveshell import InteractiveShell

    home = tempfile.mkdtemp()
    plan = plan_serve(MODEL, port=8197, gpus=[])
    server = VllmServer(plan, pathlib.Path(home))
    server.start()
    server.wait_ready(timeout=300)
    results = {}
    try:
        shell = InteractiveShell.instance()
        shell.display_pub = CapturingDisplayPublisher()  # a notebook's display path, minus the socket
        shell.run_line_magic("load_ext", "vllm_magics")
        shell._vllm_magics.server = server
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {server.api_key}"
        line = f"--temperature 0 --max-tokens {MAX_TOKENS}"
        raw_stream(session, server.base_url, plan.model, QUESTION)  # warm up
        ask_cell(shell, False, line, QUESTION)
        raw, term, nb = [], [], []
        for _ in range(RUNS):
            raw.append(raw_stream(session, server.base_url, plan.model, QUESTION))
            term.append(ask_cell(shell, False, line, QUESTION))
            nb.append(ask_cell(shell, True, line, QUESTION))
            shell.display_pub.outputs.clear()
        med = lambda xs, i: statistics.median(x[i] for x in xs)  # noqa: E731
        print(f"one question, {MAX_TOKENS} tokens, {RUNS} interleaved runs (medians):")
        print(f"  raw requests stream   wall {med(raw, 0) * 1000:7.1f} ms  first token {med(raw, 1) * 1000:6.1f} ms")
        for name, xs in (("%%ask (terminal)", term), ("%%ask (notebook)", nb)):
            print(f"  {name:21s} wall {med(xs, 0) * 1000:7.1f} ms  first token {med(xs, 1) * 1000:6.1f} ms"
                  f"  -> wall x{med(xs, 0) / med(raw, 0):.3f}, first token "
                  f"{(med(xs, 1) - med(raw, 1)) * 1000:+.1f} ms")
        results.update(raw_wall=med(raw, 0), ask_wall_ratio=med(nb, 0) / med(raw, 0),
                       ask_ttft_extra_ms=(med(nb, 1) - med(raw, 1)) * 1000)

        prompts = [f"What is {i} plus {i + 1}? Answer with the number only." for i in range(32)]
        shell.user_ns["prompts"] = prompts
        each_max = 24
        each_line = f"--each prompts --temperature 0 --max-tokens {each_max} --concurrency 32"

        def raw_concurrent():
            sessions = [requests.Session() for _ in range(32)]
            for s in sessions:
                s.headers["Authorization"] = f"Bearer {server.api_key}"
            t0 = time.perf_counter()
            with ThreadPoolExecutor(32) as pool:
                list(pool.map(lambda i: raw_stream(sessions[i], server.base_url, plan.model, prompts[i], each_max),
                              range(32)))
            return time.perf_counter() - t0

        def raw_sequential():
            t0 = time.perf_counter()
            for p in prompts:
                raw_stream(session, server.base_url, plan.model, p, each_max)
            return time.perf_counter() - t0

        shell._vllm_magics._in_notebook = lambda: True

        def each_templated():
            t0 = time.perf_counter()
            shell.run_cell_magic("ask", each_line, "{{ item }}")
            return time.perf_counter() - t0

        rc, ea = [], []
        for _ in range(3):
            rc.append(raw_concurrent())
            ea.append(each_templated())
        seq = raw_sequential()
        ok = sum(1 for a in shell.user_ns["_ask"] if a.ok)
        print(f"32 prompts x {each_max} tokens (medians of 3; sequential once):")
        print(f"  raw 32-way concurrent {statistics.median(rc):6.2f} s")
        print(f"  %%ask --each          {statistics.median(ea):6.2f} s  -> x{statistics.median(ea) / statistics.median(rc):.3f}"
              f" ({ok}/32 answered)")
        print(f"  raw sequential loop   {seq:6.2f} s  -> --each is {seq / statistics.median(ea):.1f}x faster")
        results.update(each_ratio=statistics.median(ea) / statistics.median(rc), sequential_speedup=seq / statistics.median(ea))
    finally:
        server.stop()
    return results


if __name__ == "__main__":
    main()
