"""Two real vLLM servers at once (SmolLM2 and the tiny reasoning model), compared on one prompt, and the
side-by-side view opened in headless Chromium at a notebook's width.

A third column comes from the stand-in server of test_compare.py, whose model writes HTML meant to run
(ATTACK): the page must show it as text. The magics' wiring (`%%ask --compare`, two servers started and
stopped through %vllm_serve --name) is tested in a real kernel in test_named_servers_real.py; this file holds
the parts below it, on the session servers."""
from __future__ import annotations

import json
import re
import urllib.request

import pytest

from browser import run_chromium
from test_compare import ATTACK, RecordingSink, SseStandIn
from vllm_magics.ask.compare import Target, compare, compare_each

pytestmark = [pytest.mark.server, pytest.mark.browser]

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
# Our own probe (trusted): measures the columns as laid out and writes the figures into the page.
PROBE = """<pre id="probe"></pre><script>
window.addEventListener("load", () => {
  const view = document.querySelector("#final");
  const cols = [...view.querySelectorAll(".vm-cmp-col")].map(c => {
    const r = c.getBoundingClientRect();
    return {top: Math.round(r.top), left: Math.round(r.left), width: Math.round(r.width),
            overflows: c.scrollWidth > c.clientWidth + 1,
            font: parseFloat(getComputedStyle(c.querySelector(".vm-answer-text")).fontSize)};
  });
  document.getElementById("probe").textContent = JSON.stringify({cols,
    page_overflows: document.documentElement.scrollWidth > window.innerWidth,
    open_reasoning: view.querySelectorAll("details.vm-reasoning[open]").length,
    reasoning_blocks: view.querySelectorAll("details.vm-reasoning").length,
    pwned: document.body.getAttribute("data-pwned")});
});</script>"""


def r1_recipe(server) -> dict:
    """What makes the random tiny-r1 write a fixed reasoning and answer (as in test_ask_real.py): a
    regex over the whole output and a push towards the single `</think>` token."""
    req = urllib.request.Request(f"{server.base_url}/tokenize", json.dumps(
        {"model": server.plan.model, "prompt": "</think>", "add_special_tokens": False}).encode(),
        {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        [token] = json.load(resp)["tokens"]
    return {"structured_outputs": {"regex": "I think\\.</think>The answer\\."}, "logit_bias": {str(token): 100}}


def layout(tmp_path, html: str, live_html: str, width: int) -> dict:
    page = tmp_path / f"compare-{width}.html"
    page.write_text("<!doctype html><html><head><meta charset='utf-8'></head><body style='margin:8px'>"
                    f"<div id='final'>{html}</div><div id='live'>{live_html}</div>{PROBE}</body></html>")
    dom = run_chromium(f"file://{page}", "--dump-dom", f"--window-size={width},1200")
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert found, dom[-2000:]
    return json.loads(found.group(1).replace("&quot;", '"'))


def test_two_servers_answer_side_by_side_and_the_view_reads_well_at_notebook_width(smollm2_server, r1_server,
                                                                                    tmp_path):
    """On the session servers (the same models and flags this test used to start for itself; two servers
    started at once and stopped with nothing left are tested through %vllm_serve --name in
    test_named_servers_real.py)."""
    from vllm_magics.notebook.views.compare import LiveCompare, compare_table_html

    hostile = SseStandIn()
    try:
        smol, r1 = smollm2_server, r1_server  # two servers at once: each has its own port, key and process group
        assert smol.plan.port != r1.plan.port and smol.pgid != r1.pgid and smol.api_key != r1.api_key
        targets = [Target("SmolLM2", smol.base_url, smol.api_key, params={"max_tokens": 40}),
                   Target("tiny-r1", r1.base_url, r1.api_key, params={"max_tokens": 30, **r1_recipe(r1)}),
                   Target("hostile", hostile.url, model="hostile")]
        sink = RecordingSink()
        live = LiveCompare([t.label for t in targets], notebook=True, sink=sink)
        result = compare(targets, QUESTION, {"temperature": 0}, on_update=live.update, on_done=live.done,
                         on_tick=live.tick)
        live.finish(result)

        smol_answer, r1_answer, bad = result
        assert "Paris" in smol_answer.text and smol_answer.ok
        assert (r1_answer.reasoning, r1_answer.text, r1_answer.reasoning_source) == ("I think.", "The answer.",
                                                                                   "reasoning")
        assert bad.ok and "<script>" in bad.text  # the model did write it: the view must defuse it
        assert live.updates >= 2 and sink.outputs[0]["text/html"].count('class="vm-cmp-col') == 3

        table = compare_each(targets[:2], ["France", "Italy"],
                             lambda c: (c, [{"role": "user", "content": f"What is the capital of {c}?"}]),
                             {"temperature": 0}, concurrency=4)
        assert [row[1].text for row in table.rows] == ["The answer.", "The answer."]
        assert "Paris" in table.rows[0][0].text and "Rome" in table.rows[1][0].text
    finally:
        hostile.close()

    # The view in a browser: the final columns, and the live view of the same answers.
    replay = LiveCompare([t.label for t in targets], notebook=True, sink=RecordingSink())
    for j, answer in enumerate(result):
        replay.done(j, answer)
    replay.tick()
    live_html = replay.sink.outputs[0]["text/html"]
    final_html = sink.outputs[0]["text/html"] + compare_table_html(table)
    assert "<script>document" not in final_html + live_html  # escaped as text, before any browser

    wide = layout(tmp_path, final_html, live_html, 800)
    assert wide["pwned"] is None and not wide["page_overflows"]
    cols = wide["cols"]
    assert len(cols) == 3 and len({c["top"] for c in cols}) == 1  # side by side
    assert [c["left"] for c in cols] == sorted(c["left"] for c in cols)
    assert all(c["width"] >= 200 and not c["overflows"] and c["font"] >= 12 for c in cols), cols
    assert wide["reasoning_blocks"] == 2 and wide["open_reasoning"] == 0  # tiny-r1's and hostile's, collapsed

    narrow = layout(tmp_path, final_html, live_html, 480)
    assert narrow["pwned"] is None and not narrow["page_overflows"]
    tops = [c["top"] for c in narrow["cols"]]
    assert tops == sorted(tops) and len(set(tops)) == 3  # one column per row below 600 px
    assert all(c["width"] >= 400 for c in narrow["cols"]), narrow["cols"]


@pytest.mark.browser
def test_the_probe_would_see_an_executed_script(tmp_path):
    # Control: the same attack, not escaped, does run in this page; so `pwned` None above means the escaping held.
    html = '<div class="vm-cmp"><div class="vm-cmp-col"><div class="vm-answer-text">x</div></div></div>'
    assert layout(tmp_path, html + ATTACK, "", 800)["pwned"] in ("script", "img")
