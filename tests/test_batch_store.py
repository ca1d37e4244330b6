"""Batches that survive: the JSONL answer store, resume, lazy results, retries, progress, the runner."""
from __future__ import annotations

import http.server
import json
import threading
import urllib.request

import pandas as pd
import pytest

from vllm_magics.ask.answer import Answer
from vllm_magics.ask.batch_store import (NOT_ANSWERED, AnswerStore, BatchProgress, BatchResults, answer_fields,
                                         is_transient, item_key, read_lines, run_to_store, with_retries)
from vllm_magics.ask.client import ChatClient, NoServer, ServerError
from vllm_magics.ask.request import AskError
from vllm_magics.errors import BadReply, TooSlow


def fields(text: str, error: str | None = None) -> dict:
    return answer_fields(Answer(text=text, error=error, finish_reason="stop", usage={"completion_tokens": 2}))


def test_store_lines_resume_and_a_torn_last_line(tmp_path):
    path = tmp_path / "b.jsonl"
    keys = [item_key([{"role": "user", "content": str(i)}], {"max_tokens": 4}, "m") for i in range(5)]
    assert len(set(keys)) == 5 and keys[0] == item_key([{"role": "user", "content": "0"}], {"max_tokens": 4}, "m")
    with AnswerStore(path) as store:
        store.write(0, keys[0], fields("zero"))
        store.write(1, keys[1], fields("", error="the server answered 503"))
        store.write(2, "stale-key", fields("two, for another input"))
        store.write(3, keys[3], fields("three"))
    with open(path, "ab") as f:
        f.write(b'{"i": 4, "key": "' + keys[4].encode() + b'", "text": "fo')  # the crash cut this line
    assert [r["i"] for _, r in read_lines(path)] == [0, 1, 2, 3]
    with AnswerStore(path) as store:
        assert list(store.done_mask(5, keys.__getitem__)) == [1, 0, 0, 1, 0]  # 1 failed, 2 changed, 4 torn
        assert list(store.done_mask(5)) == [1, 0, 1, 1, 0]  # without keys: any answer without error
        store.write(1, keys[1], fields("one, retried"))
    lines = path.read_bytes().splitlines()
    assert len(lines) == 5 and all(json.loads(line) for line in lines)  # the torn line was cut, not glued
    results = BatchResults(path, 5)
    assert [a.text for a in results] == ["zero", "one, retried", "two, for another input", "three", ""]
    assert results[4].error == NOT_ANSWERED and results[-2].text == "three" and results.answered == 4
    with pytest.raises(IndexError):
        results[5]


def test_hostile_lines_are_skipped(tmp_path):
    path = tmp_path / "b.jsonl"
    path.write_bytes(b'{"i": 0, "text": "ok", "usage": "nope", "elapsed": -5}\n'
                     b"not json\n[1, 2]\n" + b"[" * 50000 + b"\n"
                     b'{"i": -1, "text": "neg"}\n{"i": "1", "text": "str"}\n{"i": 99, "text": "beyond"}\n'
                     b'{"i": 1, "text": 7, "finish_reason": ["x"], "error": {"m": 1}}\n')
    results = BatchResults(path, 2)
    a0, a1 = list(results)
    assert (a0.text, a0.usage, a0.elapsed) == ("ok", None, 0.0)
    assert (a1.text, a1.finish_reason, a1.error) == ("7", None, "{'m': 1}")
    assert results.bad_lines == 1  # the line for index 99 of a 2-item batch


def test_results_to_frame_in_input_order(tmp_path):
    path = tmp_path / "b.jsonl"
    with AnswerStore(path) as store:
        for i in (2, 0, 1):
            store.write(i, None, fields(f'{{"n": {i}}}' if i != 1 else "oops"))
    df = pd.DataFrame({"q": ["a", "b", "c"]}, index=["x", "y", "z"])
    plain = BatchResults(path, 3).to_frame(df)
    assert list(plain["q"]) == ["a", "b", "c"] and list(plain["text"]) == ['{"n": 0}', "oops", '{"n": 2}']
    assert list(plain.index) == ["x", "y", "z"] and list(plain["completion_tokens"]) == [2, 2, 2]
    framed = BatchResults(path, 3).to_frame(df, schema={"type": "object", "properties": {"n": {"type": "integer"}}})
    assert framed["n"].tolist()[::2] == [0, 2] and framed["_error"].iloc[1].startswith("row 1: not JSON")


