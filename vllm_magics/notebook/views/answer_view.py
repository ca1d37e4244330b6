"""Views of answers for the notebook: an Answer as a card (reasoning collapsed, the answer as Markdown,
a footer), an AnswerList as a bounded table. They take data only; the extension registers them as
IPython formatters, so displaying `_ask` shows the card (scripts keep the text repr). Registration is
by type name and this module imports nothing heavy at load: `%load_ext` stays instant.

Each view costs time linear in the text it shows (markdown.py is linear), and a table shows at most
TABLE_ROWS answers of at most ROW_CHARS characters each: a batch of 100,000 stays a small output.
"""
from __future__ import annotations

from vllm_magics.notebook.views.formatters import register, unregister

TABLE_ROWS = 50
ROW_CHARS = 2000


def answer_html(answer) -> str:
    from vllm_magics.notebook.views.markdown import render_markdown
    from vllm_magics.notebook.views.render import render

    data = answer.data_json()  # with a schema: the validated object, not the raw JSON text
    return render("answer.html.j2", a=answer, data=data,
                  answer_html="" if data is not None else render_markdown(answer.text),
                  show_reasoning=bool(answer.reasoning),
                  reasoning_open=answer.streaming and not answer.text.strip())


def answer_markdown(answer) -> str:
    """The answer as Markdown (for frontends that show text/markdown, e.g. GitHub's notebook view)."""
    parts = []
    if answer.reasoning:
        quoted = "\n".join("> " + line for line in answer.reasoning.strip().splitlines())
        parts.append(f"> **Reasoning**\n>\n{quoted}")
    data = answer.data_json()
    parts.append(f"```json\n{data}\n```" if data is not None else answer.text.strip())
    parts += [f"**⚠ {w}**" for w in answer.warnings()]
    parts.append("*" + " · ".join(answer.footer_items()) + "*")
    return "\n\n".join(p for p in parts if p)


def answer_bundle(answer, hide_reasoning: bool = False) -> dict:
    if hide_reasoning and answer.reasoning:  # left out of every view; it stays on the answer itself
        import dataclasses

        answer = dataclasses.replace(answer, reasoning="")
    return {"text/plain": answer.text_view(), "text/markdown": answer_markdown(answer),
            "text/html": answer_html(answer)}


def answer_list_html(answers) -> str:
    from vllm_magics.notebook.views.markdown import render_markdown
    from vllm_magics.notebook.views.render import render

    rows = []
    for a in answers[:TABLE_ROWS]:
        text = a.text if len(a.text) <= ROW_CHARS else a.text[:ROW_CHARS] + " …"
        rows.append((a, render_markdown(text)))
    more = len(answers) - len(rows)
    summary = answers.summary() if more > 0 or (answers.total or 0) > len(answers) else ""
    return render("answer_list.html.j2", rows=rows, more=more, summary=summary)


def answer_list_bundle(answers) -> dict:
    return {"text/plain": answers.text_view(TABLE_ROWS), "text/html": answer_list_html(answers)}


def answers_table_bundle(head: list, total: int, summary: str) -> dict:
    """The first answers of a batch of `total` (e.g. one read from its JSONL file), with a summary."""
    lines = [f"[{a.index}] {'ok' if a.ok else 'error'}: {' '.join((a.text if a.ok else a.error or '').split())[:200]}"
             for a in head]
    if total > len(head):
        lines.append(f"... {total - len(head):,} more (all are in the result)")
    lines.append(summary)
    from vllm_magics.notebook.views.markdown import render_markdown
    from vllm_magics.notebook.views.render import render

    rows = [(a, render_markdown(a.text if len(a.text) <= ROW_CHARS else a.text[:ROW_CHARS] + " …")) for a in head]
    return {"text/plain": "\n".join(lines),
            "text/html": render("answer_list.html.j2", rows=rows, more=total - len(head), summary=summary)}


def frame_bundle(frame, total: int, summary: str) -> dict:
    """The first rows of a batch's DataFrame (input columns + schema fields + `_error`): pandas' own
    table, its cells escaped (model output is untrusted), and a summary line."""
    from vllm_magics.notebook.views.render import render

    more = total - len(frame)
    text = frame.to_string() + (f"\n... {more:,} more rows: .to_frame() gives them all" if more > 0 else "")
    return {"text/plain": text + "\n" + summary,
            "text/html": render("data_frame.html.j2", table=frame.to_html(escape=True, border=0), more=more,
                                summary=summary)}


def history_bundle(entries: list[dict], where: str) -> dict:
    """History entries (newest first) as a table: id, time, model, thread, prompt, answer, tokens."""
    import time

    rows = []
    for e in entries:
        usage = e.get("usage") if isinstance(e.get("usage"), dict) else {}
        rows.append({
            "id": e["id"], "time": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["time"] or 0)),
            "model": str(e.get("model") or "").rsplit("/", 1)[-1], "thread": e.get("thread") or "",
            "prompt": _cut(e.get("prompt"), 100), "answer": _cut(e.get("error") or e.get("answer"), 160),
            "failed": bool(e.get("error")), "tokens": usage.get("completion_tokens", "")})
    header = ("id", "time", "model", "thread", "prompt", "answer", "tokens")
    lines = ["  ".join(str(r[k]) for k in header) for r in rows]
    text = "\n".join(["  ".join(header)] + lines) if rows else f"No history entries{where}."
    return {"text/plain": text, "text/html": render_history(rows, where)}


def render_history(rows: list[dict], where: str) -> str:
    from vllm_magics.notebook.views.render import render

    return render("history.html.j2", rows=rows, where=where)


def _cut(text, limit: int) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- IPython formatters ---------------------------------------------------------------------------
_FORMATTERS = (
    ("text/html", "Answer", answer_html),
    ("text/markdown", "Answer", answer_markdown),
    ("text/html", "AnswerList", answer_list_html),
)
_MODULE = "vllm_magics.ask.answer"


def register_answer_formatters(shell) -> None:
    register(shell, _MODULE, _FORMATTERS)


def unregister_answer_formatters(shell) -> None:
    unregister(shell, _MODULE, _FORMATTERS)
