"""Model answers as safe HTML: CommonMark (markdown-it-py) with tables and strikethrough.

Why markdown-it-py: it is a maintained CommonMark parser whose cost grows linearly with the text (the
hand-written regexes it replaced took 78 s on `" **a" * 20000`), and Colab already ships it. Model text
is untrusted, so: raw HTML is off (a `<script>` the model writes is shown as text), images are off (no
requests to hosts the model picks), and a link survives only with an http(s) target; anything else is
kept as its plain text. Code blocks are highlighted with Pygments (an IPython dependency). Math
(`$...$`, `$$...$$`, `\\(...\\)`, `\\[...\\]`) is kept as escaped text, untouched by emphasis or
backslash escapes, for the notebook's MathJax/KaTeX to typeset. markdown_it is imported on first use.
"""
from __future__ import annotations

import bisect
import functools
import html
import re

_URL = re.compile(r"(?<![\w/@.])https?://[^\s<>\"'`]+")
_URL_TAIL = ".,;:!?)]}*_~"  # punctuation that ends a sentence, not a bare URL
_SAFE_SCHEME = re.compile(r"https?://", re.I)
_LABEL_END = re.compile(r"\][(\[]")  # where a link's label ends: `](url)` or `][ref]`
_parser = None


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


def highlight(code: str, language: str) -> str:
    """Highlighted HTML for a code block (inline styles: no stylesheet needed in a notebook output)."""
    label = f'<div class="vm-code-lang">{_esc(language)}</div>' if language else ""
    lexer = _lexer(language) if language else None
    if lexer is None:
        return f'<div class="vm-codeblock">{label}<pre class="vm-code"><code>{_esc(code)}</code></pre></div>'
    from pygments import highlight as pyg_highlight

    formatted = pyg_highlight(code, lexer, _formatter())
    return f'<div class="vm-codeblock">{label}<pre class="vm-code"><code>{formatted}</code></pre></div>'


@functools.lru_cache(maxsize=64)  # an answer with many code blocks looks each language up once
def _lexer(language: str):
    from pygments.lexers import get_lexer_by_name
    from pygments.util import ClassNotFound

    try:
        return get_lexer_by_name(language)
    except ClassNotFound:
        return None


@functools.lru_cache(maxsize=1)
def _formatter():
    from pygments.formatters import HtmlFormatter

    return HtmlFormatter(noclasses=True, nowrap=True, style="default")


# -- math: one token of escaped text ----------------------------------------------------------
def _math(state, silent: bool) -> bool:
    """`$x$`, `$$x$$`, `\\(x\\)`, `\\[x\\]` as one token. Runs before backslash escapes (which would turn
    `\\(` into `(`). Stays linear: a `$` looks only as far as the next `$`, and a closer known to be
    missing is not searched for again. Inside a link's label, a span stops at the label's end (the link
    wins: `[a $x](https://e.example) b$` is a link)."""
    src, pos, end_max = state.src, state.pos, state.posMax
    # Only markdown-it's link rule asks silently, to find where a label ends: there a span stops before
    # the label's `](` or `][`, or it would swallow the link.
    limit = min(end_max, _label_end(state, pos)) if silent else end_max
    if src.startswith("$$", pos) or src.startswith("\\(", pos) or src.startswith("\\[", pos):
        closer = {"$": "$$", "(": "\\)", "[": "\\]"}[src[pos + 1]]
        missing = state.env.setdefault("vm_math_missing", {})
        key = (closer, id(src), limit)
        if missing.get(key, limit + 1) <= pos:
            return False
        close = src.find(closer, pos + 2, limit)
        if close < 0:
            missing[key] = pos
            return False
        if close == pos + 2:
            return False  # `$$$$`: nothing inside
        end = close + 2
    elif src[pos] == "$":
        # Single dollars: not a price ("$5 or $10"), not inside a word, on one line, no space inside the ends.
        if pos > 0 and (src[pos - 1].isalnum() or src[pos - 1] in "\\$_"):
            return False
        close = src.find("$", pos + 1, limit)  # never pos + 1: a `$$` took the branch above
        if close < 0 or src[pos + 1].isspace() or src[close - 1].isspace():
            return False
        if close + 1 < end_max and (src[close + 1].isalnum() or src[close + 1] == "_"):
            return False
        if "\n" in src[pos:close]:
            return False
        end = close + 1
    else:
        return False
    if not silent:
        token = state.push("vm_math", "", 0)
        token.content = src[pos:end]
    state.pos = end
    return True


