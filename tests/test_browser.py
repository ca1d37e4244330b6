"""The rendered answer, opened in a real browser: reasoning collapsed, answer visible, model-written
HTML inert."""
import re

import pytest

from browser import dump_dom, screenshot
from vllm_magics.ask.answer import Answer

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
    path = page(tmp_path, finished_answer().html_view())
    result = probe(dump_dom(path))
    assert result == {"reasoning_rendered": False, "answer_height": result["answer_height"],
                      "details_open": False, "pwned": None}
    assert result["answer_height"] > 10
    screenshot(path, tmp_path / "answer.png")
    assert (tmp_path / "answer.png").stat().st_size > 5000


def test_reasoning_is_open_while_it_streams(tmp_path):
    live = Answer(reasoning="Let me think about France.", streaming=True)
    result = probe(dump_dom(page(tmp_path, live.html_view())))
    assert result["details_open"] is True and result["reasoning_rendered"] is True


def test_the_probe_would_see_an_executed_script(tmp_path):
    # Control: the same attack, not escaped, does run; so a `None` above means the escaping held.
    html = finished_answer().html_view().replace("The capital of", ATTACK + "The capital of")
    assert probe(dump_dom(page(tmp_path, html)))["pwned"] in ("script", "img")
