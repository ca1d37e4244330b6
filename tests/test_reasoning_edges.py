"""The reasoning/answer split keeps the text as the model wrote it: only the tags and the blank lines
right after them go (README: DeepSeek-R1 `<think>` reasoning shown apart from the answer).

Each case feeds the chunks a server could send and checks both texts exactly: an answer that starts
with spaces (indented code) or with an "X", a second `</think>` inside the answer, a tag cut at the
very end of the stream.
"""
import pytest

from vllm_magics.ask.reasoning import GrowingText, ReasoningSplitter


def split(*chunks, field="content"):
    s = ReasoningSplitter()
    for chunk in chunks:
        s.feed({field: chunk})
    s.finish()
    return s.reasoning, s.answer


@pytest.mark.parametrize("chunks, reasoning, answer", [
    # the model opens the thought itself (a server without --reasoning-parser)
    (["<think>\n  Xenon, indented\n</think>\n\n  Xylophone\n"], "  Xenon, indented", "  Xylophone\n"),
    (["<think>\nXenon\n</think>\n\nXylophone\n"], "Xenon", "Xylophone\n"),
    # DeepSeek-R1's chat template opened it in the prompt: the reply starts inside the thought
    (["Xenon thought\n</think>\n\n  Xylophone\n"], "Xenon thought", "  Xylophone\n"),
    (["Xenon thought\n</think>\n\nXylophone\n"], "Xenon thought", "Xylophone\n"),
    # the blank line after </think> arrives in the next chunk
    (["Xenon thought</think>", "\n\n  Xylophone"], "Xenon thought", "  Xylophone"),
    (["Xenon thought</think>", "\n\nXylophone"], "Xenon thought", "Xylophone"),
    (["<think>Xenon</think>", "\n\n  Xylophone"], "Xenon", "  Xylophone"),
])
def test_only_the_tags_and_the_blank_lines_after_them_go(chunks, reasoning, answer):
    assert split(*chunks) == (reasoning, answer)


def test_blank_lines_inside_the_answer_stay():
    assert split("<think>r</think>\n\n", "Para one.", "\n\nPara two.\n") == ("r", "Para one.\n\nPara two.\n")
    assert split("\n\nNo tags at all.") == ("", "\n\nNo tags at all.")


@pytest.mark.parametrize("chunks", [
    ["<think>a</think>b</think>c"],  # opened in the reply
    ["a</think>b</think>c"],  # opened in the prompt
])
def test_the_first_closing_tag_ends_the_reasoning_later_ones_are_answer_text(chunks):
    assert split(*chunks) == ("a", "b</think>c")


def test_the_first_opening_tag_starts_the_reasoning():
    assert split("<think>a<think>b</think>c") == ("a<think>b", "c")


def test_a_tag_cut_at_the_very_end_stays_where_it_was_written():
    assert split("<think>abc</th") == ("abc</th", "")  # the thought never closed
    assert split("answer <thi") == ("", "answer <thi")


def test_finishing_twice_changes_nothing():
    s = ReasoningSplitter()
    s.feed({"content": "<think>abc</th"})
    s.finish()
    s.finish()
    assert (s.reasoning, s.answer) == ("abc</th", "")


def test_reasoning_is_done_only_once_an_answer_follows_it():
    s = ReasoningSplitter()
    assert not s.reasoning_done
    s.feed({"reasoning": "thinking"})
    assert not s.reasoning_done  # reasoning, no answer yet
    s.feed({"content": "\n"})
    assert not s.reasoning_done  # whitespace is not an answer
    s.feed({"content": "Answer."})
    assert s.reasoning_done
    plain = ReasoningSplitter()
    plain.feed({"content": "An answer without reasoning."})
    assert not plain.reasoning_done


def test_growing_text_reads_the_same_after_a_join():
    text = GrowingText("ab")
    text.append("cd")
    assert text.since(1) == "bcd" and str(text) == "abcd"
    text.append("ef")
    assert text.since(3) == "def" and text.since(6) == "" and str(text) == "abcdef"
