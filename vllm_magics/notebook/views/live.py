"""Live views: an answer while it streams, and the progress of an --each batch.

Costs: a streaming update redraws only the last segment of the text (segments.py), never the whole
answer; the next update waits `1/updates_per_second` from the END of the last one, so a slow render
cannot make every token trigger another. The answer is rendered whole once, when it ends.
"""
from __future__ import annotations

import threading
import time

from vllm_magics.notebook.views.render import render
from vllm_magics.notebook.views.segments import EMPTY, SegmentRun, markdown_cut, text_cut


class DisplaySink:
    """IPython's display with display ids (tests and benchmarks pass a recording stand-in)."""

    def show(self, bundle: dict):
        from IPython.display import display

        return display(bundle, raw=True, display_id=True)


class _Outputs:
    """The display outputs of one answer, in the order shown. The first carries the stylesheet (one
    copy per answer, not one per segment) and takes the final render."""

    def __init__(self, sink):
        self.sink = sink
        self.handles: list[_Output] = []

    def show(self, bundle: dict) -> "_Output":
        output = _Output(self.sink, bundle, styled=not self.handles)
        self.handles.append(output)
        return output


class _Output:
    def __init__(self, sink, bundle: dict, styled: bool):
        self.styled = styled
        self.handle = sink.show(self._with_style(bundle))

    def update(self, bundle: dict, raw: bool = True) -> None:
        self.handle.update(self._with_style(bundle), raw=True)

    def _with_style(self, bundle: dict) -> dict:
        if not self.styled or not bundle.get("text/html"):
            return bundle
        return {**bundle, "text/html": render("answer_live.html.j2", part="style") + bundle["text/html"]}


def _answer_segment(text: str, carry: str, final: bool, index: int) -> dict:
    from vllm_magics.notebook.views.markdown import render_markdown

    html = render_markdown(carry + "\n" + text if carry else text)
    return {"text/plain": text, "text/html": render("answer_live.html.j2", part="answer", html=html,
                                                    cursor=not final)}


def _reasoning_segment(text: str, carry: str, final: bool, index: int) -> dict:
    return {"text/plain": text, "text/html": render("answer_live.html.j2", part="reasoning", text=text,
                                                    first=index == 0)}


class LiveAnswer:
    """Shows an Answer while it streams: in a notebook runs of segments (reasoning, then answer)
    updated in place, replaced by the full card at the end; in a terminal the text as it arrives."""

    def __init__(self, notebook: bool, hide_reasoning: bool = False, updates_per_second: float = 15.0,
                 sink=None):
        from vllm_magics.ask.answer import Answer

        self.notebook = notebook
        self.hide_reasoning = hide_reasoning
        self.min_gap = 1.0 / max(updates_per_second, 0.5)
        self.answer = Answer(streaming=True)
        self.outputs = _Outputs(sink or DisplaySink())
        self.hidden = None  # with hide_reasoning: one status line while the model thinks
        self.reasoning = SegmentRun(self.outputs, _reasoning_segment, text_cut)
        self.text = SegmentRun(self.outputs, _answer_segment, markdown_cut)
        self.next_draw = 0.0
        self.printed = {"reasoning": 0, "text": 0}
        self.updates = 0  # draws (the benchmark and tests read it)

    def update(self, answer) -> None:
        if not self.notebook:
            self._print_new(answer)
        elif time.monotonic() >= self.next_draw:
            self._draw(answer)
            self.next_draw = time.monotonic() + self.min_gap  # from the end of the draw

    def _draw(self, answer) -> None:
        live = answer.live
        if live is None:
            return
        self.updates += 1
        if not self.hide_reasoning:
            self.reasoning.draw(live.reasoning_text)
        elif len(live.reasoning_text) and not len(live.answer_text):
            self._status(f"Reasoning (hidden) · thinking… ≥{answer.reasoning_chunks} tokens")
        self.text.draw(live.answer_text)

    def _status(self, status: str) -> None:
        bundle = {"text/plain": status, "text/html": render("answer_live.html.j2", part="status", status=status)}
        if self.hidden is None:
            self.hidden = self.outputs.show(bundle)
        else:
            self.hidden.update(bundle)

    def _print_new(self, answer) -> None:
        import sys

        out = sys.stdout
        reasoning = self._new(answer, "reasoning")
        if reasoning and not self.hide_reasoning:
            if self.printed["reasoning"] == 0:
                out.write("[reasoning]\n")
            out.write(reasoning)
            self.printed["reasoning"] += len(reasoning)
        text = self._new(answer, "text")
        if text:
            if self.printed["text"] == 0 and self.printed["reasoning"]:
                out.write("\n[/reasoning]\n\n")
            out.write(text)
            self.printed["text"] += len(text)
        out.flush()

    def _new(self, answer, which: str) -> str:
        """What of the reasoning or text has not been printed yet (read piece by piece while streaming)."""
        done = self.printed[which]
        if answer.live is not None:
            buffer = answer.live.reasoning_text if which == "reasoning" else answer.live.answer_text
            return buffer.since(done)
        return getattr(answer, which)[done:]

    def finish(self, answer, whole: bool = True) -> None:
        """The whole answer, rendered once, replaces the first output; the others are emptied (the
        card is sent last). `whole=False` (after Ctrl-C, which must take effect at once at any length):
        the segments stay as drawn, the last is redrawn without its cursor, and a line below says what
        happened."""
        answer.streaming = False
        if not self.notebook:
            self._print_new(answer)
            lines = [""] + [f"! {w}" for w in answer.warnings()] + ["-- " + " · ".join(answer.footer_items())]
            print("\n".join(lines), flush=True)
            return
        self.updates += 1
        shown = self.outputs.handles
        if not whole and shown:
            for run in (() if self.hide_reasoning else (self.reasoning,)) + (self.text,):
                if run.buffer is not None:
                    run.draw(run.buffer, final=True)
            status = " · ".join(answer.warnings() + answer.footer_items())
            self.outputs.show({"text/plain": status, "text/html": render("answer_live.html.j2", part="status",
                                                                         status=status)})
            return
        from vllm_magics.notebook.views.answer_view import answer_bundle

        bundle = answer_bundle(answer, self.hide_reasoning)
        if not shown:
            self.outputs.sink.show(bundle)
            return
        for output in shown[1:]:
            output.update(EMPTY)
        shown[0].handle.update(bundle, raw=True)  # the card brings its own stylesheet


