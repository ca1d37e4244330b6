"""%%ask's parts that need no server: templates, conversations, the Answer views, error wording."""
import pytest
from IPython.core.error import UsageError

from standins.chat_server import ChatStandIn, serving
from vllm_magics.ask.answer import Answer, AnswerList
from vllm_magics.ask.client import ChatClient, NoServer, ServerError, error_message, iter_sse
from vllm_magics.ask.prompt import Conversations, PromptTemplate, TemplateError, build_messages, render_prompt
from vllm_magics.ask.request import explain
from vllm_magics.notebook.views.answer_view import (answer_bundle, answer_html, answer_list_bundle,
                                                    register_answer_formatters, unregister_answer_formatters)


def test_template_reads_the_namespace():
    assert render_prompt("Capital of {{ country }}?", {"country": "France"}) == "Capital of France?"
    assert render_prompt("{% for x in xs %}- {{ x }}\n{% endfor %}", {"xs": [1, 2]}) == "- 1\n- 2\n"


def test_undefined_name_is_named():
    with pytest.raises(TemplateError, match="'missing_var'"):
        render_prompt("Summarise {{ missing_var }}", {})


@pytest.mark.parametrize("code", [
    'd = {"a": {"b": 1}}',
    "print(f'{x!r} {y}') is fine, and so is `f'{x!r} {{literal}}'`",
    "```python\nprint(f'{{x}}')\n```\n{{ name }}",
    "JSON: [{\"k\": {\"v\": [1, 2]}}]",
    "echo ${#array[@]} {#not a comment#}",
    "`{{ not_templated }}` but {{ name }}",
])
def test_code_and_braces_pass_through(code):
    out = render_prompt(code, {"name": "N", "x": 1})
    for keep in ('{"a": {"b": 1}}', "{{literal}}", "print(f'{{x}}')", '[{"k": {"v": [1, 2]}}]',
                 "${#array[@]} {#not a comment#}", "`{{ not_templated }}`"):
        if keep in code:
            assert keep in out
    if "{{ name }}" in code.replace("`{{ not_templated }}`", ""):
        assert "N" in out


def test_bad_template_syntax_says_so():
    with pytest.raises(TemplateError, match="not a valid template"):
        render_prompt("{% for %}", {})


def test_conversations_keep_answers_not_reasoning():
    convs = Conversations()
    a = Answer(text="Paris.", reasoning="The user asks about France...")
    convs.record("geo", "Capital of France?", a)
    msgs = build_messages("And Italy?", "Be brief.", convs.history("geo"))
    assert msgs == [{"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Capital of France?"},
                    {"role": "assistant", "content": "Paris."},
                    {"role": "user", "content": "And Italy?"}]
    assert convs.last == "geo" and convs.reset("geo") == 1 and convs.history("geo") == []


def test_answer_views_and_warnings():
    a = Answer(text="**Paris** <script>x</script>", reasoning="Think <b>", model="m", finish_reason="length",
               usage={"prompt_tokens": 5, "completion_tokens": 7}, request={"max_tokens": 7})
    a.first_token_at = a.started_at + 0.05
    a.ended_at = a.started_at + 1.05
    bundle = answer_bundle(a)
    assert set(bundle) == {"text/plain", "text/markdown", "text/html"}
    html = bundle["text/html"]
    assert "<strong>Paris</strong>" in html and "<script>x" not in html and "Think &lt;b&gt;" in html
    assert "<details class=\"vm-reasoning\">" in html  # collapsed once the answer is there
    assert "max_tokens (7)" in bundle["text/plain"] and "7.0 tokens/s" in bundle["text/plain"]
    assert "first token 50 ms" in bundle["text/plain"]
    assert str(a) == a.text
    live = Answer(reasoning="thinking", streaming=True)
    assert "<details class=\"vm-reasoning\" open>" in answer_html(live)


def test_answer_list_views():
    answers = AnswerList([Answer(text="A", prompt="p0"), Answer(error="boom", prompt="p1")])
    assert "[0] ok: A" in repr(answers) and "[1] error: boom" in repr(answers)
    assert "boom" in answer_list_bundle(answers)["text/html"] and answers.texts == ["A", ""]


