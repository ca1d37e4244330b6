"""The Colab quick-start flow in a real kernel of Colab's notebook stack. Run by the Colab-mirror venv's own
python (scripts/colab_mirror.sh), so the client is its jupyter_client 7.4.9 and the kernel its ipykernel
6.17.1 with IPython 7.34.0 and ipywidgets 7.7.1; tests/test_colab_mirror.py runs it and checks what it
prints (one JSON object on the last line).

    python tests/colab_kernel_flow.py VLLM_COMMAND MODEL PORT
    python tests/colab_kernel_flow.py --notebook PATH   (a notebook's cells, up to the first tagged "gpu")
"""
from __future__ import annotations

import json
import os
import sys

from jupyter_client.manager import KernelManager

VERSIONS = ("import json, sys, IPython, ipykernel, ipywidgets, traitlets, jupyter_client\n"
            "print(json.dumps({'python': sys.version.split()[0], 'ipython': IPython.__version__, "
            "'ipykernel': ipykernel.__version__, 'ipywidgets': ipywidgets.__version__, "
            "'traitlets': traitlets.__version__, 'jupyter_client': jupyter_client.__version__, "
            "'executable': sys.executable}))")
# The seed notebook's flags typed as a person pastes them (no `--`), with a context length a CPU holds.
SEED_FLAGS = "--trust-remote-code --dtype half --max-model-len 2048 --enable-chunked-prefill false " \
             "--tensor-parallel-size 1"
# The server's process group, after %vllm_stop: empty within a few seconds (the supervisor exits last),
# else the processes left in it.
GONE = ("import os, subprocess, time\nend = time.monotonic() + 15\nwhile True:\n    try:\n"
        "        os.killpg({pgid}, 0)\n    except ProcessLookupError:\n        print('gone')\n        break\n"
        "    if time.monotonic() > end:\n"
        "        print(subprocess.run(['ps', '-o', 'pid,stat,args', '-g', '{pgid}'], capture_output=True, "
        "text=True).stdout)\n        break\n    time.sleep(0.2)")


def run(kc, code: str, timeout: float = 900) -> dict:
    messages = []
    reply = kc.execute_interactive(code, timeout=timeout, output_hook=messages.append)
    content = reply["content"]
    out = {"status": content["status"], "text": "", "html": [], "kinds": [m["msg_type"] for m in messages]}
    if content["status"] != "ok":
        out["error"] = f"{content.get('ename')}: {content.get('evalue')}"
    for m in messages:
        c = m["content"]
        if m["msg_type"] == "stream":
            out["text"] += c["text"]
        elif m["msg_type"] == "error":
            out["error"] = f"{c.get('ename')}: {c.get('evalue')}"
        elif "data" in c:
            out["html"].append(c["data"].get("text/html", ""))
            out["text"] += c["data"].get("text/plain", "") + "\n"
    return out


def main(vllm_command: str, model: str, port: str) -> dict:
    km = KernelManager(kernel_name="python3")
    km.start_kernel(env=dict(os.environ))
    kc = km.client()
    kc.start_channels()
    steps = {}
    try:
        kc.wait_for_ready(timeout=120)
        steps["versions"] = run(kc, VERSIONS)
        steps["load"] = run(kc, f"%load_ext vllm_magics\n%config VllmMagics.vllm_command = [{vllm_command!r}]")
        steps["serve"] = run(kc, f"%vllm_serve {model} {SEED_FLAGS} --port {port}")
        steps["pgid"] = run(kc, "print(get_ipython()._vllm_magics.server.pgid)")
        steps["ask"] = run(kc, "%%ask --max-tokens 12 --temperature 0\nSay hello in one word.")
        steps["status"] = run(kc, "%vllm_status")
        steps["watch"] = run(kc, "%vllm_status --watch 1 --count 2")
        steps["stop"] = run(kc, "%vllm_stop")
        pgid = steps["pgid"]["text"].strip()
        if pgid.isdigit():
            steps["after_stop"] = run(kc, GONE.format(pgid=pgid))
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    return steps


PARSES = ("import json\nfrom IPython import get_ipython\nbad = {{}}\nfor i, src in enumerate(json.loads({cells!r})):\n"
          "    try:\n        compile(get_ipython().transform_cell(src), f'cell {{i}}', 'exec')\n"
          "    except SyntaxError as exc:\n        bad[i] = str(exc)\nprint(json.dumps(bad))")


def run_notebook(path: str) -> dict:
    """Every code cell parses (IPython's transforms, then compile); the cells run in order up to the first
    tagged "gpu". Cells tagged "install" (pip from GitHub) are not run: this venv already holds the package,
    installed from the working tree by scripts/colab_mirror.sh."""
    import nbformat

    cells = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
    km = KernelManager(kernel_name="python3")
    km.start_kernel(env=dict(os.environ))
    kc = km.client()
    kc.start_channels()
    steps = {}
    try:
        kc.wait_for_ready(timeout=120)
        steps["parse"] = run(kc, PARSES.format(cells=json.dumps([c.source for c in cells])))
        for i, cell in enumerate(cells):
            tags = cell.metadata.get("tags", [])
            if "gpu" in tags:
                steps["stopped_at"] = {"status": "ok", "text": cell.source, "html": [], "kinds": []}
                break
            if "install" not in tags:
                steps[f"cell {i}: {cell.source.splitlines()[0]}"] = run(kc, cell.source)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    return steps


if __name__ == "__main__":
    result = run_notebook(sys.argv[2]) if sys.argv[1] == "--notebook" else main(*sys.argv[1:4])
    print(json.dumps(result))
