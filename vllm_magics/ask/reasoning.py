"""Split a streamed chat reply into reasoning and answer, incrementally (no IPython, no I/O).

Where the reasoning can be, in the order it is read:
1. `delta.reasoning`: vLLM 0.11.2 and later (the only spelling from 0.16 on);
2. `delta.reasoning_content`: older vLLM, SGLang, DeepSeek's own API;
3. `<think>...</think>` inside `delta.content`: a server started without `--reasoning-parser`.

The tag parser copes with tags split across chunks, with output that begins inside the reasoning
(DeepSeek-R1's chat template already put `<think>\\n` in the prompt, so the reply starts with the
thought and only closes it), and with a closing tag that never comes (then all is reasoning only if
it was opened; otherwise it is all answer).

Cost is linear in the reply: text arrives as pieces appended to a `GrowingText` (never `str += piece`,
which copies the whole text at each token), and a live view reads only what is new.
"""
from __future__ import annotations

from bisect import bisect_right

OPEN, CLOSE = "<think>", "</think>"


class GrowingText:
    """Text that arrives in pieces. Appending costs the piece; `since(offset)` costs the part returned;
    `str()` joins once after a change (and keeps the join, so reading it again is free)."""

    def __init__(self, text: str = ""):
        self._pieces: list[str] = []
        self._ends: list[int] = []  # where each piece ends, for `since`
        self._len = 0
        self.visible = False  # anything but whitespace yet
        self.append(text)

    def append(self, piece: str) -> None:
        if piece:
            # `_ends` first: a reader in another thread (a Ctrl-C snapshot) that sees a piece also
            # sees where it ends; it reads only pieces that have an end.
            self._len += len(piece)
            self._ends.append(self._len)
            self._pieces.append(piece)
            self.visible = self.visible or not piece.isspace()

    def __len__(self) -> int:
        return self._len

    def since(self, offset: int) -> str:
        """The text from character `offset` on. Safe to call from another thread while pieces arrive:
        it reads the pieces present when it started (both lists taken once, cut to the same length)."""
        pieces, ends = self._pieces, self._ends
        n = min(len(pieces), len(ends))
        i = bisect_right(ends, offset, 0, n)
        if i >= n:
            return ""
        first = pieces[i]
        return first[offset - (ends[i] - len(first)):] + "".join(pieces[i + 1:n])

    def __str__(self) -> str:
        if len(self._pieces) > 1:
            self._pieces, self._ends = ["".join(self._pieces)], [self._len]
        return self._pieces[0] if self._pieces else ""


def _partial_tag_suffix(text: str) -> int:
    """Length of the longest end of `text` that could be the start of a tag (held back for now)."""
    if "<" not in text[-(len(CLOSE) - 1):]:
        return 0  # the usual case, checked once per token
    for n in range(min(len(text), len(CLOSE) - 1), 0, -1):
        tail = text[-n:]
        if OPEN.startswith(tail) or CLOSE.startswith(tail):
            return n
    return 0


class ReasoningSplitter:
    """Feed it each choice's `delta` (a dict); read `.reasoning` and `.answer` at any time (each read
    after a change joins the text: a live view reads `reasoning_text.since(n)` / `answer_text.since(n)`).

    `changed` after `feed` tells whether anything visible moved. `source` says where the reasoning
    came from: "reasoning", "reasoning_content", "tags" or None.
    """

    def __init__(self):
        self.reasoning_text = GrowingText()
        self.answer_text = GrowingText()  # replaced (not cleared) when it turns out to be reasoning
        self.source: str | None = None
        self._pending = ""  # content held back: could be the start of a tag
        self._in_think = False
        self._seen_close = False
        self.reasoning_done = False  # the answer has started after some reasoning

    @property
    def reasoning(self) -> str:
        return str(self.reasoning_text)

    @property
    def answer(self) -> str:
        return str(self.answer_text)

    def feed(self, delta: dict) -> bool:
        before = (len(self.reasoning_text), len(self.answer_text))
        for field in ("reasoning", "reasoning_content"):
            value = delta.get(field)
            if value and isinstance(value, str):
                self.source = self.source or field
                self.reasoning_text.append(value)
        content = delta.get("content")
        if content and isinstance(content, str):
            self._feed_content(content)
        if len(self.reasoning_text) and self.answer_text.visible:
            self.reasoning_done = True
        return (len(self.reasoning_text), len(self.answer_text)) != before

    def _feed_content(self, text: str) -> None:
        text = self._pending + text
        self._pending = ""
        while text:
            if self._in_think:
                i = text.find(CLOSE)
                if i < 0:
                    keep = _partial_tag_suffix(text)
                    self.reasoning_text.append(text[: len(text) - keep])
                    self._pending = text[len(text) - keep:]
                    return
                self.reasoning_text.append(text[:i])
                self._in_think, self._seen_close = False, True
                text = text[i + len(CLOSE):].lstrip("\n")
                continue
            keep = 0
            # Tags are looked for until the first one (the source becomes "tags"), and only while the
            # server has sent no reasoning field (then it parsed them itself).
            if self.source is None:
                i_open, i_close = text.find(OPEN), text.find(CLOSE)
                if i_close >= 0 and (i_open < 0 or i_close < i_open):
                    # A closing tag first: the chat template opened the thought in the prompt, so
                    # everything so far was reasoning (what was shown as answer moves over, once).
                    self.source = "tags"
                    self.reasoning_text.append(str(self.answer_text) + text[:i_close])
                    self.answer_text = GrowingText()
                    self._seen_close = True
                    text = text[i_close + len(CLOSE):].lstrip("\n")
                    continue
                if i_open >= 0 and not self.answer_text.visible and not text[:i_open].strip():
                    self.source = "tags"
                    self.answer_text = GrowingText()
                    self._in_think = True
                    text = text[i_open + len(OPEN):].lstrip("\n")
                    continue
                keep = _partial_tag_suffix(text)
            piece = text[: len(text) - keep]
            if self._seen_close and not len(self.answer_text):
                piece = piece.lstrip("\n")  # the blank line between </think> and the answer
            self.answer_text.append(piece)
            self._pending = text[len(text) - keep:]
            return

    def finish(self) -> None:
        """End of stream: release held-back text (a lone `</th` at the very end is just text)."""
        if self._pending:
            (self.reasoning_text if self._in_think else self.answer_text).append(self._pending)
            self._pending = ""
        if self.source == "tags" or self.source is None:
            self.reasoning_text = GrowingText(self.reasoning.strip("\n"))
