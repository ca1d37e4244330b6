"""What is sent: the cell as a prompt template, the chat messages, and conversation threads.

    template = PromptTemplate("Capital of {{ country }}?")     # compiled once
    template.render(namespace)                                 # per question, or per --each item
"""
from __future__ import annotations

import re

from vllm_magics.errors import TemplateError

# Code is sent as written: fenced blocks (closed or running to the end) and `inline code`. A jinja
# raw block is taken whole (its inside is sent as written, as jinja would), so code in it stays too.
_PROTECT = re.compile(r"\{%-?\s*raw\s*-?%\}(.*?)\{%-?\s*endraw\s*-?%\}|(```.*?(?:```|\Z)|~~~.*?(?:~~~|\Z)|`[^`\n]+`)",
                      re.S)
# Protected code goes back in as a template value, not as a marker in the text: no text a user or a
# variable holds can be mistaken for one.
_CODE = "_vm_protected_code"


class PromptTemplate:
    """A cell as a jinja2 template over the user's namespace, compiled once.

    `{{ name }}` and `{% for %}` work; an undefined name is an error that names it. Code is left
    alone: fenced blocks and `inline code` are not templated, and jinja's `{# #}` comments are
    switched off, so dicts, JSON, f-strings and shell `${#x}` pass through unchanged. A cell without
    `{{` or `{%` is sent as written (jinja is not even imported).
    """

    def __init__(self, cell: str):
        self.cell = cell
        self.names: frozenset[str] = frozenset()  # the free names the template reads
        self._template = None
        self._code: list[str] = []
        if "{{" not in cell and "{%" not in cell:
            return
        import jinja2
        from jinja2 import meta

        def keep(m):
            self._code.append(m.group(1) if m.group(2) is None else m.group(2))
            return "{{ %s[%d] }}" % (_CODE, len(self._code) - 1)

        env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True,
                                 comment_start_string="\x01{#", comment_end_string="#}\x01")
        try:
            ast = env.parse(_PROTECT.sub(keep, cell))
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(f"the prompt is not a valid template (line {exc.lineno}: {exc.message}); "
                                "send it as written with --no-template") from None
        # Free names, less jinja's own globals (range, dict, ...), which need no definition.
        self.names = frozenset(meta.find_undeclared_variables(ast) - {_CODE} - set(env.globals))
        self._template = env.from_string(ast)

    def missing(self, namespace: dict, provided: tuple[str, ...] = ()) -> list[str]:
        """Names the template reads that neither the namespace nor `provided` (e.g. "item") defines."""
        return sorted(n for n in self.names if n not in namespace and n not in provided)

    def render(self, namespace: dict, **extra) -> str:
        """The prompt for these values. Only the names the template reads are looked up, so the cost
        does not grow with the namespace (an --each batch renders once per item)."""
        if self._template is None:
            return self.cell
        import jinja2

        values = {n: extra[n] if n in extra else namespace[n] for n in self.names if n in extra or n in namespace}
        values[_CODE] = self._code
        try:
            return self._template.render(values)
        except jinja2.UndefinedError as exc:
            raise TemplateError(f"the prompt uses {exc.message.replace('is undefined', 'which is not defined')}: "
                                "define it in a cell first, or send the cell as written with --no-template"
                                ) from None
        except Exception as exc:  # an expression in {{ }} raised
            raise TemplateError(f"evaluating the prompt template failed: {exc.__class__.__name__}: {exc}") from None


def render_prompt(cell: str, namespace: dict) -> str:
    """The cell rendered over the namespace (see PromptTemplate)."""
    return PromptTemplate(cell).render(namespace)


def build_messages(prompt: str, system: str | None = None, history: list[dict] | None = None) -> list[dict]:
    messages = [{"role": "system", "content": system}] if system else []
    return messages + list(history or []) + [{"role": "user", "content": prompt}]


class Conversations:
    """Named threads of messages. Reasoning is never stored: like DeepSeek-R1's own chat template,
    only the answers go back to the model."""

    DEFAULT = "default"

    def __init__(self):
        self.threads: dict[str, list[dict]] = {}
        self.last: str | None = None

    def history(self, name: str) -> list[dict]:
        return list(self.threads.get(name, []))

    def record(self, name: str, user: str, answer) -> None:
        thread = self.threads.setdefault(name, [])
        thread += [{"role": "user", "content": user}, {"role": "assistant", "content": answer.text}]
        self.last = name

    def reset(self, name: str | None = None) -> int:
        if name is None:
            n = len(self.threads)
            self.threads.clear()
            self.last = None
            return n
        return 1 if self.threads.pop(name, None) is not None else 0
