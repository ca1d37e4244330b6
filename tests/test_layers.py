"""The package's layers, held by a test (read from the source with `ast`, imports inside functions included):

- only `vllm_magics/notebook/` imports IPython, ipywidgets or google.colab.output: everything else is
  plain Python that a script can use;
- nothing imports `vllm_magics.notebook` but the package's `__init__` (load/unload) and notebook itself;
- views (`notebook/views/`) take data: they import no module that does I/O (HTTP, processes, sockets,
  files of state) and none of the managers;
- no import circle between modules;
- no module much above 400 lines (a newcomer reads one in a sitting).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from helpers import REPO

PACKAGE = REPO / "vllm_magics"
NOTEBOOK_ONLY = ("IPython", "ipywidgets", "google.colab.output")
# What a view may import from the package: other views, the data it shows, masking.
VIEW_MAY_IMPORT = ("vllm_magics.notebook.views", "vllm_magics.ask.answer", "vllm_magics.redact")
VIEW_MAY_NOT_IMPORT = ("requests", "http.client", "urllib.request", "subprocess", "socket", "sqlite3",
                       "pyngrok", "vllm")
MAX_LINES = 420


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every module a file imports, anywhere in it, as absolute dotted names (`from a import b` gives
    both `a` and `a.b`: b may be a module)."""
    tree = ast.parse(path.read_text(), str(path))
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
IMPORTS = {name: _imports(path) for name, path in MODULES.items()}


def _is(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def test_the_scan_sees_the_package():
    # Guards the test itself: an empty scan would pass every rule below.
    assert "vllm_magics.notebook.magics" in MODULES and "vllm_magics.server.manager" in MODULES
    assert any(_is(m, "IPython") for m in IMPORTS["vllm_magics.notebook.base"])


@pytest.mark.parametrize("module", sorted(m for m in MODULES if not _is(m, "vllm_magics.notebook")))
def test_only_the_notebook_layer_imports_ipython(module):
    bad = sorted(i for i in IMPORTS[module] for lib in NOTEBOOK_ONLY if _is(i, lib))
    assert not bad, f"{module} imports {bad}: only vllm_magics/notebook/ may"


def test_only_load_and_unload_reach_into_the_notebook_layer():
    outside = {m: sorted(i for i in imports if _is(i, "vllm_magics.notebook"))
               for m, imports in IMPORTS.items() if not _is(m, "vllm_magics.notebook") and m != "vllm_magics"}
    assert {m: i for m, i in outside.items() if i} == {}


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _is(m, "vllm_magics.notebook.views")))
def test_views_take_data_only(module):
    ours = sorted(i for i in IMPORTS[module] if _is(i, "vllm_magics")
                  and not any(_is(i, ok) or ok.startswith(i + ".") for ok in VIEW_MAY_IMPORT))
    io = sorted(i for i in IMPORTS[module] for lib in VIEW_MAY_NOT_IMPORT if _is(i, lib))
    assert not ours and not io, f"{module} imports {ours + io}"


def test_no_import_circle():
    graph = {m: {i for i in imports if i in MODULES and i != m} for m, imports in IMPORTS.items()}
    # A package's __init__ importing its own submodules is not a circle of code.
    for m in graph:
        graph[m] = {i for i in graph[m] if not (_is(m, i) and MODULES[i].name == "__init__.py")}
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    assert circles == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_stay_small(module):
    lines = len(MODULES[module].read_text().splitlines())
    assert lines <= MAX_LINES, f"{module} has {lines} lines: split it by concern"
