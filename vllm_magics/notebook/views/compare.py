"""Views of compared answers (`%%ask --compare`): columns side by side, live while they stream, and
a table for `--each`. They take data only (duck-typed: a comparison is a list of Answers with
`.labels`; a table has `.labels`, `.prompts`, `.rows`, `.total`), so no I/O module is imported.

Costs: the finished view renders each answer's Markdown once. The live view redraws at most
`updates_per_second` times, from the caller's thread (`tick()`), and each redraw shows only the last
LIVE_TAIL characters of each column as plain text: a redraw costs the same at any answer length, so
the whole stream costs time linear in its length. The table shows at most TABLE_ROWS rows of cells
cut to CELL_CHARS.
"""
from __future__ import annotations

import threading
import time

from vllm_magics.notebook.views.formatters import register, unregister
from vllm_magics.notebook.views.render import render

LIVE_TAIL = 1500
TABLE_ROWS = 30
CELL_CHARS = 1000


def _column(label: str, answer, hide_reasoning: bool) -> dict:
    css = "vm-bad" if answer.error else "vm-warn" if answer.interrupted or answer.cut_by_max_tokens else ""
    return {"label": label, "a": answer, "css": css, "html": _markdown(answer.text),
            "show_reasoning": bool(answer.reasoning) and not hide_reasoning, "warnings": answer.warnings(),
            "footer": answer.footer_items()}


def compare_html(comparison, hide_reasoning: bool = False) -> str:
    columns = [_column(label, a, hide_reasoning) for label, a in zip(comparison.labels, comparison)]
    return render("compare.html.j2", mode="columns", columns=columns)


def compare_bundle(comparison, hide_reasoning: bool = False) -> dict:
    return {"text/plain": comparison.text_view(), "text/html": compare_html(comparison, hide_reasoning)}


def compare_table_html(table) -> str:
    rows = []
    for i, (prompt, row) in enumerate(zip(table.prompts[:TABLE_ROWS], table.rows[:TABLE_ROWS])):
        cells = []
        for a in row:
            text = "" if a is None else a.text if len(a.text) <= CELL_CHARS else a.text[:CELL_CHARS] + " …"
            cells.append((a, _markdown(text) if a is not None and a.ok else ""))
        rows.append((i, prompt[:300], cells))
    more = len(table.rows) - len(rows)
    asked = sum(1 for row in table.rows for a in row if a is not None)
    failed = sum(1 for row in table.rows for a in row if a is not None and not a.ok)
    summary = f"{len(table.rows)} of {table.total} items × {len(table.labels)} targets: {asked - failed} answers ok" + (
        f", {failed} failed or interrupted" if failed else "")
    return render("compare.html.j2", mode="table", labels=table.labels, rows=rows, more=more, summary=summary)


def compare_table_bundle(table) -> dict:
    return {"text/plain": table.text_view(), "text/html": compare_table_html(table)}


def _markdown(text: str) -> str:
    from vllm_magics.notebook.views.markdown import render_markdown  # markdown-it: on first render only

    return render_markdown(text)


_FORMATTERS = (("text/html", "Comparison", compare_html), ("text/html", "CompareTable", compare_table_html))


def register_compare_formatters(shell) -> None:
    register(shell, "vllm_magics.ask.compare", _FORMATTERS)


def unregister_compare_formatters(shell) -> None:
    unregister(shell, "vllm_magics.ask.compare", _FORMATTERS)


# -- live -------------------------------------------------------------------------------------------
def _tail(buffer, limit: int) -> tuple[str, bool]:
    """The last `limit` characters of a GrowingText or str, and whether anything was cut before them."""
    n = len(buffer)
    start = max(n - limit, 0)
    return (buffer[start:] if isinstance(buffer, str) else buffer.since(start)), start > 0


