"""A small, safe Markdown-to-HTML renderer for model answers.

Why our own: the answer must be HTML (one output area that also holds the reasoning block), model
text is untrusted, and the project keeps to its dependencies. Every piece of text is HTML-escaped
before any markup is added, so nothing the model writes can become a tag or an attribute; links are
kept only for http(s) URLs. Code blocks are highlighted with Pygments (an IPython dependency, imported
on first use). Math (`$...$`, `$$...$$`, `\\(...\\)`, `\\[...\\]`) is left as text for the notebook's
MathJax/KaTeX to typeset.

Covers what chat models write: headings, paragraphs, emphasis, inline code, fenced code, lists
(nested by indentation), block quotes, tables, horizontal rules, links.
"""
from __future__ import annotations

import html
import re

_FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+#.-]*)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_HR = re.compile(r"^\s{0,3}([-*_])(\s*\1){2,}\s*$")
_LIST = re.compile(r"^(\s*)([-*+]|\d{1,9}[.)])\s+(.*)$")
_TABLE_SEP = re.compile(r"^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$")
_MATH = re.compile(r"(\$\$.+?\$\$|\\\[.+?\\\]|\\\(.+?\\\)|(?<![\\$\w])\$[^\s$](?:[^$\n]*?[^\s$])?\$(?!\w))", re.S)
_CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.S)
_LINK = re.compile(r"\[([^\]\n]+)\]\((https?://[^\s)]+)\)")
_AUTOLINK = re.compile(r"(?<![\"'=>])\bhttps?://[^\s<]+[^\s<.,;:!?)\]'\"]")
_STRONG = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1", re.S)
_EM = re.compile(r"(?<![\w*])([*_])(?=\S)(.+?)(?<=\S)\1(?![\w*])", re.S)
_STRIKE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~")


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


def highlight(code: str, language: str) -> str:
    """Highlighted HTML for a code block (inline styles: no stylesheet needed in a notebook output)."""
    try:
        from pygments import highlight as pyg_highlight
        from pygments.formatters import HtmlFormatter
        from pygments.lexers import get_lexer_by_name
        from pygments.util import ClassNotFound
    except ImportError:  # pragma: no cover - pygments comes with IPython
        return f'<pre class="vm-code"><code>{_esc(code)}</code></pre>'
    try:
        lexer = get_lexer_by_name(language) if language else None
    except ClassNotFound:
        lexer = None
    label = f'<div class="vm-code-lang">{_esc(language)}</div>' if language else ""
    if lexer is None:
        return f'<div class="vm-codeblock">{label}<pre class="vm-code"><code>{_esc(code)}</code></pre></div>'
    formatted = pyg_highlight(code, lexer, HtmlFormatter(noclasses=True, nowrap=True, style="default"))
    return f'<div class="vm-codeblock">{label}<pre class="vm-code"><code>{formatted}</code></pre></div>'


def inline(text: str) -> str:
    """Inline Markdown of one block of text -> HTML. Code spans and math are protected first."""
    protected: list[str] = []

    def keep(html_piece: str) -> str:
        protected.append(html_piece)
        return f"\x00{len(protected) - 1}\x00"

    text = _CODE_SPAN.sub(lambda m: keep(f"<code>{_esc(m.group(2).strip())}</code>"), text)
    text = _MATH.sub(lambda m: keep(_esc(m.group(0))), text)
    text = _LINK.sub(lambda m: keep(f'<a href="{_esc(m.group(2))}" target="_blank" rel="noopener noreferrer">'
                                    f"{_esc(m.group(1))}</a>"), text)
    text = _AUTOLINK.sub(lambda m: keep(f'<a href="{_esc(m.group(0))}" target="_blank" '
                                        f'rel="noopener noreferrer">{_esc(m.group(0))}</a>'), text)
    out = _esc(text)
    out = _STRONG.sub(r"<strong>\2</strong>", out)
    out = _EM.sub(r"<em>\2</em>", out)
    out = _STRIKE.sub(r"<del>\1</del>", out)
    out = out.replace("  \n", "<br>\n")
    return re.sub("\x00(\\d+)\x00", lambda m: protected[int(m.group(1))], out)


