"""`@magic_arguments()` that builds its argparse parser on first use instead of at import.

IPython's decorator builds every parser (and formats its help) when the module is imported: about a
millisecond per magic, mostly argparse's gettext look-ups, which `%load_ext` would pay for every magic.
Here the parser is built the first time a magic runs or `%magic?` asks for its help. Use it exactly like
IPython's: `@magic_arguments()` above `@argument(...)` lines, `self.magic.parser.parse_args(words)`.
"""
from __future__ import annotations

from IPython.core.magic_arguments import argument, construct_parser  # noqa: F401 (argument: re-exported)


class _LazyParser:
    """Stands in for the parser until something asks it for anything."""

    def __init__(self, func):
        self._func = func
        self._parser = None

    def _build(self):
        if self._parser is None:
            self._parser = construct_parser(self._func)  # also puts the full help in func.__doc__
        return self._parser

    def __getattr__(self, name):
        return getattr(self._build(), name)


class magic_arguments:
    """Mark a magic as taking argparse arguments (IPython's decorator, minus the import-time cost)."""

    def __init__(self, name: str | None = None):
        self.name = name

    def __call__(self, func):
        if not getattr(func, "has_arguments", False):
            func.has_arguments = True
            func.decorators = []
        if self.name is not None:
            func.argcmd_name = self.name
        lazy = _LazyParser(func)
        func.parser = lazy

        # `%magic?` asks the object for getdoc() before reading __doc__ (IPython's oinspect.getdoc).
        def getdoc():
            lazy._build()
            return func.__doc__

        func.getdoc = getdoc
        return func
