"""The answer's Markdown renderer: formatting, and nothing the model writes becomes live HTML."""
import pytest

from vllm_magics.notebook.views.markdown import render_markdown

NASTY = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "[click](javascript:alert(1))",
    "**<b onmouseover=alert(1)>x</b>**",
    "`<script>`",
    "| a |\n|---|\n| <iframe src=//evil> |",
    "```html\n<script>alert(1)</script>\n```",
    "- <svg onload=alert(1)>",
    "> <style>body{display:none}</style>",
    '[x](https://ok.example/"onmouseover="alert(1))',
]


@pytest.mark.parametrize("text", NASTY)
def test_model_text_never_becomes_markup(text):
    html = render_markdown(text)
    for bad in ("<script", "<img", "<iframe", "<svg", "<style", 'href="javascript', 'onmouseover="', "<b "):
        assert bad not in html, html


def test_common_markdown():
    html = render_markdown("# Title\n\nSome **bold**, *italic*, ~~gone~~ and `code`.\n\n"
                           "- one\n  - nested\n- two\n\n1. first\n2. second\n\n> quoted\n\n---\n\n"
                           "| a | b |\n|---|:-:|\n| 1 | 2 |\n\nSee [docs](https://docs.vllm.ai).")
    for piece in ("<h1>Title</h1>", "<strong>bold</strong>", "<em>italic</em>", "<del>gone</del>",
                  "<code>code</code>", "<ul><li>one<ul><li>nested</li></ul></li><li>two</li></ul>",
                  "<ol><li>first</li><li>second</li></ol>", "<blockquote><p>quoted</p></blockquote>", "<hr>",
                  "<th>a</th>", "<td>2</td>", '<a href="https://docs.vllm.ai" target="_blank"'):
        assert piece in html, piece


def test_code_is_highlighted_and_escaped():
    html = render_markdown("```python\nif a < b:\n    print('<hi>')\n```")
    assert "vm-codeblock" in html and "python" in html and "style=" in html  # pygments inline styles
    assert "&lt;" in html and "<hi>" not in html


def test_unclosed_fence_while_streaming_still_renders():
    assert "vm-code" in render_markdown("Here:\n```python\nx = 1")


def test_math_is_left_for_the_frontend():
    html = render_markdown("Euler: $e^{i\\pi} + 1 = 0$ and $$\\int_0^1 x_i^2 \\, dx$$ and \\(a_b\\)")
    assert "$e^{i\\pi} + 1 = 0$" in html and "$$\\int_0^1 x_i^2 \\, dx$$" in html and "\\(a_b\\)" in html
    assert "<em>" not in html  # underscores inside math are not emphasis


def test_snake_case_and_prices_are_not_mangled():
    html = render_markdown("call my_func_name and pay $5 or $10 today")
    assert "my_func_name" in html and "$5 or $10" in html