def _live_column(label: str, answer, hide_reasoning: bool) -> dict:
    """What the live view shows of one column, copied out (strings and figures only)."""
    live = answer.live
    reasoning_src = live.reasoning_text if live is not None else answer.reasoning
    answer_src = live.answer_text if live is not None else answer.text
    reasoning, reasoning_cut = ("", False) if hide_reasoning else _tail(reasoning_src, LIVE_TAIL)
    text, answer_cut = _tail(answer_src, LIVE_TAIL)
    finished = answer.ended_at is not None and not answer.streaming
    if answer.error:
        status, css = "failed", "vm-bad"
    elif finished:
        status = "interrupted" if answer.interrupted else "done"
        css = "vm-warn" if answer.interrupted or answer.cut_by_max_tokens else ""
    else:
        status = "answering…" if len(answer_src) else "thinking…" if len(reasoning_src) else "waiting…"
        css = ""
    return {"label": label, "css": css, "status": status, "reasoning": reasoning, "reasoning_cut": reasoning_cut,
            "answer": text, "answer_cut": answer_cut, "streaming": not finished, "warnings": answer.warnings(),
            "footer": answer.footer_items()}


class LiveCompare:
    """Shows compared answers while they stream.

    `update(column, answer)` is called by the answer's own thread, the only one that may read its
    growing text (ask.reasoning.GrowingText is not safe to read while another thread appends): at most
    `updates_per_second` times per column it copies the column's tail into a snapshot. `tick()` draws
    the snapshots from the thread that owns the display, at most `updates_per_second` times.
    `done(column, answer)` snapshots a finished column; `finish(comparison)` replaces the output with
    the full view. In a terminal, one line per finished column (interleaved streams are unreadable
    there), then the text view."""

    def __init__(self, labels, notebook: bool, hide_reasoning: bool = False, updates_per_second: float = 8.0,
                 sink=None):
        from vllm_magics.notebook.views.live import DisplaySink

        self.labels = list(labels)
        self.notebook = notebook
        self.hide_reasoning = hide_reasoning
        self.min_gap = 1.0 / max(updates_per_second, 0.5)
        self.sink = sink or DisplaySink()
        self.handle = None
        self.columns: list[dict | None] = [None] * len(self.labels)
        self.due = [0.0] * len(self.labels)  # when each column may be copied again
        self.finished: list[int] = []  # columns done and not yet printed (terminal)
        self.changed = False
        self.next_draw = 0.0
        self.updates = 0  # draws (tests and measurements read them)
        self.snapshots = 0
        self._lock = threading.Lock()

    def update(self, column: int, answer) -> None:
        now = time.monotonic()
        if now < self.due[column]:
            return
        self.due[column] = now + self.min_gap
        self._snapshot(column, answer)

    def done(self, column: int, answer) -> None:
        self._snapshot(column, answer)
        with self._lock:
            self.finished.append(column)

    def _snapshot(self, column: int, answer) -> None:
        snapshot = _live_column(self.labels[column], answer, self.hide_reasoning)
        with self._lock:
            self.columns[column] = snapshot
            self.changed = True
            self.snapshots += 1

    def tick(self) -> None:
        if not self.notebook:
            self._print_finished()
        elif self.changed and time.monotonic() >= self.next_draw:
            self._draw()
            self.next_draw = time.monotonic() + self.min_gap  # from the end of the draw

    def _draw(self) -> None:
        from vllm_magics.ask.answer import Answer

        with self._lock:
            self.changed = False
            columns = [c or _live_column(label, Answer(streaming=True), True)
                       for label, c in zip(self.labels, self.columns)]
        self.updates += 1
        text = " · ".join(f"{c['label']}: {c['status']}" for c in columns)
        bundle = {"text/plain": text, "text/html": render("compare.html.j2", mode="live", columns=columns)}
        if self.handle is None:
            self.handle = self.sink.show(bundle)
        else:
            self.handle.update(bundle, raw=True)

    def _print_finished(self) -> None:
        with self._lock:
            finished, self.finished = self.finished, []
            columns = [self.columns[j] for j in finished]
        for j, c in zip(finished, columns):
            print(f"[{self.labels[j]}] {c['status']} · " + " · ".join(c["footer"]), flush=True)

    def finish(self, comparison) -> None:
        """The full view, rendered once (Markdown, reasoning collapsed)."""
        if not self.notebook:
            self._print_finished()
            print(comparison.text_view(), flush=True)
            return
        self.updates += 1
        bundle = compare_bundle(comparison, self.hide_reasoning)
        if self.handle is None:
            self.handle = self.sink.show(bundle)
        else:
            self.handle.update(bundle, raw=True)
