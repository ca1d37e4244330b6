"""Rendering: jinja2 templates (autoescaped: model output and log lines are untrusted text) and the
mimebundle base that every view shares (text for terminals, GitHub and nbviewer; HTML for notebooks)."""
from __future__ import annotations

_env = None


def render(template: str, **context) -> str:
    """Render templates/<template> (imported on first use: jinja2 costs ~90 ms, %load_ext stays instant)."""
    global _env
    if _env is None:
        import jinja2

        _env = jinja2.Environment(
            loader=jinja2.PackageLoader("vllm_magics.notebook", "templates"),
            autoescape=True,  # model output and log lines are untrusted text
            trim_blocks=True,
            lstrip_blocks=True,
        )
    return _env.get_template(template).render(**context)


class _Bundle:
    def _repr_mimebundle_(self, include=None, exclude=None):
        return {"text/plain": self.text(), "text/html": self.html()}

    def __repr__(self):
        return self.text()
