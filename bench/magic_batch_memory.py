"""Kernel memory of `%%ask --each items --jsonl PATH` through the magic, with the history on.

The same stand-in server as bench/batch_memory.py (its `--serve` mode, in a child process) answers the
batch; an in-process IPython shell runs the magic. tracemalloc measures the peak of Python memory each
batch adds, for N/10 and N items (the items list itself is made before the measure): with the answers
in the file and the history written in chunks, the peak should not grow with the batch. The ratio of
the two peaks is the figure; near 1.0 means bounded. Baseline in the same run: the N/10 batch.

    .rig/venv/bin/python bench/magic_batch_memory.py     # BENCH_BATCH_ITEMS=20000 by default
"""
from __future__ import annotations

import contextlib
import gc
import io
import os
import pathlib
import subprocess
import sys
import tempfile
import time
import tracemalloc

REPO = pathlib.Path(__file__).resolve().parent.parent
N = int(os.environ.get("BENCH_BATCH_ITEMS", "20000"))


def run(ip, url: str, n: int, path: pathlib.Path) -> tuple[int, float]:
    ip.user_ns["items"] = list(range(n))
    gc.collect()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    t0 = time.perf_counter()
    ip.run_cell_magic("ask", f"--url {url}/v1 --model stand-in --each items --jsonl {path} --max-tokens 4",
                      "item {{ item }}")
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] - base
    answered = ip.user_ns["_ask"].answered
    assert answered == n, answered
    return peak, seconds


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["VLLM_MAGICS_HOME"] = tmp + "/home"  # a history of its own, not the user's
        port_file = pathlib.Path(tmp) / "port"
        child = subprocess.Popen([sys.executable, str(REPO / "bench" / "batch_memory.py"), "--serve", str(port_file)])
        try:
            while not port_file.exists() or not port_file.read_text():
                time.sleep(0.05)
            url = f"http://127.0.0.1:{port_file.read_text()}"
            from IPython.core.interactiveshell import InteractiveShell

            ip = InteractiveShell.instance()
            ip.run_line_magic("load_ext", "vllm_magics")
            import pandas  # noqa: F401  (imported by the batch's first use: kept out of the measure)
            import requests  # noqa: F401
            tracemalloc.start()
            with contextlib.redirect_stdout(io.StringIO()):
                run(ip, url, 100, pathlib.Path(tmp) / "warm.jsonl")
                small, small_s = run(ip, url, N // 10, pathlib.Path(tmp) / "small.jsonl")
                big, big_s = run(ip, url, N, pathlib.Path(tmp) / "big.jsonl")
            from vllm_magics.ask.history import History

            rows = History(pathlib.Path(tmp) / "home" / "history.sqlite").count()
        finally:
            child.terminate()
            child.wait(timeout=10)
    print(f"magic --jsonl, {N // 10:,} items: peak +{small / 1e6:.2f} MB ({small_s:.1f} s)")
    print(f"magic --jsonl, {N:,} items: peak +{big / 1e6:.2f} MB ({big_s:.1f} s, {N / big_s:.0f} items/s)")
    print(f"ratio peak({N:,}) / peak({N // 10:,}) = {big / small:.2f}; history rows written: {rows:,}")


if __name__ == "__main__":
    main()
