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

    return render("answer.html.j2", a=answer, answer_html=render_markdown(answer.text),
                  show_reasoning=bool(answer.reasoning),
                  reasoning_open=answer.streaming and not answer.text.strip())


def answer_markdown(answer) -> str:
    """The answer as Markdown (for frontends that show text/markdown, e.g. GitHub's notebook view)."""
    parts = []
    if answer.reasoning:
        quoted = "\n".join("> " + line for line in answer.reasoning.strip().splitlines())
        parts.append(f"> **Reasoning**\n>\n{quoted}")
    parts.append(answer.text.strip())
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
