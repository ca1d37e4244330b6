"""Split a streamed chat reply into reasoning and answer, incrementally (no IPython, no I/O).

Where the reasoning can be, in the order it is read:
1. `delta.reasoning`: vLLM 0.11.2 and later (the only spelling from 0.16 on);
2. `delta.reasoning_content`: older vLLM, SGLang, DeepSeek's own API;
3. `<think>...</think>` inside `delta.content`: a server started without `--reasoning-parser`.

The tag parser copes with tags split across chunks, with output that begins inside the reasoning
(DeepSeek-R1's chat template already put `<think>\\n` in the prompt, so the reply starts with the
thought and only closes it), and with a closing tag that never comes (then all is reasoning only if
it was opened; otherwise it is all answer).
"""
from __future__ import annotations

OPEN, CLOSE = "<think>", "</think>"


def _partial_tag_suffix(text: str) -> int:
    """Length of the longest end of `text` that could be the start of a tag (held back for now)."""
    for n in range(min(len(text), len(CLOSE) - 1), 0, -1):
        tail = text[-n:]
        if OPEN.startswith(tail) or CLOSE.startswith(tail):
            return n
    return 0


class ReasoningSplitter:
    """Feed it each choice's `delta` (a dict); read `.reasoning` and `.answer` at any time.

    `changed` after `feed` tells whether anything visible moved. `source` says where the reasoning
    came from: "reasoning", "reasoning_content", "tags" or None.
    """

    def __init__(self):
        self.reasoning = ""
        self.answer = ""
        self.source: str | None = None
        self._pending = ""  # content held back: could be the start of a tag
        self._in_think = False
        self._seen_open = False
        self._seen_close = False
        self.reasoning_done = False  # the answer has started after some reasoning

    def feed(self, delta: dict) -> bool:
        before = (len(self.reasoning), len(self.answer))
        for field in ("reasoning", "reasoning_content"):
            value = delta.get(field)
            if value:
                self.source = self.source or field
                self.reasoning += value
        content = delta.get("content")
        if content:
            self._feed_content(content)
        if self.reasoning and self.answer.strip():
            self.reasoning_done = True
        return (len(self.reasoning), len(self.answer)) != before

    def _feed_content(self, text: str) -> None:
        text = self._pending + text
        self._pending = ""
        # Tags are looked for only while the server has sent no reasoning field (then it parsed them).
        tags_possible = self.source in (None, "tags")
        while text:
            if self._in_think:
                i = text.find(CLOSE)
                if i < 0:
                    keep = _partial_tag_suffix(text)
                    self.reasoning += text[: len(text) - keep]
                    self._pending = text[len(text) - keep:]
                    return
                self.reasoning += text[:i]
                self._in_think, self._seen_close = False, True
                text = text[i + len(CLOSE):].lstrip("\n")
                continue
            keep = 0
            if tags_possible and not self._seen_close:
                i_open, i_close = text.find(OPEN), text.find(CLOSE)
                if i_close >= 0 and (i_open < 0 or i_close < i_open):
                    # A closing tag first: the chat template opened the thought in the prompt, so
                    # everything so far was reasoning (what was shown as answer moves over).
                    self.source = "tags"
                    self.reasoning += self.answer + text[:i_close]
                    self.answer = ""
                    self._seen_close = True
                    text = text[i_close + len(CLOSE):].lstrip("\n")
                    continue
                if i_open >= 0 and not self._seen_open and (self.answer + text[:i_open]).strip() == "":
                    self.source = "tags"
                    self.answer = ""
                    self._in_think = self._seen_open = True
                    text = text[i_open + len(OPEN):].lstrip("\n")
                    continue
                keep = _partial_tag_suffix(text)
            piece = text[: len(text) - keep]
            if self._seen_close and not self.answer:
                piece = piece.lstrip("\n")  # the blank line between </think> and the answer
            self.answer += piece
            self._pending = text[len(text) - keep:]
            return

    def finish(self) -> None:
        """End of stream: release held-back text (a lone `</th` at the very end is just text)."""
        if self._pending:
            if self._in_think:
                self.reasoning += self._pending
            else:
                self.answer += self._pending
            self._pending = ""
        if self.source == "tags" or self.source is None:
            self.reasoning = self.reasoning.strip("\n")
