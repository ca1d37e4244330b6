"""Comparing answers (ask/compare.py) against a stand-in chat server on a real socket, and the views of
the result (notebook/views/compare.py). The real servers are in test_compare_real.py."""
from __future__ import annotations

import _thread
import http.server
import json
import threading

import pytest

from helpers import wait_until
from vllm_magics.ask.compare import CompareInterrupted, Target, compare, compare_each

ATTACK = ('<script>document.body.setAttribute("data-pwned", "script")</script>'
          '<img src=x onerror="document.body.setAttribute(\'data-pwned\', \'img\')">')


class SseStandIn:
    """An OpenAI-compatible chat server whose behaviour is picked by the model name. Streams have the
    shape of vLLM 0.32's (tests/fixtures/sse/vllm-0.32.0-cpu-reasoning-stream.txt: `delta.reasoning`
    then `delta.content`, a last chunk with finish_reason, a usage chunk with no choices, [DONE]);
    the 404 body is vLLM's for an unknown model (recorded on the rig with curl).

      echo-*   the answer "<model> heard: <last user message>" word by word
      reason   reasoning, then an answer
      system   the answer is the system message and the temperature it got
      hostile  model-written HTML in the reasoning and the answer (ATTACK)
      long     `repeat` words of answer
      hold     one word, then waits for `release` (counts clients that went away)
      missing  404: no such model
    """

    def __init__(self, repeat: int = 2000):
        self.release = threading.Event()
        self.held, self.gone, self.requests = [], [], []
        self.in_flight = self.max_in_flight = 0
        self.repeat = repeat
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                models = {"object": "list", "data": [{"id": "echo-a", "object": "model", "root": "echo-a",
                                                      "parent": None}]}
                self._send(200, json.dumps(models).encode(), "application/json")

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer.lock:
                    outer.requests.append(body)
                    outer.in_flight += 1
                    outer.max_in_flight = max(outer.max_in_flight, outer.in_flight)
                try:
                    outer.answer(self, body)
                finally:
                    with outer.lock:
                        outer.in_flight -= 1

            def _send(self, status, data, kind):
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self, handler, body):
        model, messages = body["model"], body["messages"]
        if model == "missing":
            error = {"error": {"message": f"The model `{model}` does not exist.", "type": "NotFoundError",
                               "param": "model", "code": 404}}
            return handler._send(404, json.dumps(error).encode(), "application/json")
        reasoning, text = "", f"{model} heard: {messages[-1]['content']}"
        if model == "reason":
            reasoning, text = "Let me think it over.", "Paris."
        elif model == "system":
            system = [m["content"] for m in messages if m["role"] == "system"]
            text = f"system={system} temperature={body.get('temperature')}"
        elif model == "hostile":
            reasoning, text = "Thinking " + ATTACK, "Answer " + ATTACK
        elif model == "long":
            text = "word " * self.repeat
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.end_headers()
        pieces = [("reasoning", w + " ") for w in reasoning.split(" ") if reasoning] + \
            [("content", w + " ") for w in text.split(" ")]
        for i, (field, piece) in enumerate(pieces):
            self._event(handler, model, {"choices": [{"index": 0, "delta": {field: piece}, "finish_reason": None}]})
            if model == "hold" and i == 1:
                self.held.append(model)
                return self._hold(handler.connection)
        self._event(handler, model, {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        self._event(handler, model, {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": len(pieces)}})
        handler.wfile.write(b"data: [DONE]\n\n")

    @staticmethod
    def _event(handler, model, fields):
        event = {"id": "chatcmpl-0", "object": "chat.completion.chunk", "created": 0, "model": model, **fields}
        handler.wfile.write(b"data: " + json.dumps(event).encode() + b"\n\n")
        handler.wfile.flush()

    def _hold(self, conn):
        import select
        import socket

        while not self.release.wait(0.02):
            if select.select([conn], [], [], 0)[0] and conn.recv(1, socket.MSG_PEEK) == b"":
                self.gone.append(conn)  # the client closed: vLLM would abort the request here
                return

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def sse():
    server = SseStandIn()
    yield server
    server.close()


def targets(server, *models, **extra):
    return [Target(m, server.url, "key", model=m, **extra) for m in models]


USER = [{"role": "user", "content": "Which city?"}]


# -- compare ----------------------------------------------------------------------------------------
def test_each_target_streams_into_its_own_answer_in_target_order(sse):
    seen, done = [], []
    result = compare(targets(sse, "echo-a", "reason", "echo-b"), USER, {"temperature": 0},
                     on_update=lambda j, a: seen.append((j, threading.current_thread().name)),
                     on_done=lambda j, a: done.append(j))
    assert result.labels == ["echo-a", "reason", "echo-b"]
    assert [a.text.strip() for a in result] == ["echo-a heard: Which city?", "Paris.", "echo-b heard: Which city?"]
    assert result[1].reasoning.strip() == "Let me think it over." and result[1].reasoning_source == "reasoning"
    assert all(a.ok and a.completion_tokens and a.ttft is not None and a.tokens_per_second for a in result)
    assert {j for j, _ in seen} == {0, 1, 2} and sorted(done) == [0, 1, 2]
    assert all(name == "vllm-magics-compare" for _, name in seen)  # each column in its own thread
    assert all(r["temperature"] == 0 and r["stream"] for r in sse.requests)
    assert "=== reason ===" in repr(result) and "Paris." in repr(result)


def test_a_failing_target_keeps_its_error_and_the_others_go_on(sse):
    dead = Target("nobody", "http://127.0.0.1:9", model="x", timeout=5)
    result = compare(targets(sse, "echo-a", "missing") + [dead], USER, {})
    assert result[0].ok and result[0].text.startswith("echo-a heard")
    assert "unknown model (404)" in result[1].error and "`missing` does not exist" in result[1].error
    assert "nothing answers at http://127.0.0.1:9" in result[2].error
    assert "error: " not in repr(result[0])


def test_system_and_params_variants_of_one_model(sse):
    conversation = [{"role": "system", "content": "the notebook's"}] + USER
    variants = [Target("as is", sse.url, model="system"),
                Target("pirate", sse.url, model="system", system="You are a pirate.", params={"temperature": 1.5})]
    plain, pirate = compare(variants, conversation, {"temperature": 0})
    assert plain.text.strip() == "system=[\"the notebook's\"] temperature=0"
    assert pirate.text.strip() == "system=['You are a pirate.'] temperature=1.5"  # replaced, not added


def test_ctrl_c_stops_every_target_and_keeps_what_arrived(sse):
    def interrupt_when_held():
        if wait_until(lambda: sse.held, 30, interval=0.02):
            _thread.interrupt_main()

    threading.Thread(target=interrupt_when_held, daemon=True).start()
    with pytest.raises(CompareInterrupted) as caught:
        compare(targets(sse, "echo-a", "hold"), USER, {})
    fast, held = caught.value.result
    assert fast.ok and fast.text.startswith("echo-a heard")
    assert held.interrupted and held.text.strip() == "hold heard:" and not held.streaming
    assert wait_until(lambda: sse.gone, 10)  # the request was cut: the server saw the client go


# -- compare_each -----------------------------------------------------------------------------------
def test_each_item_gets_a_row_with_one_column_per_target(sse):
    from vllm_magics.errors import VllmMagicsError

    prepared = []

    def prepare(item):
        prepared.append(item)
        if item == "q3":
            raise VllmMagicsError("item 3: no field `x`")
        return item, [{"role": "user", "content": item}]

    items = [f"q{i}" for i in range(9)]
    table = compare_each(targets(sse, "echo-a", "echo-b"), items, prepare, {}, concurrency=3)
    assert prepared == items  # once per item, in order
    assert sse.max_in_flight <= 3 and len(sse.requests) == 16
    assert [[a.text.strip() for a in row] for row in table.rows if row[0].ok] == [
        [f"echo-a heard: q{i}", f"echo-b heard: q{i}"] for i in range(9) if i != 3]
    assert [a.error for a in table.rows[3]] == ["item 3: no field `x`"] * 2
    assert table.prompts[0] == "q0" and table.column("echo-b")[8].text.strip() == "echo-b heard: q8"
    frame = table.to_frame()
    assert list(frame.columns) == ["prompt", "echo-a", "echo-b"] and len(frame) == 9
    assert frame["echo-b"][2].strip() == "echo-b heard: q2"
    assert compare_each(targets(sse, "echo-a"), [], prepare, {}).rows == []


def test_ctrl_c_during_each_keeps_the_rows_started(sse):
    def interrupt_when_held():
        if wait_until(lambda: sse.held, 30, interval=0.02):
            _thread.interrupt_main()

    threading.Thread(target=interrupt_when_held, daemon=True).start()
    items = ["a", "b", "c", "d"]
    with pytest.raises(CompareInterrupted) as caught:
        compare_each(targets(sse, "echo-a", "hold"), items, lambda s: (s, [{"role": "user", "content": s}]), {},
                     concurrency=2)
    table = caught.value.result
    assert table.total == 4 and 1 <= len(table.rows) < 4
    assert table.rows[0][1].interrupted and table.rows[0][1].text.strip() == "hold heard:"
    assert "items not asked" in table.text_view()


# -- views ------------------------------------------------------------------------------------------
def test_the_view_escapes_model_output_and_shows_each_column(sse):
    from vllm_magics.notebook.views.compare import compare_bundle

    result = compare(targets(sse, "hostile", "reason"), USER, {})
    bundle = compare_bundle(result)
    html = bundle["text/html"]
    assert "<script>document" not in html and "<img src=x" not in html
    assert "&lt;script&gt;" in html and html.count('class="vm-cmp-col') == 2
    assert html.count('<details class="vm-reasoning">') == 2  # collapsed: no `open`
    assert "first token" in html and "tokens/s" in html
    assert "=== hostile ===" in bundle["text/plain"]


def test_the_table_view_is_bounded(sse):
    from vllm_magics.ask.compare import CompareTable
    from vllm_magics.ask.answer import Answer
    from vllm_magics.notebook.views.compare import TABLE_ROWS, compare_table_html

    rows = [[Answer(text=f"a{i} " + ATTACK), Answer(text="b" * 50_000)] for i in range(500)]
    table = CompareTable(["A", "B"], [f"prompt {i}" for i in range(500)], rows, 600)
    html = compare_table_html(table)
    assert f"a{TABLE_ROWS - 1} " in html and f"a{TABLE_ROWS} " not in html
    assert f"{500 - TABLE_ROWS} more rows" in html and "500 of 600 items" in html
    assert len(html) < 200_000 and "<script>document" not in html


class RecordingSink:
    def __init__(self):
        self.outputs, self.sent = [], []

    def show(self, bundle):
        self.outputs.append(bundle)
        self.sent.append(len(bundle["text/html"]))
        sink, i = self, len(self.outputs) - 1

        class Handle:
            def update(self, bundle, raw=False):
                sink.outputs[i] = bundle
                sink.sent.append(len(bundle["text/html"]))
        return Handle()


def test_live_view_redraws_are_throttled_and_each_costs_the_same_at_any_length(monkeypatch):
    from vllm_magics.ask.answer import Answer
    from vllm_magics.ask.reasoning import ReasoningSplitter
    from vllm_magics.notebook.views import compare as view

    clock = [100.0]
    monkeypatch.setattr(view.time, "monotonic", lambda: clock[0])
    sink = RecordingSink()
    live = view.LiveCompare(["A", "B"], notebook=True, updates_per_second=10, sink=sink)
    answers = [Answer(streaming=True), Answer(streaming=True)]
    for a in answers:
        a.live = ReasoningSplitter()
    for step in range(20_000):  # 20,000 tokens per column, 2 ms apart
        for j, a in enumerate(answers):
            a.live.feed({"content": f"w{step} " + (ATTACK if step == 19_999 else "")})
            live.update(j, a)
        live.tick()
        clock[0] += 0.002
    assert live.updates == pytest.approx(400, abs=5)  # 40 s at 10 per second, not one per token
    assert live.snapshots <= 2 * live.updates + 4
    for j, a in enumerate(answers):  # what compare's on_done does as each column ends
        live.done(j, a)
    clock[0] += 1
    live.tick()
    assert max(sink.sent) < 3 * view.LIVE_TAIL + 8000  # the tails, not 150 KB of answer
    last = sink.outputs[0]["text/html"]
    assert "w19998" in last and "w10 " not in last and "&lt;script&gt;" in last and "<script>document" not in last


def test_live_view_in_a_terminal_prints_each_column_once(capsys):
    from vllm_magics.ask.answer import Answer
    from vllm_magics.ask.compare import Comparison
    from vllm_magics.notebook.views.compare import LiveCompare

    live = LiveCompare(["A", "B"], notebook=False)
    a = Answer(text="first", ended_at=1.0, model="m")
    live.done(0, a)
    live.tick()
    live.tick()
    live.finish(Comparison([a, Answer(text="second", error="boom")], ["A", "B"]))
    out = capsys.readouterr().out
    assert out.count("[A] done") == 1 and "=== B ===" in out and "! boom" in out


def test_formatters_are_registered_by_name(shell):
    from vllm_magics.ask.answer import Answer
    from vllm_magics.ask.compare import Comparison
    from vllm_magics.notebook.views.compare import register_compare_formatters, unregister_compare_formatters

    register_compare_formatters(shell)
    try:
        data, _ = shell.display_formatter.format(Comparison([Answer(text="hi " + ATTACK)], ["A"]))
        assert 'class="vm-cmp-col' in data["text/html"] and "<script>document" not in data["text/html"]
    finally:
        unregister_compare_formatters(shell)
    data, _ = shell.display_formatter.format(Comparison([Answer(text="hi")], ["A"]))
    assert "text/html" not in data