def _label_end(state, pos: int) -> int:
    """The next `](` or `][` from `pos` on (the text's length if none). One pass over the text finds
    them all, however many label scans ask: a search per ask would make `[` + `\\( a[b](c ` * n quadratic."""
    found = state.env.setdefault("vm_label_ends", {})
    if id(state.src) not in found:
        found[id(state.src)] = [m.start() for m in _LABEL_END.finditer(state.src)]
    ends = found[id(state.src)]
    i = bisect.bisect_left(ends, pos)
    return ends[i] if i < len(ends) else len(state.src)


# -- links: only http(s), new tab; bare URLs become links ---------------------------------------
def _links(state) -> None:
    """Hide links whose target is not http(s) (their text stays) and turn bare http(s) URLs in text into
    links. markdown-it keeps a link whose target failed validation, with an empty href: that must not
    reach the page."""
    from markdown_it.token import Token

    for block in state.tokens:
        if block.type != "inline" or not block.children:
            continue
        out, opened = [], []  # opened: the links we are inside (markdown-it never nests them)
        for tok in block.children:
            if tok.type == "link_open":
                ok = bool(_SAFE_SCHEME.match(tok.attrGet("href") or ""))
                tok.hidden = not ok
                opened.append(tok)
            elif tok.type == "link_close" and opened:
                tok.hidden = opened.pop().hidden
            elif tok.type == "text" and not opened and "://" in tok.content:
                out += _autolink(tok.content, Token, state.md)
                continue
            out.append(tok)
        block.children = out


def _autolink(text: str, Token, md) -> list:
    pieces, last = [], 0
    for m in _URL.finditer(text):
        url = m.group(0).rstrip(_URL_TAIL)
        start, stop = m.start(), m.start() + len(url)
        href = md.normalizeLink(url)
        if len(url) <= len("https://") or not md.validateLink(href):
            continue
        if start > last:
            pieces.append(_text_token(Token, text[last:start]))
        link = Token("link_open", "a", 1)
        link.attrSet("href", href)
        pieces += [link, _text_token(Token, url), Token("link_close", "a", -1)]
        last = stop
    if last < len(text):
        pieces.append(_text_token(Token, text[last:]))
    return pieces


def _text_token(Token, content: str):
    tok = Token("text", "", 0)
    tok.content = content
    return tok


# -- rendering rules ----------------------------------------------------------------------------
def _fence(self, tokens, idx, options, env) -> str:
    tok = tokens[idx]
    info = tok.info.strip()
    language, _, rest = info.partition(" ")
    code = tok.content
    if rest.strip():
        # "```python print(1)": CommonMark calls the rest an info string and shows it nowhere; a model
        # that wrote it meant it as code, so it is the first line rather than lost.
        code = rest.strip() + "\n" + code
    return highlight(code.rstrip("\n"), language)


def _code_block(self, tokens, idx, options, env) -> str:
    return highlight(tokens[idx].content.rstrip("\n"), "")


def _math_html(self, tokens, idx, options, env) -> str:
    return _esc(tokens[idx].content)


def _link_open(self, tokens, idx, options, env) -> str:
    tokens[idx].attrSet("target", "_blank")
    tokens[idx].attrSet("rel", "noopener noreferrer")
    return self.renderToken(tokens, idx, options, env)


def _table_open(self, tokens, idx, options, env) -> str:
    return '<table class="vm-table">\n'


def _cell(tag: str):
    def render(self, tokens, idx, options, env) -> str:
        return f"<{tag}>"  # alignment is dropped: Jupyter's styles decide it inside our cards
    return render


def _parser_instance():
    global _parser
    if _parser is None:
        from markdown_it import MarkdownIt

        md = MarkdownIt("commonmark", {"html": False, "xhtmlOut": False, "breaks": False})
        md.enable(["table", "strikethrough"]).disable(["image", "html_inline", "html_block"])
        md.validateLink = lambda url: bool(_SAFE_SCHEME.match(url.strip()))
        md.inline.ruler.before("escape", "vm_math", _math)
        md.core.ruler.after("inline", "vm_links", _links)
        for name, rule in (("fence", _fence), ("code_block", _code_block), ("vm_math", _math_html),
                           ("link_open", _link_open), ("table_open", _table_open), ("th_open", _cell("th")),
                           ("td_open", _cell("td")), ("s_open", lambda *a: "<del>"),
                           ("s_close", lambda *a: "</del>")):
            md.add_render_rule(name, rule)
        _parser = md
    return _parser


def render_markdown(text: str) -> str:
    """Markdown -> HTML fragment (safe for untrusted text). Cost linear in the text."""
    return _parser_instance().render(text)
