"""Kernel CPU time per streamed token, from 1k to 100k tokens: %%ask's path (ask() + the notebook live view
drawing into a recording display sink) against a raw `requests` SSE loop, on the same local stand-in
server, in the same run.

The stand-in (a separate process, so its CPU is not counted) streams N chat-completion chunks as fast as
the socket takes them: Markdown-ish text with paragraphs, lists and a code block every 40 lines. The
consumer's CPU is `time.process_time()` (all its threads). Target: flat µs/token as N grows (the old
path re-rendered the whole answer on every update: quadratic), the final render linear, and the largest
display update bounded (a segment, not the answer). Prints figures and ratios; never fails.
"""
from __future__ import annotations

import json
import multiprocessing
import pathlib
import socket
import sys
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SIZES = (1_000, 10_000, 100_000)


def _token(i: int) -> str:
    if i % 400 == 399:
        return "\n```\n\n"
    if i % 400 == 360:
        return "\n\n```python\n"
    if i % 40 == 39:
        return ".\n\n- item "
    return ("word ", "**bold** ", "`x` ", "more ")[i % 4]


def _serve(port_queue, n_by_request) -> None:
    """One connection per request; answers POST /v1/chat/completions with n tokens of SSE."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    port_queue.put(srv.getsockname()[1])
    bodies = {}
    while True:
        conn, _ = srv.accept()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, rest = data.partition(b"\r\n\r\n")
            if not head.startswith(b"POST"):  # %%ask --url asks /version once: not vLLM here
                conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                continue
            length = int([ln.split(b":")[1] for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length")][0])
            while len(rest) < length:
                rest += conn.recv(65536)
            n = json.loads(rest)["max_tokens"]
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n")
            try:
                for chunk in _events(n, bodies):
                    conn.sendall(chunk)
            except OSError:
                pass


def _event(i: int) -> bytes:
    return b"data: " + json.dumps({"model": "m", "choices": [{"index": 0, "delta": {"content": _token(i)}}]}).encode() + b"\n\n"


def _events(n: int, cache: dict):
    """The SSE body in chunks of 64 events (kept for the sizes measured, made on the fly for the endless one)."""
    yield b'data: {"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n'
    if n <= 100_000 and n not in cache:
        cache[n] = [b"".join(_event(i) for i in range(j, min(j + 64, n))) for j in range(0, n, 64)]
    yield from cache[n] if n in cache else (b"".join(_event(i) for i in range(j, min(j + 64, n)))
                                            for j in range(0, n, 64))
    yield (b'data: {"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"length"}],'
           b'"usage":{"prompt_tokens":3,"completion_tokens":%d}}\n\n' % n)
    yield b"data: [DONE]\n\n"


def raw(base: str, n: int) -> tuple[float, float]:
    import requests

    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": n, "stream": True}
    t0, c0 = time.perf_counter(), time.process_time()
    text = []
    with requests.post(f"{base}/v1/chat/completions", json=body, stream=True, timeout=120) as resp:
        for line in resp.iter_lines(chunk_size=None):
            if line.startswith(b"data:") and line[5:].strip() != b"[DONE]":
                for choice in json.loads(line[5:]).get("choices") or []:
                    text.append((choice.get("delta") or {}).get("content") or "")
    "".join(text)
    return time.perf_counter() - t0, time.process_time() - c0


class RecordingSink:
    """Stands in for IPython's display: records the size of every output sent or updated."""

    def __init__(self):
        self.sizes = []

    def show(self, bundle):
        self.sizes.append(sum(map(len, bundle.values())))
        sink = self

        class Handle:
            def update(self, bundle, raw=False):
                sink.sizes.append(sum(map(len, bundle.values())))
        return Handle()


