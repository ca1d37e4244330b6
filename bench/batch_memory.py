"""Kernel memory of a long `--each` batch that streams its answers to a JSONL file.

A stand-in server (stdlib http.server in a child process: instant, tiny streamed answers) answers
20,000 short requests driven by vllm_magics.ask.batch_store.run_to_store (16 at once). tracemalloc
measures the peak of Python memory the batch adds, for 2,000 and for 20,000 items: with answers on
disk it should not grow with the batch (the stated bound: the in-flight requests plus 9 bytes per
item, an 8-byte file offset and a 1-byte done flag). The baseline, in the same run, is what holding
the same 20,000 answers in a list costs (Answers read back from the file into a list, the way an
in-memory batch keeps them; a real in-memory batch also keeps each request body, so it is more).

    .rig/venv/bin/python bench/batch_memory.py        # BENCH_BATCH_ITEMS=20000 by default
"""
from __future__ import annotations

import http.server
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
import tracemalloc

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

ITEMS = int(os.environ.get("BENCH_BATCH_ITEMS", "20000"))
CONCURRENCY = 16


class StandIn(http.server.BaseHTTPRequestHandler):
    """/v1/models and a streamed /v1/chat/completions answering "ok <prompt>" at once (vLLM's SSE shape)."""
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _send(self, body: bytes, ctype: str):
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self._send(b'{"object": "list", "data": [{"id": "stand-in"}]}', "application/json")

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body["messages"][-1]["content"]
        events = [{"model": "stand-in", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
                  {"model": "stand-in", "choices": [{"index": 0, "delta": {"content": f"ok {prompt}"}}]},
                  {"model": "stand-in", "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]},
                  {"model": "stand-in", "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 4,
                                                                  "total_tokens": 13}}]
        sse = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
        self._send(sse.encode(), "text/event-stream")


def serve(port_file: str) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), StandIn)
    server.daemon_threads = True
    pathlib.Path(port_file).write_text(str(server.server_address[1]))
    server.serve_forever()


class Prompts:
    """A lazy input: the messages of item i are made when the runner takes it."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i: int):
        return [{"role": "user", "content": f"item {i}"}]


def measure(url: str, n: int, path: pathlib.Path):
    from vllm_magics.ask.batch_store import BatchProgress, run_to_store
    from vllm_magics.ask.client import ChatClient

    progress = BatchProgress(n)
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    t0 = time.perf_counter()
    results = run_to_store(lambda: ChatClient(url), Prompts(n), {"max_tokens": 4}, path, model="stand-in",
                           concurrency=CONCURRENCY, progress=progress)
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] - base
    assert results.answered == n and results[n - 1].text == f"ok item {n - 1}", progress.line()
    return peak, seconds, results


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        port_file = pathlib.Path(tmp) / "port"
        child = subprocess.Popen([sys.executable, __file__, "--serve", str(port_file)])
        try:
            while not port_file.exists() or not port_file.read_text():
                time.sleep(0.05)
            url = f"http://127.0.0.1:{port_file.read_text()}"
            import requests  # noqa: F401 - imported before tracing: its import is not the batch's memory

            tracemalloc.start()
            measure(url, 100, pathlib.Path(tmp) / "warm.jsonl")  # one-off costs (sessions, lazy imports) out
            small_peak, small_s, _ = measure(url, ITEMS // 10, pathlib.Path(tmp) / "small.jsonl")
            big_peak, big_s, results = measure(url, ITEMS, pathlib.Path(tmp) / "big.jsonl")
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            in_list = list(results)  # the baseline: the same answers held in memory
            list_bytes = tracemalloc.get_traced_memory()[0] - base
            tracemalloc.stop()
            del in_list
        finally:
            child.terminate()
            child.wait(timeout=10)
    print(f"batch to JSONL, {ITEMS // 10:,} items: peak +{small_peak / 1e6:.2f} MB ({small_s:.1f} s)")
    print(f"batch to JSONL, {ITEMS:,} items: peak +{big_peak / 1e6:.2f} MB ({big_s:.1f} s, "
          f"{ITEMS / big_s:.0f} items/s)")
    print(f"the same {ITEMS:,} answers held in a list: +{list_bytes / 1e6:.2f} MB")
    print(f"ratio peak({ITEMS:,}) / peak({ITEMS // 10:,}) = {big_peak / small_peak:.2f} (1.0 = does not grow)")
    print(f"ratio peak({ITEMS:,}) / list of answers = {big_peak / list_bytes:.3f}")
    print(f"stated bound: in-flight requests + 9 bytes/item = {(small_peak + 9 * ITEMS) / 1e6:.2f} MB "
          f"for {ITEMS:,} items -> {'within' if big_peak <= small_peak + 9 * ITEMS * 1.5 else 'OVER'}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        serve(sys.argv[2])
    else:
        main()
