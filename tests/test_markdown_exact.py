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
    ("$a$*b*", "<p>$a$<em>b</em></p>\n"),
    ("$a\\\\$ b", "<p>$a\\\\$ b</p>\n"),  # a TeX line break `\\` at the end: both backslashes kept
    # `\(\)` with nothing inside is not math (its escapes show as "()"), and does not reach a later closer
    ("\\(\\) and \\(x\\)", "<p>() and \\(x\\)</p>\n"),
    ("\\[\\] and \\[x\\]", "<p>[] and \\[x\\]</p>\n"),
])
def test_dollar_math_in_full(text, html):
    assert render_markdown(text) == html


def test_the_parser_is_built_on_first_use_with_our_rules(monkeypatch):
    """markdown_it is imported and the parser built when first needed, then kept; built afresh, it renders
    the same, and what it renders is our HTML (HTML5 `<br>`/`<hr>`, no alignment styles, our code blocks)."""
    from vllm_magics.notebook.views import markdown

    samples = ["see https://a.example/x now", "| a |\n|---|\n| ~~b~~ |", "$a$ *em* $b$", "    code\n",
               "<b>raw</b> ![i](https://e.example/i.png) [x](javascript:alert(1))", "```py\nx = 1\n```",
               "a\nb  \nc\n\n---", "| a | b |\n|:-:|--:|\n| c | d |"]
    before = [render_markdown(s) for s in samples]
    monkeypatch.setattr(markdown, "_parser", None)
    fresh = [render_markdown(s) for s in samples]
    assert fresh == before
    assert "&lt;b&gt;raw&lt;/b&gt;" in before[4] and "<img" not in before[4] and 'href="javascript' not in before[4]
    assert markdown._parser is not None and markdown._parser_instance() is markdown._parser_instance()
    # exact, for the parser built afresh: each option and rule of ours shows in one of these
    assert fresh[0] == f'<p>see <a href="https://a.example/x" {A}>https://a.example/x</a> now</p>\n'
    assert fresh[1] == ('<table class="vm-table">\n<thead>\n<tr>\n<th>a</th>\n</tr>\n</thead>\n'
                        "<tbody>\n<tr>\n<td><del>b</del></td>\n</tr>\n</tbody>\n</table>\n")
    assert fresh[2] == "<p>$a$ <em>em</em> $b$</p>\n"
    assert fresh[3] == '<div class="vm-codeblock"><pre class="vm-code"><code>code</code></pre></div>'
    assert fresh[4] == ("<p>&lt;b&gt;raw&lt;/b&gt; !"
                        f'<a href="https://e.example/i.png" {A}>i</a> [x](javascript:alert(1))</p>\n')
    assert fresh[5].startswith('<div class="vm-codeblock"><div class="vm-code-lang">py</div><pre class="vm-code">'
                               "<code>x <span style=")  # Pygments' inline styles (their colours are its own)
    assert fresh[6] == "<p>a\nb<br>\nc</p>\n<hr>\n"  # a soft break stays a newline, a hard one is <br>
    assert fresh[7] == ('<table class="vm-table">\n<thead>\n<tr>\n<th>a</th>\n<th>b</th>\n</tr>\n</thead>\n'
                        "<tbody>\n<tr>\n<td>c</td>\n<td>d</td>\n</tr>\n</tbody>\n</table>\n")


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


@pytest.mark.parametrize("text, label", [
    # a span that would run past the label's `](` or `][` is not math there: the link wins ...
    ("[a $x](https://e.example/) b$", "a $x</a> b$"),
    ("[a $$x](https://e.example/) b$$", "a $$x</a> b$$"),
    ("[a \\(x](https://e.example/) b\\)", "a (x</a> b)"),
    ("[a $x][r] b$\n\n[r]: https://e.example/", "a $x</a> b$"),
    # ... and math that ends inside the label is math there, `]` and `[` in it included
    ("[$\\{a\\}$](https://e.example/)", "$\\{a\\}$</a>"),
    ("[a $x]$](https://e.example/)", "a $x]$</a>"),
    ("[a $x[$ b](https://e.example/)", "a $x[$ b</a>"),
    ("[a $$x[$$ b](https://e.example/)", "a $$x[$$ b</a>"),
])
def test_math_never_swallows_a_link(text, label):
    assert render_markdown(text) == f'<p><a href="https://e.example/" {A}>{label}</p>\n'


def test_math_after_the_last_label_end_in_a_label():
    # "[b $x$]" is scanned as a label after the text's last `](`: the math in it still ends where it did
    assert render_markdown("[a](https://e.example/) and [b $x$] c") == (
        f'<p><a href="https://e.example/" {A}>a</a> and [b $x$] c</p>\n')


def test_label_ends_are_found_in_one_pass(monkeypatch):
    """Each `\\(` in this label asks where the label ends: one pass over the text answers them all (a
    search per ask made such text quadratic to render). Counted, not timed."""
    from vllm_magics.notebook.views import markdown

    passes, real = [], markdown._LABEL_END

    class Counting:
        def finditer(self, text):
            passes.append(text)
            return real.finditer(text)

    monkeypatch.setattr(markdown, "_LABEL_END", Counting())
    text = "[" + "\\( a[b](c " * 50 + "\\)"
    assert render_markdown(text) == f"<p>{text}</p>\n" and len(passes) == 1


def test_math_outside_a_link_may_hold_brackets():
    assert render_markdown("$[0,1)$ and $(0,1]$ and $x](y$") == "<p>$[0,1)$ and $(0,1]$ and $x](y$</p>\n"


CODE = ('<div class="vm-codeblock"><div class="vm-code-lang">nolang</div>'
        '<pre class="vm-code"><code>{}</code></pre></div>')


@pytest.mark.parametrize("text, code", [
    # words after the language on the fence line are the code's first line; the label is the language
    ("```nolang first line\nx = 1\n```", "first line\nx = 1"),
    ("```nolang   a  b  \nx\n```", "a  b\nx"),
    # the last line is kept as written: trailing spaces, a last "X"
    ("```nolang\nx = 1   \n```", "x = 1   "),
    ("```nolang\nx = X\n```", "x = X"),
    ("```nolang\n<b>\n\n", "&lt;b&gt;"),  # unclosed while streaming: the blank lines are not code
])
def test_a_fenced_block_in_full(text, code):
    assert render_markdown(text) == CODE.format(code)


def test_a_code_label_escapes_quotes():
    assert render_markdown('```a"b\'c\nx\n```') == (
        '<div class="vm-codeblock"><div class="vm-code-lang">a&quot;b&#x27;c</div><pre class="vm-code"><code>x</code>'
        "</pre></div>")
