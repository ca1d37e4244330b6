"""The rendered answer, opened in a real browser: reasoning collapsed, answer visible, model-written
HTML inert."""
import re

import pytest

from browser import dump_dom, screenshot
from vllm_magics.ask.answer import Answer
from vllm_magics.notebook.views.answer_view import answer_html

pytestmark = pytest.mark.browser

ATTACK = ('<script>document.body.setAttribute("data-pwned", "script")</script>'
          '<img src=x onerror="document.body.setAttribute(\'data-pwned\', \'img\')">')
# Our own probe (trusted): measures what is rendered and writes it into the page for --dump-dom.
PROBE = """<pre id="probe"></pre><script>
window.addEventListener("load", () => {
  const r = document.querySelector(".vm-reasoning-text"), a = document.querySelector(".vm-answer-text");
  document.getElementById("probe").textContent = JSON.stringify({
    reasoning_rendered: r.checkVisibility(),
    answer_height: a.getBoundingClientRect().height,
    details_open: document.querySelector("details.vm-reasoning").open,
    pwned: document.body.getAttribute("data-pwned")});
});</script>"""


def page(tmp_path, body, name="page.html"):
    path = tmp_path / name
    path.write_text(f"<!doctype html><html><head><meta charset='utf-8'></head><body>{body}{PROBE}</body></html>")
    return path


def probe(dom):
    import json

    return json.loads(re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S).group(1).replace("&quot;", '"'))


def finished_answer():
    a = Answer(text="The capital of **France** is Paris.\n\n" + ATTACK, reasoning="The user asks... " + ATTACK,
               model="smollm2", finish_reason="stop", usage={"prompt_tokens": 9, "completion_tokens": 8})
    a.first_token_at, a.ended_at = a.started_at + 0.08, a.started_at + 0.5
    return a


def test_answer_in_chromium(tmp_path):
    path = page(tmp_path, answer_html(finished_answer()))
    result = probe(dump_dom(path))
    assert result == {"reasoning_rendered": False, "answer_height": result["answer_height"],
                      "details_open": False, "pwned": None}
    assert result["answer_height"] > 10
    screenshot(path, tmp_path / "answer.png")
    assert (tmp_path / "answer.png").stat().st_size > 5000


def test_reasoning_is_open_while_it_streams(tmp_path):
    live = Answer(reasoning="Let me think about France.", streaming=True)
    result = probe(dump_dom(page(tmp_path, answer_html(live))))
    assert result["details_open"] is True and result["reasoning_rendered"] is True


def test_the_probe_would_see_an_executed_script(tmp_path):
    # Control: the same attack, not escaped, does run; so a `None` above means the escaping held.
    html = answer_html(finished_answer()).replace("The capital of", ATTACK + "The capital of")
    assert probe(dump_dom(page(tmp_path, html)))["pwned"] in ("script", "img")


def test_live_segments_and_batch_table_keep_model_html_inert(tmp_path):
    # What the notebook shows while an answer streams (status line, reasoning and answer segments) and the
    # table of an --each batch: the same attack must stay text in each.
    import json

    from test_ask_unit import stream_into_live_view
    from vllm_magics.ask.answer import AnswerList
    from vllm_magics.notebook.views.answer_view import answer_list_html

    _, sink, _ = stream_into_live_view(("Text **bold** " + ATTACK + "\n\n") * 300, reasoning=ATTACK * 50, piece=97)
    live_html = "".join(o["text/html"] for o in sink.outputs)
    table = answer_list_html(AnswerList([finished_answer()] * 60))
    probe_js = """<pre id="probe"></pre><script>window.addEventListener("load", () => {
      document.getElementById("probe").textContent = JSON.stringify({
        pwned: document.body.getAttribute("data-pwned"), answers: document.querySelectorAll(".vm-answer-text").length,
        bold: document.querySelectorAll(".vm-answer-text strong").length});});</script>"""
    for name, body in (("live.html", live_html), ("table.html", table)):
        path = tmp_path / name
        path.write_text(f"<!doctype html><html><head><meta charset='utf-8'></head><body>{body}{probe_js}</body></html>")
        dom = dump_dom(path)
        result = json.loads(re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S).group(1).replace("&quot;", '"'))
        assert result["pwned"] is None, name
        if name == "live.html":
            assert result["answers"] > 1 and result["bold"] >= 300  # segments, Markdown rendered in each