def notebook_path(base: str, n: int) -> dict:
    from vllm_magics.ask.client import ChatClient
    from vllm_magics.ask.request import ask
    from vllm_magics.notebook.views.live import LiveAnswer

    sink = RecordingSink()
    live = LiveAnswer(True, updates_per_second=15, sink=sink)
    client = ChatClient(base)
    t0, c0 = time.perf_counter(), time.process_time()
    answer = ask(client, [{"role": "user", "content": "x"}], {"max_tokens": n}, model="m",
                 on_update=live.update, answer=live.answer)
    t1, c1 = time.perf_counter(), time.process_time()
    streamed = list(sink.sizes)
    live.finish(answer)
    c2 = time.process_time()
    return {"wall": t1 - t0, "cpu": c1 - c0, "final": c2 - c1, "chars": len(answer.text),
            "draws": live.updates, "largest": max(streamed or [0])}


def ctrl_c_latency(base: str, after: float) -> tuple[int, float]:
    """%%ask through the magic (notebook display path) on an endless stream; Ctrl-C `after` seconds in.
    Returns (characters that had arrived, seconds from Ctrl-C to the magic's return)."""
    import _thread
    import threading

    from IPython.core.displaypub import CapturingDisplayPublisher
    from IPython.core.error import UsageError
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.display_pub = CapturingDisplayPublisher()
    if getattr(shell, "_vllm_magics", None) is None:
        shell.run_line_magic("load_ext", "vllm_magics")
    shell._vllm_magics._in_notebook = lambda: True
    sent = []

    def interrupt():
        time.sleep(after)
        sent.append(time.perf_counter())
        _thread.interrupt_main()

    threading.Thread(target=interrupt, daemon=True).start()
    try:
        shell.run_cell_magic("ask", f"--url {base}/v1 --model m --max-tokens 100000000", "x")
    except UsageError:
        pass
    back = time.perf_counter()
    shell.display_pub.outputs.clear()
    return len(shell.user_ns["_ask"].text), back - sent[0]


def main() -> dict:
    # Warm imports (requests, jinja2, markdown_it, pygments) outside the timings.
    from vllm_magics.notebook.views.markdown import render_markdown
    from vllm_magics.notebook.views.render import render

    render_markdown("```python\nx = 1\n```\n**a**")
    render("answer_live.html.j2", part="head", status="")
    ports = multiprocessing.Queue()
    server = multiprocessing.Process(target=_serve, args=(ports, None), daemon=True)
    server.start()
    base = f"http://127.0.0.1:{ports.get(timeout=30)}"
    results = {}
    try:
        raw(base, 100)
        notebook_path(base, 100)
        print(f"{'tokens':>8} {'raw µs/tok':>11} {'%%ask µs/tok':>13} {'ratio':>6} {'wall ratio':>10} "
              f"{'final render':>13} {'draws':>6} {'largest update':>15}")
        for n in SIZES:
            r_wall, r_cpu = raw(base, n)
            nb = notebook_path(base, n)
            per_raw, per_nb = r_cpu / n * 1e6, nb["cpu"] / n * 1e6
            print(f"{n:>8} {per_raw:>11.1f} {per_nb:>13.1f} {per_nb / per_raw:>6.2f} {nb['wall'] / r_wall:>10.2f} "
                  f"{nb['final'] * 1000:>10.0f} ms {nb['draws']:>6} {nb['largest']:>12,} B"
                  f"  ({nb['chars']:,} chars, {nb['final'] / nb['chars'] * 1e6:.2f} µs/char final)")
            results[n] = {"raw_us_per_token": per_raw, "ask_us_per_token": per_nb, "final_s": nb["final"],
                          "largest_update": nb["largest"]}
        for a, b in zip(SIZES, SIZES[1:]):
            print(f"%%ask CPU per token at {b:,} tokens / at {a:,}: "
                  f"x{results[b]['ask_us_per_token'] / results[a]['ask_us_per_token']:.2f} (flat is about 1)")
        print("Ctrl-C during an endless stream, through the magic (notebook display path):")
        for after in (1.0, 4.0, 10.0):
            chars, latency = ctrl_c_latency(base, after)
            print(f"  after {after:4.1f} s ({chars:>9,} chars arrived): returned {latency * 1000:6.0f} ms after Ctrl-C")
            results[f"ctrl_c_after_{after:g}s"] = latency
    finally:
        server.terminate()
    return results


if __name__ == "__main__":
    main()
