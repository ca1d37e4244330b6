"""A growing text shown as a run of display outputs, so that a streaming update costs the size of
what changed, not of the whole answer.

Only the last output (the tail) is redrawn. Once the tail passes SOFT characters it is cut at the first
paragraph break after SOFT (outside code fences), or at a line end once it reaches HARD: the part
before the cut is drawn one last time and left alone, and a new output takes the tail. A cut inside a
code fence carries the fence's opening line into the next segment, so its code is still shown as code.
The whole answer is rendered once, as one document, when the stream ends (live.py).
"""
from __future__ import annotations

import re

SOFT, HARD = 2000, 8000
EMPTY = {"text/plain": "", "text/html": ""}  # what a segment's output becomes after the final render
_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")


def markdown_cut(text: str, fence: str) -> tuple[int, str] | None:
    """(where to cut `text`, the fence line open there) or None to wait for more. `fence` is the fence
    line open where `text` starts ("" outside code)."""
    limit = min(len(text), HARD)
    pos, line_end = 0, None
    while pos < limit:
        nl = text.find("\n", pos, limit)
        if nl < 0:
            break
        line = text[pos:nl]
        m = _FENCE.match(line)
        if fence:
            opener = _FENCE.match(fence).group(1)
            if m and m.group(1)[0] == opener[0] and len(m.group(1)) >= len(opener) and not line[m.end():].strip():
                fence = ""
        elif m and not (m.group(1)[0] == "`" and "`" in line[m.end():]):
            fence = line
        pos = nl + 1
        if not fence and not line.strip() and pos >= SOFT:
            return pos, ""
        line_end = (pos, fence)
    if len(text) >= HARD:
        return line_end or (HARD, fence)
    return None


def text_cut(text: str, fence: str = "") -> tuple[int, str] | None:
    """For plain text (the reasoning): the first line end after SOFT, or HARD."""
    nl = text.find("\n", SOFT, HARD)
    if nl >= 0:
        return nl + 1, ""
    return (HARD, "") if len(text) >= HARD else None


class SegmentRun:
    """One growing text (a GrowingText) as a run of outputs. `bundle(text, carry, final, index)` draws
    segment number `index`; `cut` is markdown_cut or text_cut; `sink.show(bundle)` makes an output."""

    def __init__(self, sink, bundle, cut):
        self.sink, self.bundle, self.cut = sink, bundle, cut
        self.buffer = None  # the GrowingText being shown
        self.start = 0  # characters already in finished segments
        self.carry = ""  # the fence line open where the tail starts
        self.tail = None  # the tail's display handle
        self.handles: list = []
        self._sent = None

    def draw(self, buffer, final: bool = False) -> None:
        """Show what `buffer` holds past the finished segments; `final`: the stream has ended here."""
        if buffer is not self.buffer:  # the splitter moved the text elsewhere (answer -> reasoning)
            self.clear()
            self.buffer, self.start, self.carry = buffer, 0, ""
        tail = buffer.since(self.start)
        while len(tail) > SOFT:
            cut = self.cut(tail, self.carry)
            if cut is None:
                break
            at, carry = cut
            self._show(tail[:at], final=True)
            self.tail, self._sent = None, None
            self.start, self.carry, tail = self.start + at, carry, tail[at:]
        if tail:
            self._show(tail, final=final)

    def _show(self, text: str, final: bool) -> None:
        bundle = self.bundle(text, self.carry, final, len(self.handles) - (self.tail is not None))
        if bundle == self._sent:
            return
        if self.tail is None:
            self.tail = self.sink.show(bundle)
            self.handles.append(self.tail)
        else:
            self.tail.update(bundle, raw=True)
        self._sent = bundle

    def clear(self) -> None:
        for handle in self.handles:
            handle.update(EMPTY, raw=True)
        self.handles, self.tail, self._sent = [], None, None