def raised(exc):
    """An AskError raised the way request.ask raises it: `from None`, the original kept as __context__."""
    try:
        try:
            raise exc
        except Exception:
            raise AskError("explained") from None
    except AskError as err:
        return err


def test_transient_policy():
    assert is_transient(ServerError("503", 503)) and is_transient(ServerError("429", 429))
    assert not is_transient(ServerError("400", 400)) and not is_transient(ServerError("500", 500))
    assert is_transient(NoServer("refused")) and is_transient(ConnectionResetError())
    assert is_transient(raised(ServerError("busy", 503))) and not is_transient(raised(ServerError("bad", 400)))
    assert not is_transient(ValueError("x"))


def chained(exc, context):
    """`exc` raised while `context` was being handled (Python keeps it as __context__)."""
    try:
        try:
            raise context
        except Exception:
            raise exc
    except Exception as err:
        return err


def test_a_reply_that_is_not_a_chat_servers_is_never_transient_whatever_it_came_from():
    import requests

    # The client raises these while handling a transport error (a read timed out, a line without end).
    assert not is_transient(chained(TooSlow("no complete reply within 600 s"), ConnectionResetError()))
    assert not is_transient(chained(BadReply("did not answer with a usable HTTP reply"), requests.ConnectionError()))
    assert not is_transient(raised(chained(TooSlow("no complete reply"), requests.exceptions.ChunkedEncodingError())))
    assert is_transient(raised(chained(NoServer("refused"), ConnectionRefusedError())))


def test_retries_back_off_and_are_counted():
    slept, calls = [], []
    progress = BatchProgress(1)

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ServerError("503: busy", 503)
        return "ok"

    assert with_retries(flaky, sleep=slept.append, jitter=lambda: 1.0, on_retry=progress.retried) == "ok"
    assert slept == [0.5, 1.0] and progress.retries == 2
    with pytest.raises(ServerError):
        with_retries(lambda: (_ for _ in ()).throw(ServerError("400", 400)), sleep=slept.append)
    assert slept == [0.5, 1.0]  # not transient: no wait, no second try
    calls.clear()
    with pytest.raises(ServerError):
        with_retries(lambda: calls.append(1) or (_ for _ in ()).throw(ServerError("503", 503)), attempts=4,
                     sleep=slept.append, jitter=lambda: 0.0, cap=0.6)
    assert len(calls) == 4 and slept[2:] == [0.25, 0.3, 0.3]  # half of min(cap, base*2^k) at jitter 0


def test_progress_figures():
    now = [0.0]
    p = BatchProgress(100, already_done=20, clock=lambda: now[0])
    assert p.snapshot()["seconds_left"] is None
    for _ in range(4):
        p.started()
    now[0] = 10.0
    p.finished(True, tokens=30)
    p.finished(False)
    s = p.snapshot()
    assert (s["done"], s["failed"], s["in_flight"], s["tokens_per_second"]) == (21, 1, 2, 3.0)
    assert s["seconds_left"] == pytest.approx(78 / 0.2)
    assert p.line() == "21 / 100 done · 1 failed · 2 in flight · 3 tokens/s · 6:30 left"


class FlakyChatServer(http.server.ThreadingHTTPServer):
    """A stand-in for a vLLM server behind a proxy that is briefly unavailable (guess: ngrok and Colab's
    port proxy answer 502/503 while the backend is busy or restarting; a real vLLM cannot be made to
    do it on demand). Its answers imitate vLLM 0.32's SSE shape (content deltas, a finish_reason, a
    usage chunk, [DONE]). Items whose prompt starts with "flaky" get a 503 on their first attempt;
    "broken" always gets vLLM's 400 body."""
    daemon_threads = True

    def __init__(self):
        self.seen: dict[str, int] = {}
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), FlakyHandler)


class FlakyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _send(self, status: int, body: bytes, ctype: str = "application/json"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self._send(200, b'{"data": [{"id": "stand-in"}]}')

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body["messages"][-1]["content"]
        with self.server.lock:
            self.server.seen[prompt] = self.server.seen.get(prompt, 0) + 1
            first = self.server.seen[prompt] == 1
        if prompt.startswith("broken"):
            return self._send(400, b'{"error": {"message": "bad request", "code": 400}}')
        if prompt.startswith("flaky") and first:
            return self._send(503, b'{"error": {"message": "busy", "code": 503}}')
        events = [{"choices": [{"delta": {"content": f"re: {prompt}"}}]},
                  {"choices": [{"delta": {}, "finish_reason": "stop"}]},
                  {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}]
        sse = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
        self._send(200, sse.encode(), "text/event-stream")


@pytest.fixture
def flaky_server():
    server = FlakyChatServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_runner_retries_transient_errors_and_keeps_the_rest(tmp_path, flaky_server):
    url = f"http://127.0.0.1:{flaky_server.server_address[1]}"
    prompts = ["a", "flaky 1", "broken", "b", "flaky 2"]
    messages = [[{"role": "user", "content": p}] for p in prompts]
    progress = BatchProgress(len(prompts))
    path = tmp_path / "b.jsonl"
    results = run_to_store(lambda: ChatClient(url), messages, {"max_tokens": 4}, path, model="stand-in",
                           concurrency=2, progress=progress, sleep=lambda s: None)
    assert [a.text for a in results] == ["re: a", "re: flaky 1", "", "re: b", "re: flaky 2"]
    assert "400" in results[2].error and results[1].completion_tokens == 2
    s = progress.snapshot()
    assert (s["done"], s["failed"], s["retries"], s["in_flight"]) == (4, 1, 2, 0)
    # Resume: only the failed item is asked again (and fails again); nothing else is re-sent.
    before = dict(flaky_server.seen)
    run_to_store(lambda: ChatClient(url), messages, {"max_tokens": 4}, path, model="stand-in", sleep=lambda s: None)
    assert {p: flaky_server.seen[p] - before[p] for p in prompts} == {p: int(p == "broken") for p in prompts}


# A full disk, for real: a child process whose file size limit (RLIMIT_FSIZE, setrlimit(2)) makes the
# kernel refuse a write past it with EFBIG, as a full disk refuses one with ENOSPC (both OSError).
FULL_DISK_CHILD = """
import resource, signal, sys
from vllm_magics.ask.batch_store import BatchProgress, BatchStoreError, run_to_store
from vllm_magics.ask.client import ChatClient

url, path = sys.argv[1], sys.argv[2]
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel's signal ends the process at the limit
resource.setrlimit(resource.RLIMIT_FSIZE, (700, 700))  # room for about three answer lines
messages = [[{"role": "user", "content": f"item {i}"}] for i in range(30)]
progress = BatchProgress(len(messages))
try:
    run_to_store(lambda: ChatClient(url), messages, {}, path, model="stand-in", concurrency=2, progress=progress)
    print("finished")
except BatchStoreError as exc:
    print("stopped:", exc)
print("in flight:", progress.in_flight, "asked:", progress.done + progress.failed)
"""


def test_a_full_disk_stops_the_batch_and_says_so(tmp_path, flaky_server):
    import subprocess
    import sys

    url = f"http://127.0.0.1:{flaky_server.server_address[1]}"
    path = tmp_path / "b.jsonl"
    out = subprocess.run([sys.executable, "-c", FULL_DISK_CHILD, url, str(path)], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    stopped, counts = out.stdout.splitlines()
    assert stopped.startswith(f"stopped: the batch stopped: its answers cannot be written to {path} (File too large)")
    assert counts.startswith("in flight: 0 ")  # every item taken was counted as finished
    written = BatchResults(path, 30).answered
    assert 1 <= written < int(counts.split()[-1]) < 30  # stopped early; what was written is readable


# -- the real server: 2,000 items, interrupted and resumed ----------------------------------------
def successes(server) -> float:
    """Requests vLLM finished (stop or length), from its Prometheus metrics."""
    with urllib.request.urlopen(f"{server.base_url}/metrics", timeout=30) as resp:
        text = resp.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("vllm:request_success_total") and
               ('finished_reason="stop"' in line or 'finished_reason="length"' in line))


@pytest.mark.server
@pytest.mark.timeout(1800)  # about 1 min on an idle rig; several vLLM servers sharing 2 cores make it 5x slower
def test_2000_items_interrupted_and_resumed_lose_nothing_and_repeat_nothing(tmp_path, smollm2_server):
    n = 2000
    # echo + continue_final_message: vLLM puts the assistant's start ("#17:") before what it writes,
    # so every stored answer says which item it answers. Tiny prompts and one-token answers: a short test
    # (a token more per answer is an engine step more per item: 4 tokens took the idle rig 2.6x as long).
    messages = [[{"role": "system", "content": "."}, {"role": "user", "content": "n"},
                 {"role": "assistant", "content": f"#{i}:"}] for i in range(n)]
    params = {"temperature": 0, "max_tokens": 1, "echo": True, "add_generation_prompt": False,
              "continue_final_message": True}
    path = tmp_path / "batch.jsonl"
    model = smollm2_server.plan.model

    def client():
        return ChatClient(smollm2_server.base_url, api_key=smollm2_server.api_key)

    before = successes(smollm2_server)
    stop, progress = threading.Event(), BatchProgress(n)

    def stop_midway():
        while progress.snapshot()["done"] < 500:
            threading.Event().wait(0.05)
        stop.set()

    threading.Thread(target=stop_midway, daemon=True).start()
    first = run_to_store(client, messages, params, path, model=model, concurrency=64, stop_event=stop,
                         progress=progress)
    assert 500 <= first.answered < n
    assert len(path.read_bytes().splitlines()) == first.answered  # every finished answer kept

    resumed = run_to_store(client, messages, params, path, model=model, concurrency=64)
    lines = [json.loads(line) for line in path.read_bytes().splitlines()]
    assert sorted(r["i"] for r in lines) == list(range(n))  # none lost, none answered twice
    assert successes(smollm2_server) - before == n  # and the server was asked each item exactly once
    assert len(resumed) == n and all(a.ok for a in resumed)
    assert all(a.text.startswith(f"#{i}:") for i, a in enumerate(resumed))  # in input order


# -- vllm run-batch output (ask/export.py): an untrusted file ----------------------------------------
def test_batch_output_without_n_reads_the_ids_seen_and_sizes_nothing_by_them(tmp_path):
    from vllm_magics.ask.export import read_batch_output

    def line(cid: str) -> str:  # the shape of `vllm run-batch` output (BatchRequestOutput)
        body = {"model": "m", "choices": [{"index": 0, "message": {"role": "assistant", "content": f"for {cid}"},
                                           "finish_reason": "stop"}]}
        return json.dumps({"id": "x", "custom_id": cid, "response": {"status_code": 200, "body": body},
                           "error": None}) + "\n"

    path = tmp_path / "out.jsonl"
    # "item-²" first: isdigit() says yes, int() says no (before the fix it raised, before allocating).
    path.write_text(line("item-²") + line("item-2") + line("item-999999999999") + line("item-0")
                    + line("item-" + "9" * 5000) + line("other-1"), encoding="utf-8")
    answers = read_batch_output(path)  # one entry per id seen, not 10^12
    assert [a.text for a in answers] == ["for item-0", "for item-2", "for item-999999999999"]
    assert [a.index for a in answers] == [0, 1, 2]
    assert len(read_batch_output(path, n=3)) == 3 and read_batch_output(path, n=3)[1].error  # n: gaps marked
