"""Rich views for the library's result types, registered with IPython's display formatters by name:
the result's module is not imported until a result exists (%load_ext stays instant), and the data
classes stay free of HTML (their text/plain is their repr)."""
from __future__ import annotations

from typing import Callable, Iterable

Views = Iterable[tuple[str, str, Callable]]  # (mime type, class name, view function)


def register(shell, module: str, views: Views) -> None:
    formatters = shell.display_formatter.formatters
    for mime, name, view in views:
        formatters[mime].for_type_by_name(module, name, view)


def unregister(shell, module: str, views: Views) -> None:
    formatters = shell.display_formatter.formatters
    for mime, name, _ in views:
        formatters[mime].pop(f"{module}.{name}", None)