def test_error_wording_matches_vllms_bodies():
    c = ChatClient("http://127.0.0.1:1/v1")
    assert c.base_url == "http://127.0.0.1:1"
    assert "nothing answers" in explain(NoServer("x"), c)
    # vLLM's 401 body is a plain string, unlike its other errors.
    assert "refused the API key" in explain(ServerError("", 401, {"error": "Unauthorized"}), c)
    body404 = {"error": {"message": "The model `nope` does not exist.", "type": "NotFoundError", "param": None,
                         "code": 404}}
    assert "The model `nope` does not exist. Use --model" in explain(ServerError("", 404, body404), c)
    body400 = {"error": {"message": "This model's maximum context length is 8192 tokens. However, you "
                                    "requested 9000 tokens.", "type": "BadRequestError", "code": 400}}
    assert "does not fit the model's context" in explain(ServerError("", 400, body400), c)
    assert error_message(404, {"detail": "Not Found"}) == "Not Found"


def test_sse_parsing_stops_at_done_and_skips_noise():
    lines = [b": keep-alive", b"", b'data: {"a": 1}', b"event: x", b'data: {"b": 2}', b"data: [DONE]",
             b'data: {"c": 3}']
    assert list(iter_sse(lines)) == [{"a": 1}, {"b": 2}]


# -- prompt templates: compiled once, only the names they read, no placeholder collisions ----------
@pytest.mark.parametrize("cell, value, expected", [
    # a value that looks like the old "\x00VM<n>\x00" marker (it raised IndexError), the cell holding one
    ("`code` then {{ v }}", "\x00VM0\x00 and \x00VM7\x00", "`code` then \x00VM0\x00 and \x00VM7\x00"),
    ("\x00VM3\x00 `code` {{ v }}", "x", "\x00VM3\x00 `code` x"),
    ("```\n{{ kept }}\n``` {{ v }} \x000\x00", "\x00VM0\x00", "```\n{{ kept }}\n``` \x00VM0\x00 \x000\x00"),
])
def test_template_text_that_looks_like_a_placeholder_passes_through(cell, value, expected):
    assert render_prompt(cell, {"v": value}) == expected


def test_raw_blocks_keep_their_code():
    cell = "{% raw %}Use `{{ x }}` in {{ y }}{% endraw %} and ```\n{% raw %}\n``` {{ v }}"
    assert render_prompt(cell, {"v": "V"}) == "Use `{{ x }}` in {{ y }} and ```\n{% raw %}\n``` V"


def test_template_reads_only_the_names_it_uses():
    class Namespace(dict):  # a user namespace that counts lookups
        reads = 0

        def __getitem__(self, key):
            Namespace.reads += 1
            return super().__getitem__(key)

    ns = Namespace({f"var{i}": i for i in range(1000)}, country="France")
    template = PromptTemplate("Capital of {{ country }}, item {{ item }}? {% for i in range(2) %}{{ i }}{% endfor %}")
    assert template.names == {"country", "item"} and template.missing(ns, provided=("item",)) == []
    assert template.missing({}, provided=("item",)) == ["country"]
    assert template.render(ns, item=3) == "Capital of France, item 3? 01" and Namespace.reads == 1


# -- views: Answer is data; the notebook's formatters show it ------------------------------------
def test_answer_is_data_and_the_shell_formats_it():
    from IPython.core.interactiveshell import InteractiveShell

    assert not hasattr(Answer, "_repr_mimebundle_") and not hasattr(AnswerList, "_repr_mimebundle_")
    shell = InteractiveShell.instance()
    a = Answer(text="**hi** <script>", reasoning="r")
    a.ended_at = a.started_at + 1  # a fixed footer: repr is compared below
    register_answer_formatters(shell)
    try:
        data, _ = shell.display_formatter.format(a)
        assert "<strong>hi</strong> &lt;script&gt;" in data["text/html"] and data["text/plain"] == repr(a)
        assert "> **Reasoning**" in data["text/markdown"]
        table, _ = shell.display_formatter.format(AnswerList([a]))
        assert "vm-batch" in table["text/html"]
    finally:
        unregister_answer_formatters(shell)
    assert "text/html" not in shell.display_formatter.format(a)[0]


def test_a_big_batch_shows_a_bounded_table():
    answers = AnswerList(Answer(text="x" * 5000, prompt=f"p{i}", index=i) for i in range(2000))
    answers[3].error = "boom"
    bundle = answer_list_bundle(answers)
    assert bundle["text/html"].count("<tr>") <= 52 and "1950 more" in bundle["text/html"]
    assert "2000 answers: 1999 ok, 1 failed" in bundle["text/html"]
    assert len(bundle["text/plain"].splitlines()) <= 52 and len(bundle["text/html"]) < 400_000