def _split_row(line: str) -> list[str]:
    line = line.strip()
    if line.startswith("|"):
        line = line[1:]
    if line.endswith("|") and not line.endswith("\\|"):
        line = line[:-1]
    return [c.strip() for c in re.split(r"(?<!\\)\|", line)]


def _render_list(items: list[tuple[int, bool, str]]) -> str:
    """items: (indent, ordered, text) in order; nesting follows indentation."""
    out: list[str] = []
    stack: list[tuple[int, str]] = []  # (indent, tag)
    for indent, ordered, text in items:
        tag = "ol" if ordered else "ul"
        while stack and indent < stack[-1][0]:
            out.append(f"</li></{stack.pop()[1]}>")
        if not stack or indent > stack[-1][0]:
            out.append(f"<{tag}>")
            stack.append((indent, tag))
        else:
            out.append("</li>")
        out.append(f"<li>{inline(text)}")
    while stack:
        out.append(f"</li></{stack.pop()[1]}>")
    return "".join(out)


def render_markdown(text: str) -> str:
    """Markdown -> HTML fragment (safe for untrusted text)."""
    lines = text.replace("\r\n", "\n").split("\n")
    blocks: list[str] = []
    para: list[str] = []
    i = 0

    def flush_para():
        if para:
            blocks.append(f"<p>{inline(chr(10).join(para))}</p>")
            para.clear()

    while i < len(lines):
        line = lines[i]
        fence = _FENCE.match(line)
        if fence:
            flush_para()
            marker, lang = fence.group(2), fence.group(3)
            code = []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith(marker):
                code.append(lines[i])
                i += 1
            i += 1  # the closing fence (or the end: an unclosed block while streaming)
            blocks.append(highlight("\n".join(code), lang))
            continue
        if not line.strip():
            flush_para()
            i += 1
            continue
        heading = _HEADING.match(line)
        if heading:
            flush_para()
            level = len(heading.group(1))
            blocks.append(f"<h{level}>{inline(heading.group(2))}</h{level}>")
            i += 1
            continue
        if _HR.match(line):
            flush_para()
            blocks.append("<hr>")
            i += 1
            continue
        if "|" in line and i + 1 < len(lines) and _TABLE_SEP.match(lines[i + 1]):
            flush_para()
            head = _split_row(line)
            rows = []
            i += 2
            while i < len(lines) and "|" in lines[i] and lines[i].strip():
                rows.append(_split_row(lines[i]))
                i += 1
            th = "".join(f"<th>{inline(c)}</th>" for c in head)
            body = "".join("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in r) + "</tr>" for r in rows)
            blocks.append(f'<table class="vm-table"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>')
            continue
        if line.lstrip().startswith(">"):
            flush_para()
            quoted = []
            while i < len(lines) and lines[i].lstrip().startswith(">"):
                quoted.append(lines[i].lstrip()[1:].removeprefix(" "))
                i += 1
            blocks.append(f"<blockquote>{render_markdown(chr(10).join(quoted))}</blockquote>")
            continue
        item = _LIST.match(line)
        if item and not para:
            items = []
            while i < len(lines):
                m = _LIST.match(lines[i])
                if m:
                    items.append((len(m.group(1).expandtabs(4)), m.group(2)[0].isdigit(), m.group(3)))
                elif lines[i].strip() and items and lines[i].startswith((" ", "\t")):
                    indent, ordered, prev = items[-1]
                    items[-1] = (indent, ordered, prev + "\n" + lines[i].strip())  # continuation line
                else:
                    break
                i += 1
            blocks.append(_render_list(items))
            continue
        para.append(line)
        i += 1
    flush_para()
    return "\n".join(blocks)
