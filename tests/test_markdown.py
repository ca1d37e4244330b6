"""The answer's Markdown renderer: formatting, and nothing the model writes becomes live HTML."""
import re
from html.parser import HTMLParser

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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


def tight(text):
    return render_markdown(text).replace("\n", "")


@pytest.mark.parametrize("text", NASTY)
def test_model_text_never_becomes_markup(text):
    html = render_markdown(text)
    for bad in ("<script", "<img", "<iframe", "<svg", "<style", 'href="javascript', 'onmouseover="', "<b "):
        assert bad not in html, html


def test_common_markdown():
    # Compared without newlines: markdown-it puts one after each block tag.
    html = tight("# Title\n\nSome **bold**, *italic*, ~~gone~~ and `code`.\n\n"
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


@pytest.mark.parametrize("text, escaped", [
    ("# <b>head</b>", "<h1>&lt;b&gt;head&lt;/b&gt;</h1>"),
    ("| <i>h</i> |\n|---|\n| c |", "<th>&lt;i&gt;h&lt;/i&gt;</th>"),
    ("```nolang\n<b>x</b>\n```", "<code>&lt;b&gt;x&lt;/b&gt;</code>"),
    ("```<b>\nx\n```", '<div class="vm-code-lang">&lt;b&gt;</div>'),
    ("$<b>x</b>$ and $$<i>$$ and \\(<u>\\)", "$&lt;b&gt;x&lt;/b&gt;$ and $$&lt;i&gt;$$ and \\(&lt;u&gt;\\)"),
])
def test_every_kind_of_text_is_escaped(text, escaped):
    # Headings, table headers, unknown-language code, code labels and math: each escapes on its own path.
    assert escaped in render_markdown(text)


def test_math_keeps_its_backslashes_and_stars():
    html = render_markdown("$a*b*c$ and \\[x_1 \\, y_2\\] and \\(\\{a\\}\\)")
    assert "$a*b*c$" in html and "\\[x_1 \\, y_2\\]" in html and "\\(\\{a\\}\\)" in html and "<em>" not in html


def test_text_after_an_opening_fence_is_kept():
    html = render_markdown("```python print('on the fence line')\nx = 1\n```")
    assert "on the fence line" in html and "vm-codeblock" in html


@pytest.mark.parametrize("text", ["\x000\x00", "a \x001\x00 **b**", "`\x000\x00` $\x000\x00$"])
def test_placeholder_lookalikes_in_model_text(text):
    # The old renderer swapped protected pieces in and out as NUL-digits-NUL: this text raised IndexError.
    assert "0" in render_markdown(text) or "1" in render_markdown(text)


@pytest.mark.parametrize("text", [
    "[x](javascript:alert(1))", "[x](JaVaScRiPt:alert(1))", "[x](data:text/html,<script>)", "[x](/relative)",
    "<javascript:alert(1)>", "[x][r]\n\n[r]: javascript:alert(1)", "[x](vbscript:msgbox)",
])
def test_only_http_links_survive(text):
    html = render_markdown(text)
    assert "<a" not in html and "href" not in html


def test_images_are_not_loaded():
    # An image would make the browser fetch a URL the model chose: it stays a link to click.
    html = render_markdown("![i](https://e.example/i.png)")
    assert "<img" not in html and '<a href="https://e.example/i.png"' in html


def test_bare_urls_become_links_without_trailing_punctuation():
    html = render_markdown("See https://docs.vllm.ai/en/latest. Or (https://a.example/x).")
    assert '<a href="https://docs.vllm.ai/en/latest" target="_blank" rel="noopener noreferrer">' in html
    assert '<a href="https://a.example/x" ' in html


# -- the property: whatever the model writes, only our markup comes out ----------------------------
ALLOWED = {"p", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "del", "code", "pre", "div", "span", "ul",
           "ol", "li", "blockquote", "hr", "br", "table", "thead", "tbody", "tr", "th", "td", "a"}
ATTRS = {"a": {"href", "target", "rel"}, "div": {"class"}, "pre": {"class"}, "span": {"style"},
         "table": {"class"}, "ol": {"start"}}
PAYLOADS = ["<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "<a href=\"javascript:alert(1)\">j</a>",
            "[j](javascript:alert(1))", "[q](https://ok.example/\"onmouseover=\"alert(1))", "\" onclick=\"x",
            "' onfocus='x", "<svg/onload=alert(1)>", "javascript:alert(1)", "<iframe src=//evil>", "&lt;b&gt;",
            "<style>*{}</style>", "<<b>>", "\x000\x00", "https://ok.example/<b>"]
words = st.sampled_from(["word", "**bold", "*em*", "_x_", "~~s~~", "`code`", "\\", "|", "$", "$$", "\\(", "\\)",
                         "\\[", "\\]", "<", ">", "&", "\"", "'", "*", "#", "-", "1.", ">", "```"])
inline = st.lists(st.one_of(st.sampled_from(PAYLOADS), words), min_size=1, max_size=6).map(" ".join)
spans = st.one_of(inline, inline.map(lambda t: f"`{t}`"), inline.map(lambda t: f"${t}$"),
                  inline.map(lambda t: f"$${t}$$"), inline.map(lambda t: f"\\({t}\\)"))
line = st.lists(spans, min_size=1, max_size=4).map(" ".join)
language = st.one_of(st.sampled_from(["", "python", "html", "js", "nope"]), st.text(min_size=1, max_size=12).filter(
    lambda t: "`" not in t and "\n" not in t and "\r" not in t))
block = st.one_of(
    line,
    st.tuples(st.integers(1, 6), line).map(lambda t: "#" * t[0] + " " + t[1]),
    st.lists(line, min_size=1, max_size=3).map(lambda ls: "\n".join(f"- {x}" for x in ls)),
    st.lists(line, min_size=1, max_size=3).map(lambda ls: "\n".join(f"{i + 1}. {x}" for i, x in enumerate(ls))),
    line.map(lambda t: f"> {t}"),
    st.tuples(line, line).map(lambda t: f"| {t[0]} | h |\n|---|---|\n| {t[1]} | c |"),
    st.tuples(language, inline).map(lambda t: f"```{t[0]}\n{t[1]}\n```"),
    st.tuples(language, inline).map(lambda t: f"~~~{t[0]}\n{t[1]}"),  # unclosed, as while streaming
)
documents = st.lists(block, min_size=1, max_size=6).map("\n\n".join)


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.problems = []

    def handle_starttag(self, tag, attrs):
        if tag not in ALLOWED:
            self.problems.append(f"tag <{tag}>")
        for name, value in attrs:
            if name.startswith("on") or name not in ATTRS.get(tag, set()):
                self.problems.append(f"attribute {name} on <{tag}>")
            if name == "href" and not re.match(r"https?://", value or ""):
                self.problems.append(f"link to {value!r}")


def markup_problems(html: str) -> list:
    parser = _Tags()
    parser.feed(html)
    parser.close()
    return parser.problems


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_rendered_markup_is_only_ours(text):
    assert markup_problems(render_markdown(text)) == []