# -- the live view: each update costs what changed ------------------------------------------------
class RecordingSink:
    """Stands in for IPython's display: keeps each output's current bundle and the size of every send."""

    def __init__(self):
        self.outputs, self.sent, self.last = [], [], None

    def show(self, bundle):
        self.outputs.append(bundle)
        self.sent.append(sum(map(len, bundle.values())))
        self.last = bundle
        sink, i = self, len(self.outputs) - 1

        class Handle:
            def update(self, bundle, raw=False):
                sink.outputs[i] = sink.last = bundle
                sink.sent.append(sum(map(len, bundle.values())))
        return Handle()


def stream_into_live_view(text, reasoning="", piece=401):
    from vllm_magics.ask.reasoning import ReasoningSplitter
    from vllm_magics.notebook.views.live import LiveAnswer

    sink = RecordingSink()
    live = LiveAnswer(True, updates_per_second=1e9, sink=sink)  # no throttle: every piece is drawn
    answer = live.answer
    answer.live = splitter = ReasoningSplitter()
    for field, body in (("reasoning", reasoning), ("content", text)):
        for i in range(0, len(body), piece):
            splitter.feed({field: body[i:i + piece]})
            live.update(answer)
    return live, sink, splitter


LONG = "".join(f"Paragraph {i} with **bold** and `code`.\n\n- a list item {i}\n\n" for i in range(1200)) + \
    "```python\n" + "".join(f"x_{i} = {i}  # a line of a long code block\n" for i in range(600)) + "```\nEnd.\n"


def test_streaming_updates_stay_small_and_lose_nothing():
    live, sink, splitter = stream_into_live_view(LONG, reasoning="I think. " * 3000)
    assert len(LONG) > 90_000 and max(sink.sent) < 60_000  # about the size of one segment, not the answer
    segments = [o["text/plain"] for o in sink.outputs]
    assert "".join(segments) == ("I think. " * 3000) + LONG  # the cuts lose and repeat nothing
    code = [o["text/html"] for o in sink.outputs if "x_300 = 300" in o["text/plain"] or "x_500" in o["text/plain"]]
    assert code and all("vm-codeblock" in html for html in code)  # a cut code block stays code

    splitter.finish()
    live.answer.text, live.answer.reasoning, live.answer.live = splitter.answer, splitter.reasoning, None
    live.finish(live.answer)
    final = sink.outputs[0]["text/html"]
    assert "Paragraph 1199" in final and "x_599" in final and '<details class="vm-reasoning">' in final
    assert all(o == {"text/plain": "", "text/html": ""} for o in sink.outputs[1:])
    assert sink.last is sink.outputs[0]  # the card is sent last: a frontend's final message is the answer


def test_the_throttle_counts_from_the_end_of_a_draw(monkeypatch):
    from vllm_magics.ask.reasoning import ReasoningSplitter
    from vllm_magics.notebook.views import live as live_mod

    clock = [100.0]
    monkeypatch.setattr(live_mod.time, "monotonic", lambda: clock[0])

    class SlowSink(RecordingSink):  # each draw takes 0.5 s of (fake) time: longer than the 1/15 s gap
        def show(self, bundle):
            clock[0] += 0.5
            return super().show(bundle)

    live = live_mod.LiveAnswer(True, updates_per_second=15, sink=SlowSink())
    live.answer.live = splitter = ReasoningSplitter()
    for _ in range(20):  # events arriving with no time passing between them
        splitter.feed({"content": "word "})
        live.update(live.answer)
    assert live.updates == 1
    clock[0] += 1 / 15
    splitter.feed({"content": "more"})
    live.update(live.answer)
    assert live.updates == 2


# -- batches: lazy prompts, input order, Ctrl-C that does not wait for the server -------------------
@pytest.fixture
def chat_server():
    yield from serving(ChatStandIn())


def test_batch_sends_while_prompts_are_still_being_made_and_keeps_order(chat_server):
    from vllm_magics.ask.batch import ask_many

    def prepare(i):
        chat_server.log.append(("prepare", i))
        if i == 5:
            raise TemplateError("item 5 has no such field")
        return f"q{i}", build_messages(f"q{i}")

    answers = ask_many(lambda: ChatClient(chat_server.url), list(range(40)), prepare, {}, model="m",
                       concurrency=4, stream=False)
    assert [a.index for a in answers] == list(range(40)) and answers.total == 40
    assert [a.text for a in answers if a.index != 5] == [f"echo q{i}" for i in range(40) if i != 5]
    assert answers[5].error == "item 5 has no such field" and answers.finished == 40
    assert chat_server.log.index(("request", "q0")) < chat_server.log.index(("prepare", 39))


