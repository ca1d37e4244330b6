"""`%%ask --each` over 100,000 short items: time to the first request, Ctrl-C latency, and the
bookkeeping per item against a plain loop, in the same run.

1. Through the magic, against a local stand-in chat server (a separate process that notes when the first
   request arrives): 100,000 items, `--no-stream`; Ctrl-C (interrupt_main) one second after the first
   request. Prints the time to the first request (a plain `requests` loop's as the baseline) and the
   time from Ctrl-C to the magic's return. The old code rendered every prompt with a new jinja
   Environment first (3.8 ms each: about 6 minutes for 100,000) and waited for requests in flight.
2. The batch's own cost per item, without HTTP: ask_many (templating per item, threads, progress
   display through IPython's display machinery) with an in-process client that answers at once,
   against a plain loop doing the same templating and calls; at 10,000 and 100,000 items. Flat µs/item
   means linear bookkeeping (the old progress display summed over all results at every answer).
Prints figures and ratios; never fails.
"""
from __future__ import annotations

import _thread
import contextlib
import io
import multiprocessing
import pathlib
import sys
import threading
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

N = 100_000
CELL = "Say {{ item }} and nothing else."


def _serve(port_queue, first, count) -> None:
    import http.server
    import json

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            with count.get_lock():
                if count.value == 0:
                    first.value = time.monotonic()  # CLOCK_MONOTONIC: the same clock in every process
                count.value += 1
            data = json.dumps({"model": "m", "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                               "finish_reason": "stop"}], "usage": {"prompt_tokens": 5, "completion_tokens": 1}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    port_queue.put(server.server_address[1])
    server.serve_forever()


def magic_run(shell, url, first, count) -> dict:
    from IPython.core.error import UsageError

    first.value, count.value = 0.0, 0
    shell.user_ns["items"] = [f"item {i}" for i in range(N)]
    interrupted = []

    def interrupt_a_second_after_the_first_request():
        while first.value == 0.0:
            time.sleep(0.001)
        time.sleep(1.0)
        interrupted.append(time.monotonic())
        _thread.interrupt_main()

    threading.Thread(target=interrupt_a_second_after_the_first_request, daemon=True).start()
    t0 = time.monotonic()
    message = ""
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            shell.run_cell_magic("ask", f"--each items --no-stream --url {url}/v1 --model m", CELL)
    except UsageError as exc:
        message = str(exc)
    end = time.monotonic()
    return {"first": first.value - t0, "ctrl_c": end - interrupted[0] if interrupted else None, "message": message}


def plain_first_request(url, first, count) -> float:
    import requests

    first.value, count.value = 0.0, 0
    session = requests.Session()
    t0 = time.monotonic()
    for i in range(3):
        session.post(f"{url}/v1/chat/completions", json={"model": "m", "messages": [
            {"role": "user", "content": CELL.replace("{{ item }}", f"item {i}")}]}, timeout=30)
    return first.value - t0


class InstantClient:
    """An in-process stand-in for ChatClient that answers at once (the batch's own cost, without HTTP)."""

    base_url, timeout = "http://stand-in", 10.0

    def __init__(self):
        import requests

        self.session = requests.Session()

    def chat(self, messages, model=None, **params):
        return {"choices": [{"index": 0, "message": {"content": "ok"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 1}}


def bookkeeping(n: int) -> tuple[float, float]:
    from vllm_magics.ask.batch import ask_many
    from vllm_magics.ask.prompt import PromptTemplate, build_messages
    from vllm_magics.notebook.views.live import BatchProgress

    items = [f"item {i}" for i in range(n)]
    ns = {f"var{i}": i for i in range(500)}  # a notebook's namespace is not empty
    template = PromptTemplate(CELL)

    def prepare(item):
        prompt = template.render(ns, item=item)
        return prompt, build_messages(prompt)

    client = InstantClient()
    t0 = time.process_time()
    for item in items:  # the plain loop: the same templating and calls, one thread, no bookkeeping
        prompt, messages = prepare(item)
        client.chat(messages, model="m")
    plain = time.process_time() - t0
    progress = BatchProgress(n, notebook=True)
    t0 = time.process_time()
    answers = ask_many(InstantClient, items, prepare, {}, model="m", concurrency=16, stream=False,
                       on_answer=progress.update)
    progress.finish()
    batch = time.process_time() - t0
    assert len(answers) == n and answers[-1].text == "ok"
    return plain / n * 1e6, batch / n * 1e6


def main() -> dict:
    from IPython.core.displaypub import CapturingDisplayPublisher
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.display_pub = CapturingDisplayPublisher()  # a notebook's display path, minus the socket
    shell.run_line_magic("load_ext", "vllm_magics")
    shell._vllm_magics._in_notebook = lambda: True
    ports, first, count = multiprocessing.Queue(), multiprocessing.Value("d", 0.0), multiprocessing.Value("i", 0)
    server = multiprocessing.Process(target=_serve, args=(ports, first, count), daemon=True)
    server.start()
    url = f"http://127.0.0.1:{ports.get(timeout=30)}"
    results = {}
    try:
        plain = plain_first_request(url, first, count)
        run = magic_run(shell, url, first, count)
        print(f"--each over {N:,} items, --no-stream, local stand-in server:")
        print(f"  first request after {run['first'] * 1000:7.1f} ms   (a plain requests loop: {plain * 1000:.1f} ms)")
        print(f"  Ctrl-C one second later returned after {run['ctrl_c'] * 1000:.0f} ms: {run['message']}")
        results.update(first_request_s=run["first"], ctrl_c_s=run["ctrl_c"])
        print("bookkeeping per item without HTTP (CPU, all threads):")
        for n in (10_000, 100_000):
            loop_us, batch_us = bookkeeping(n)
            print(f"  {n:>7,} items: ask_many {batch_us:6.1f} µs/item, plain loop {loop_us:6.1f} µs/item "
                  f"-> x{batch_us / loop_us:.2f}")
            results[n] = {"batch_us": batch_us, "loop_us": loop_us}
        print(f"  µs/item at 100,000 / at 10,000: x{results[100_000]['batch_us'] / results[10_000]['batch_us']:.2f} "
              "(flat is about 1)")
    finally:
        server.terminate()
        shell.run_line_magic("unload_ext", "vllm_magics")
    return results


if __name__ == "__main__":
    main()
