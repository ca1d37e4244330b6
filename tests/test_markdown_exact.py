"""The answer renderer's output in full for the constructs the README lists (bare links, tables, code,
math): a card shows exactly this HTML, so a stray or missing tag, or text lost around a link, shows here.
"""
import pytest

from vllm_magics.notebook.views.markdown import render_markdown

A = 'target="_blank" rel="noopener noreferrer"'


@pytest.mark.parametrize("text, html", [
    ("see https://a.example/x now", f'<p>see <a href="https://a.example/x" {A}>https://a.example/x</a> now</p>\n'),
    ("https://a.example/x", f'<p><a href="https://a.example/x" {A}>https://a.example/x</a></p>\n'),
    ("a https://a.example/1, b https://a.example/2.",
     f'<p>a <a href="https://a.example/1" {A}>https://a.example/1</a>, '
     f'b <a href="https://a.example/2" {A}>https://a.example/2</a>.</p>\n'),
    # a URL too short to be one is left as text, and the ones after it still become links
    ("https://. then https://a.example/x", f'<p>https://. then <a href="https://a.example/x" {A}>https://a.example/x</a></p>\n'),
    ("fetch ftp://a.example/f or s3://b/c", "<p>fetch ftp://a.example/f or s3://b/c</p>\n"),
    ("[docs](https://docs.vllm.ai)", f'<p><a href="https://docs.vllm.ai" {A}>docs</a></p>\n'),
])
def test_links_in_full(text, html):
    assert render_markdown(text) == html


def test_a_table_in_full():
    assert render_markdown("| a | b |\n|:--|--:|\n| <1> | ~~2~~ |") == (
        '<table class="vm-table">\n<thead>\n<tr>\n<th>a</th>\n<th>b</th>\n</tr>\n</thead>\n'
        "<tbody>\n<tr>\n<td>&lt;1&gt;</td>\n<td><del>2</del></td>\n</tr>\n</tbody>\n</table>\n")


def test_an_indented_code_block_is_code_escaped():
    assert render_markdown("Run:\n\n    x = 1\n    print('<b>')\n") == (
        '<p>Run:</p>\n<div class="vm-codeblock"><pre class="vm-code"><code>x = 1\nprint(&#x27;&lt;b&gt;&#x27;)'
        "</code></pre></div>")


@pytest.mark.parametrize("last_line", ["x = 1   ", "x = X"])  # trailing spaces, a last "X": code as written
def test_an_indented_code_block_keeps_its_last_line(last_line):
    assert render_markdown(f"Run:\n\n    {last_line}\n") == (
        f'<p>Run:</p>\n<div class="vm-codeblock"><pre class="vm-code"><code>{last_line}</code></pre></div>')


def test_an_unclosed_display_math_does_not_hide_later_math():
    # "$$" without its closer: the \( ... \) after it is still math (its backslashes kept)
    html = render_markdown("$$ a and \\(b_1\\) and \\(c_2\\)")
    assert "\\(b_1\\)" in html and "\\(c_2\\)" in html and "<em>" not in html


def test_a_missing_closer_in_one_paragraph_does_not_hide_math_in_the_next():
    # two paragraphs of the same length: "$$" without a closer in the first, "$$...$$" in the second
    html = render_markdown("$$ abcdefg\n\n$$\\{a\\}$$x")
    assert "$$\\{a\\}$$" in html


# Where `$...$` is math (kept as written, backslashes and all) and where it is not (then `\{` is an escape
# and shows as `{`): after a letter, digit or `_`, before one, with a space inside either end, or across
# a line, a dollar is plain text (prices, shell variables).
@pytest.mark.parametrize("text, html", [
    ("a $\\{b\\}$ c", "<p>a $\\{b\\}$ c</p>\n"),
    ("$\\{b\\}$ a", "<p>$\\{b\\}$ a</p>\n"),
    ("$a \\{b\\}$", "<p>$a \\{b\\}$</p>\n"),
    ("$\\{b\\} a$", "<p>$\\{b\\} a$</p>\n"),
    ("$\\{a\\}$ b", "<p>$\\{a\\}$ b</p>\n"),
    ("$a$ *em* $b$", "<p>$a$ <em>em</em> $b$</p>\n"),
    ("$\\{a\\}$b", "<p>${a}$b</p>\n"),
    ("$\\{a\\}$_x", "<p>${a}$_x</p>\n"),
    ("a$\\{b\\}$", "<p>a${b}$</p>\n"),
    ("x_$\\{b\\}$", "<p>x_${b}$</p>\n"),
    ("$ \\{a\\}$", "<p>$ {a}$</p>\n"),
    ("$\\{a\\}\n\\{b\\}$", "<p>${a}\n{b}$</p>\n"),
    ("$$a$$ *em* $$b$$", "<p>$$a$$ <em>em</em> $$b$$</p>\n"),
    ("$$*$$ *b*", "<p>$$*$$ <em>b</em></p>\n"),
    ("$$a$$*b*", "<p>$$a$$<em>b</em></p>\n"),
])
def test_dollar_math_in_full(text, html):
    assert render_markdown(text) == html


def test_the_parser_is_built_on_first_use_with_our_rules(monkeypatch):
    """markdown_it is imported and the parser built when first needed; built afresh, it renders the same."""
    from vllm_magics.notebook.views import markdown

    samples = ["see https://a.example/x now", "| a |\n|---|\n| ~~b~~ |", "$a$ *em* $b$", "    code\n",
               "<b>raw</b> ![i](https://e.example/i.png) [x](javascript:alert(1))", "```py\nx = 1\n```"]
    before = [render_markdown(s) for s in samples]
    monkeypatch.setattr(markdown, "_parser", None)
    assert [render_markdown(s) for s in samples] == before
    assert "&lt;b&gt;raw&lt;/b&gt;" in before[4] and "<img" not in before[4] and 'href="javascript' not in before[4]


@pytest.mark.parametrize("text, html", [
    # a URL in a link's text stays text: no link inside a link
    ("[see https://a.example/x](https://b.example/)", f'<p><a href="https://b.example/" {A}>see https://a.example/x</a></p>\n'),
    ("[**b** https://a.example/x](https://b.example/)",
     f'<p><a href="https://b.example/" {A}><strong>b</strong> https://a.example/x</a></p>\n'),
    # after a link, and around other inline markup, bare URLs still become links and nothing is lost
    ("[a](https://a.example/) then https://b.example/y",
     f'<p><a href="https://a.example/" {A}>a</a> then <a href="https://b.example/y" {A}>https://b.example/y</a></p>\n'),
    ("a *b* https://x.example/z c", f'<p>a <em>b</em> <a href="https://x.example/z" {A}>https://x.example/z</a> c</p>\n'),
    ("see https://a.example/x *b*", f'<p>see <a href="https://a.example/x" {A}>https://a.example/x</a> <em>b</em></p>\n'),
])
def test_links_and_bare_urls_together(text, html):
    assert render_markdown(text) == html
