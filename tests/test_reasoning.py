"""The reasoning/answer splitter against recorded streams and every way a stream can be cut."""
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import FIXTURES
from vllm_magics.ask.client import iter_sse
from vllm_magics.ask.reasoning import ReasoningSplitter

SSE = FIXTURES / "sse"


def split_recording(name):
    splitter = ReasoningSplitter()
    finish = usage = None
    lines = (SSE / name).read_bytes().splitlines()
    for event in iter_sse(lines):
        usage = event.get("usage") or usage
        for choice in event["choices"]:
            splitter.feed(choice["delta"])
            finish = choice.get("finish_reason") or finish
    splitter.finish()
    return splitter, finish, usage


def test_vllm_0_32_reasoning_field():
    s, finish, usage = split_recording("vllm-0.32.0-cpu-reasoning-stream.txt")
    assert (s.reasoning, s.answer, s.source) == ("I think.", "The answer.", "reasoning")
    assert finish == "stop" and usage["completion_tokens"] == 13


def test_server_without_reasoning_parser_gives_think_tags_in_content():
    s, finish, _ = split_recording("vllm-0.32.0-cpu-think-tags-stream.txt")
    assert (s.reasoning, s.answer, s.source) == ("I think.", "The answer.", "tags")


def test_older_vllm_reasoning_content_field():
    s, _, _ = split_recording("vllm-0.7.2-reasoning-content-stream.txt")
    assert s.source == "reasoning_content"
    assert s.reasoning == "\nAlright.\n" and s.answer == ""
    s.feed({"content": "9.11 is smaller."})
    assert s.answer == "9.11 is smaller." and s.reasoning_done


def feed_all(chunks, field="content"):
    s = ReasoningSplitter()
    for c in chunks:
        s.feed({field: c})
    s.finish()
    return s.reasoning, s.answer


def test_output_that_begins_inside_the_reasoning():
    # vLLM 0.7.2 with DeepSeek-R1-Distill, as reported in vllm-project/vllm#12999: no <think>, only </think>.
    text = ("Alright, the user just said \"hello.\" That's a friendly greeting.\n</think>\n\n"
            "Hello! How can I assist you today?")
    assert feed_all([text]) == ("Alright, the user just said \"hello.\" That's a friendly greeting.",
                                "Hello! How can I assist you today?")


def test_open_tag_missing_close_and_plain_answers():
    assert feed_all(["<think>\nstill thinking when max_tokens hit"]) == ("still thinking when max_tokens hit", "")
    assert feed_all(["No tags here, 3 < 4 and x</"]) == ("", "No tags here, 3 < 4 and x</")
    assert feed_all(["\n<think>a</think>b"]) == ("a", "b")


def test_a_tag_after_answer_text_is_just_text():
    # Once the answer has started, a later <think> is content (the model quoting the tag).
    assert feed_all(["Use the ", "<think>", " tag"]) == ("", "Use the <think> tag")


def test_fields_win_over_tags():
    s = ReasoningSplitter()
    s.feed({"reasoning": "hmm"})
    s.feed({"content": "Answer with a literal </think> inside"})
    s.finish()
    assert (s.reasoning, s.answer) == ("hmm", "Answer with a literal </think> inside")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=40), max_size=12))
def test_any_chunking_gives_the_same_split(cuts):
    for text, expected in [
        ("<think>\nI think.\n</think>\n\nThe answer.", ("I think.", "The answer.")),
        ("I think.</think>The answer.", ("I think.", "The answer.")),
        ("Plain <b>answer</b> with </thin and <thi bits", ("", "Plain <b>answer</b> with </thin and <thi bits")),
    ]:
        points = sorted({c % (len(text) + 1) for c in cuts})
        chunks, last = [], 0
        for p in points + [len(text)]:
            chunks.append(text[last:p])
            last = p
        assert feed_all(chunks) == expected, chunks


def test_changed_reports_visible_progress():
    s = ReasoningSplitter()
    assert not s.feed({"role": "assistant", "content": ""})
    assert s.feed({"content": "Hi"})
    assert not s.feed({"content": "</th"})  # held back: might be a tag
    assert s.feed({"content": "x"}) and s.answer == "Hi</thx"
    assert json.dumps(s.answer)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=6), max_size=30), st.data())
def test_growing_text_reads_any_tail(pieces, data):
    from vllm_magics.ask.reasoning import GrowingText

    g, whole = GrowingText(), ""
    for p in pieces:
        g.append(p)
        whole += p
        offset = data.draw(st.integers(0, len(whole) + 2))
        assert g.since(offset) == whole[offset:] and len(g) == len(whole)
        if data.draw(st.booleans()):
            assert str(g) == whole  # joining keeps later tails right
    assert g.visible == bool(whole.strip())


def test_a_live_view_reads_the_new_part_without_joining_the_whole():
    s = ReasoningSplitter()
    s.feed({"reasoning": "thinking "})
    s.feed({"content": "The answer"})
    seen = len(s.answer_text)
    s.feed({"content": " goes on."})
    assert s.answer_text.since(seen) == " goes on." and s.reasoning_text.since(0) == "thinking "
    assert s.answer == "The answer goes on." and s.reasoning_done


def test_fields_that_are_not_text_are_ignored():
    # A hostile or broken server: `"content": 5` must not raise a TypeError in the splitter.
    s = ReasoningSplitter()
    assert not s.feed({"content": 5, "reasoning": ["x"]})
    assert s.feed({"content": "ok"}) and s.answer == "ok"
