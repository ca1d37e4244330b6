"""Live views: an answer while it streams, and the progress of an --each batch."""
from __future__ import annotations

import threading
import time

from vllm_magics.notebook.views.render import render


class LiveAnswer:
    """Shows an Answer while it streams: in a notebook one output area updated in place (at most
    `updates_per_second`, then always a final full render); in a terminal the text as it arrives."""

    def __init__(self, notebook: bool, hide_reasoning: bool = False, updates_per_second: float = 15.0):
        from vllm_magics.ask.answer import Answer

        self.notebook = notebook
        self.hide_reasoning = hide_reasoning
        self.min_gap = 1.0 / max(updates_per_second, 0.5)
        self.answer = Answer(streaming=True)
        self.handle = None
        self.last = 0.0
        self.printed = {"reasoning": 0, "text": 0}
        self.updates = 0  # display updates sent (the benchmark and tests read it)

    def _view(self, answer):
        if not self.hide_reasoning:
            return answer
        from dataclasses import replace

        return replace(answer, reasoning="")

    def update(self, answer) -> None:
        if self.notebook:
            now = time.monotonic()
            if now - self.last < self.min_gap:
                return
            self.last = now
            self._draw(answer)
        else:
            self._print_new(answer)

    def _draw(self, answer) -> None:
        from IPython.display import display

        self.updates += 1
        if self.handle is None:
            self.handle = display(self._view(answer), display_id=True)
        else:
            self.handle.update(self._view(answer))

    def _print_new(self, answer) -> None:
        import sys

        out = sys.stdout
        if answer.reasoning and not self.hide_reasoning and len(answer.reasoning) > self.printed["reasoning"]:
            if self.printed["reasoning"] == 0:
                out.write("[reasoning]\n")
            out.write(answer.reasoning[self.printed["reasoning"]:])
            self.printed["reasoning"] = len(answer.reasoning)
        if answer.text and len(answer.text) > self.printed["text"]:
            if self.printed["text"] == 0 and self.printed["reasoning"]:
                out.write("\n[/reasoning]\n\n")
            out.write(answer.text[self.printed["text"]:])
            self.printed["text"] = len(answer.text)
        out.flush()

    def finish(self, answer) -> None:
        answer.streaming = False
        if self.notebook:
            self._draw(answer)
            return
        self._print_new(answer)
        lines = [""] + [f"! {w}" for w in answer.warnings()] + ["-- " + " · ".join(answer.footer_items())]
        print("\n".join(lines), flush=True)


class BatchProgress:
    """A progress bar for `%%ask --each`: a display updated in place, or lines in a terminal."""

    def __init__(self, total: int, notebook: bool):
        self.total, self.notebook = total, notebook
        self.handle = None
        self.started = time.monotonic()
        self.last = 0.0
        self.last_printed = -1
        self.lock = threading.Lock()  # called from the batch's worker threads

    def _html(self, done: int, failed: int) -> str:
        return render("batch_progress.html.j2", done=done, total=self.total, failed=failed,
                      percent=int(100 * done / max(self.total, 1)), elapsed=time.monotonic() - self.started)

    def _text(self, done: int, failed: int) -> str:
        fail = f", {failed} failed" if failed else ""
        return f"asked {done}/{self.total}{fail} in {time.monotonic() - self.started:.1f} s"

    def update(self, done: int, total: int, results) -> None:
        with self.lock:
            self._update(done, total, results)

    def _update(self, done: int, total: int, results) -> None:
        failed = sum(1 for a in results if a.error)
        now = time.monotonic()
        if self.notebook:
            if now - self.last < 0.2 and done < total:
                return
            self.last = now
            from IPython.display import display

            bundle = {"text/plain": self._text(done, failed), "text/html": self._html(done, failed)}
            if self.handle is None:
                self.handle = display(bundle, raw=True, display_id=True)
            else:
                self.handle.update(bundle, raw=True)
        elif done * 10 // max(total, 1) != self.last_printed:
            self.last_printed = done * 10 // max(total, 1)
            print(self._text(done, failed), flush=True)

    def finish(self, results) -> None:
        self.update(len(results), len(results), results)