class BatchProgress:
    """A progress bar for `%%ask --each`: a display updated in place, or lines in a terminal. Counts
    as answers finish (no pass over the results), and redraws at most every 0.2 s."""

    def __init__(self, total: int, notebook: bool):
        self.total, self.notebook = total, notebook
        self.done = self.failed = 0
        self.handle = None
        self.started = time.monotonic()
        self.next_draw = 0.0
        self.last_printed = -1
        self.lock = threading.Lock()  # called from the batch's worker threads

    def _text(self) -> str:
        fail = f", {self.failed} failed" if self.failed else ""
        return f"asked {self.done}/{self.total}{fail} in {time.monotonic() - self.started:.1f} s"

    def update(self, answer) -> None:
        with self.lock:
            self.done += 1
            self.failed += bool(answer.error)
            self._draw(final=False)

    def _draw(self, final: bool) -> None:
        if self.notebook:
            if time.monotonic() < self.next_draw and not final:
                return
            from IPython.display import display

            html = render("batch_progress.html.j2", done=self.done, total=self.total, failed=self.failed,
                          percent=int(100 * self.done / max(self.total, 1)), elapsed=time.monotonic() - self.started)
            bundle = {"text/plain": self._text(), "text/html": html}
            if self.handle is None:
                self.handle = display(bundle, raw=True, display_id=True)
            else:
                self.handle.update(bundle, raw=True)
            self.next_draw = time.monotonic() + 0.2
        elif final or self.done * 10 // max(self.total, 1) != self.last_printed:
            self.last_printed = self.done * 10 // max(self.total, 1)
            print(self._text(), flush=True)

    def finish(self) -> None:
        with self.lock:
            self._draw(final=True)


class StoreProgress:
    """The progress of an `%%ask --each --jsonl` batch: done / failed / in flight, tokens per second and
    the time left, from the batch's counters (`progress.snapshot()` and `.line()`, O(1)); redrawn at most
    every 0.2 s from the workers, printed every tenth in a terminal. It holds no answer."""

    def __init__(self, progress, notebook: bool):
        self.progress, self.notebook = progress, notebook
        self.handle = None
        self.started = time.monotonic()
        self.next_draw = 0.0
        self.last_printed = -1
        self.lock = threading.Lock()

    def update(self) -> None:
        with self.lock:
            self._draw(final=False)

    def _draw(self, final: bool) -> None:
        s = self.progress.snapshot()
        finished = s["done"] + s["failed"]
        if not self.notebook:
            tenth = finished * 10 // max(s["total"], 1)
            if final or tenth != self.last_printed:
                self.last_printed = tenth
                print(self.progress.line(), flush=True)
            return
        if time.monotonic() < self.next_draw and not final:
            return
        from IPython.display import display

        line = self.progress.line()
        html = render("batch_progress.html.j2", detail=line, elapsed=time.monotonic() - self.started,
                      percent=int(100 * finished / max(s["total"], 1)))
        bundle = {"text/plain": line, "text/html": html}
        if self.handle is None:
            self.handle = display(bundle, raw=True, display_id=True)
        else:
            self.handle.update(bundle, raw=True)
        self.next_draw = time.monotonic() + 0.2

    def finish(self) -> None:
        with self.lock:
            self._draw(final=True)