def test_ctrl_c_on_a_no_stream_batch_keeps_the_finished_answers(shell, chat_server):
    import _thread
    import threading

    from helpers import wait_until

    shell.user_ns["items"] = ["a", "b", "c", "slow 1", "slow 2", "d", "e"]

    def interrupt_once_two_are_held():
        if wait_until(lambda: len(chat_server.held) == 2, 60, interval=0.02):
            _thread.interrupt_main()

    threading.Thread(target=interrupt_once_two_are_held, daemon=True).start()
    # The held requests never end on their own: waiting for them (the old pool shutdown) would hang here.
    with pytest.raises(UsageError, match=r"interrupted: 3 of 7 answers finished; they are kept in _ask and got"):
        shell.run_cell_magic("ask", f"--each items --no-stream --concurrency 2 --url {chat_server.url}/v1 "
                                    "--model m --out got", "{{ item }}")
    got = shell.user_ns["got"]
    assert got is shell.user_ns["_ask"] and got.total == 7
    assert [a.text for a in got[:3]] == ["echo a", "echo b", "echo c"] and all(a.ok for a in got[:3])
    assert [a.interrupted for a in got[3:5]] == [True, True] and "slow" in got[3].prompt
    assert got.summary() == "7 answers: 3 ok, 2 interrupted, 2 not asked"
    assert wait_until(lambda: len(chat_server.gone) == 2, 30)  # both held requests were cut, not left running


def test_after_ctrl_c_the_segments_stay_and_nothing_long_is_rendered():
    live, sink, splitter = stream_into_live_view(LONG)
    splitter.finish()
    answer = live.answer
    answer.text, answer.interrupted, answer.live = splitter.answer, True, None
    sent_before = len(sink.sent)
    live.finish(answer, whole=False)
    assert max(sink.sent[sent_before:]) < 60_000  # no render of the whole (100 KB) answer
    assert sink.outputs[-1]["text/plain"].startswith("Interrupted: this is the part that arrived")
    assert "End." in sink.outputs[-2]["text/plain"] and "vm-cursor" not in sink.outputs[-2]["text/html"]
    assert "".join(o["text/plain"] for o in sink.outputs[:-1]) == LONG


def test_hidden_reasoning_is_one_status_line_and_not_in_the_card():
    from vllm_magics.ask.reasoning import ReasoningSplitter
    from vllm_magics.notebook.views.live import LiveAnswer

    sink = RecordingSink()
    live = LiveAnswer(True, hide_reasoning=True, updates_per_second=1e9, sink=sink)
    live.answer.live = splitter = ReasoningSplitter()
    for i in range(50):
        splitter.feed({"reasoning": f"secret thought {i} "})
        live.answer.reasoning_chunks += 1
        live.update(live.answer)
    splitter.feed({"content": "The answer."})
    live.update(live.answer)
    assert len(sink.outputs) == 2 and "thinking… ≥50 tokens" in sink.outputs[0]["text/plain"]
    assert not any("secret" in str(o) for o in sink.outputs)
    splitter.finish()
    live.answer.text, live.answer.reasoning, live.answer.live = splitter.answer, splitter.reasoning, None
    live.finish(live.answer)
    assert "secret" not in str(sink.outputs[0]) and "The answer." in sink.outputs[0]["text/html"]
    assert live.answer.reasoning.startswith("secret thought 0")  # still on the answer itself


def test_batch_workers_close_their_clients_when_they_end(chat_server):
    from vllm_magics.ask.batch import ask_many

    made = []

    def factory():
        made.append(ChatClient(chat_server.url))
        return made[-1]

    answers = ask_many(factory, list(range(6)), lambda i: (f"q{i}", build_messages(f"q{i}")), {}, model="m",
                       concurrency=3, stream=False)
    assert all(a.ok for a in answers) and 1 <= len(made) <= 3
    # Session.close() empties each adapter's pools: no keep-alive socket waits for garbage collection.
    assert [len(a.poolmanager.pools) for c in made for a in dict.fromkeys(c.session.adapters.values())] == \
        [0] * len(made)


def test_a_failing_progress_callback_is_one_answers_error_not_a_dead_worker(chat_server, monkeypatch):
    import threading

    from vllm_magics.ask.batch import ask_many

    uncaught = []
    monkeypatch.setattr(threading, "excepthook", uncaught.append)

    def on_answer(answer):
        if answer.index == 1:
            raise RuntimeError("the display broke")

    answers = ask_many(lambda: ChatClient(chat_server.url), list(range(5)),
                       lambda i: (f"q{i}", build_messages(f"q{i}")), {}, model="m", concurrency=1, stream=False,
                       on_answer=on_answer)
    assert len(answers) == 5 and uncaught == []  # the one worker went on to the end
    assert answers[1].text == "echo q1" and answers[1].error == "after the answer: RuntimeError: the display broke"
    assert [a.ok for a in answers] == [True, False, True, True, True]


def test_ctrl_c_while_the_workers_start_stops_those_already_asking(monkeypatch):
    """Thread.start() waits for its thread: a Ctrl-C there (a loaded machine makes it likely) used to
    leave run() before its handler, with the first worker still asking unseen. The second start here is
    interrupted once the first worker's job is in flight."""
    import threading

    from helpers import ctrl_c_inside_thread_start
    from vllm_magics.ask import workers

    asking, cut = threading.Event(), threading.Event()

    def do(job, client):
        asking.set()
        job.answer.text = "half an answer"
        if stop.wait(30):  # a held request, cut by the engine
            cut.set()

    jobs = iter([workers.Job(Answer(streaming=True)) for _ in range(3)])
    stop = threading.Event()
    ctrl_c_inside_thread_start(monkeypatch, lambda thread, n: n == 2, asking.is_set, thread_runs_first=False)
    snapshots = workers.run(lambda: next(jobs, None), do, 3, lambda job: None, stop)
    assert stop.is_set() and cut.wait(30)  # the first worker was told to stop
    assert [(a.text, a.interrupted) for _, a in snapshots] == [("half an answer", True)]


def test_the_snapshot_at_ctrl_c_reads_the_growing_text_without_rewriting_it():
    """str() of a GrowingText joins and replaces its pieces: from the main thread, while the worker
    appends, a piece could be lost. The snapshot must only read."""
    from vllm_magics.ask.reasoning import GrowingText, ReasoningSplitter
    from vllm_magics.ask.workers import snapshot

    class ReadOnly(GrowingText):
        def __str__(self):
            raise AssertionError("joined (rewritten) from another thread")

    splitter = ReasoningSplitter()
    splitter.answer_text, splitter.reasoning_text = ReadOnly(), ReadOnly()
    for piece in ("Par", "is", "."):
        splitter.answer_text.append(piece)
    splitter.reasoning_text.append("Think")
    answer = Answer(streaming=True, live=splitter)
    cut = snapshot(answer, now=answer.started_at + 1)
    assert (cut.text, cut.reasoning, cut.interrupted, cut.streaming, cut.live) == ("Paris.", "Think", True, False, None)
    assert answer.live is splitter and answer.ended_at is None  # the worker's answer is left alone


def test_cutting_a_tls_socket_leaves_it_whole_for_the_thread_reading_it():
    """ssl.SSLSocket.shutdown() sets `_sslobj` to None (CPython Lib/ssl.py): a worker thread inside
    recv() on it would then fail oddly. The plain socket's shutdown wakes the reader and keeps it whole."""
    import socket
    import ssl

    from vllm_magics.ask.sockets import OpenSockets

    a, b = socket.socketpair()
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).wrap_socket(a, server_hostname="x", do_handshake_on_connect=False)
    try:
        sockets = OpenSockets()
        sockets._add(tls)
        assert sockets.shutdown_all() == 1
        assert tls._sslobj is not None
        assert b.recv(1) == b""  # the other end saw it go
    finally:
        tls.close()
        b.close()


def test_a_batch_keeps_its_key_in_no_variable_of_its_own(shell, chat_server, monkeypatch):
    """With `%xmode Verbose` or a debugger, frame variables are shown: the key must not be one (it goes
    with the client's headers, copied)."""
    import sys
    import threading

    from helpers import wait_until

    key = "sk-batch-secret-5a4b3c2d1e"
    monkeypatch.setenv("STANDIN_KEY", key)
    shell.user_ns["items"] = ["slow one"]
    main, found = threading.get_ident(), []

    def look_while_held():  # the main thread's stack, while its batch waits for the server
        if wait_until(lambda: chat_server.held, 60, interval=0.02):
            frame = sys._current_frames()[main]
            while frame is not None:
                ours = "vllm_magics" in frame.f_code.co_filename.replace("\\", "/").split("/")
                for name, value in list(frame.f_locals.items()) if ours else ():
                    cells = getattr(value, "__closure__", None) or ()
                    for v in [value, *(c.cell_contents for c in cells if c.cell_contents is not None)]:
                        if isinstance(v, str) and key in v:
                            found.append(f"{frame.f_code.co_name}: {name}")
                frame = frame.f_back
        chat_server.release.set()

    threading.Thread(target=look_while_held, daemon=True).start()
    shell.run_cell_magic("ask", f"--each items --no-stream --url {chat_server.url}/v1 --api-key-env STANDIN_KEY "
                                "--model m", "{{ item }}")
    assert chat_server.keys == [f"Bearer {key}"]  # the workers' clients send it
    assert found == []
