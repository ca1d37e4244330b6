"""What diagnosing a vLLM log costs, for logs up to the rotation limit (20 MB; goal: well under a second).

Figures per MB of log, against a baseline measured in the same run on the same text: one `str.count`
of a word that is not there (one pass over the text in C). Two kinds of text: a healthy server's log
repeated, and long lines without spaces (the old `model_not_found` pattern was quadratic on them).
`diagnose` reads the head and the tail of a long log; "full scan" runs the same table over the whole
text (diagnose._window switched off), to show that every pattern is linear."""
from __future__ import annotations

import pathlib
import subprocess
import sys
import time
from unittest import mock

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from vllm_magics.server import diagnose as diag_mod  # noqa: E402

LOGS = REPO / "tests" / "fixtures" / "vllm_logs"
FAILURE = (LOGS / "engine_died__corrupt_weights.log").read_text()


def best_of(fn, runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def texts(megabytes: int) -> dict[str, str]:
    from test_diagnose import PATHOLOGICAL

    healthy = (LOGS / "success_startup.log").read_text()
    junk = "\n".join(PATHOLOGICAL) + "\n"
    size = megabytes * 1_000_000
    return {"healthy log": healthy * (size // len(healthy) + 1) + FAILURE,
            "long lines": junk * (size // len(junk) + 1) + FAILURE}


def import_ms() -> float:
    code = ("import time; t = time.perf_counter(); import vllm_magics.server.diagnose; "
            "print((time.perf_counter() - t) * 1000)")
    return min(float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                    check=True).stdout) for _ in range(3))


def main() -> dict:
    figures = {}
    for mb in (1, 5, 20):
        for kind, text in texts(mb).items():
            size = len(text) / 1e6
            base = best_of(lambda: text.count("zqxj"))
            took = best_of(lambda: diag_mod.diagnose(text, 1))
            with mock.patch.object(diag_mod, "_window", lambda log: log):
                full = best_of(lambda: diag_mod.diagnose(text, 1), runs=1)
            assert diag_mod.diagnose(text, 1)[-1].key == "engine_died"
            print(f"{kind:12s} {size:5.1f} MB: diagnose {took * 1000:7.1f} ms; full scan {full / size * 1000:6.1f} "
                  f"ms/MB ({full / base:5.0f}x str.count, which takes {base / size * 1000:.2f} ms/MB)")
            figures[f"{kind} {mb} MB"] = took * 1000
    ms = import_ms()
    print(f"import vllm_magics.server.diagnose: {ms:.1f} ms (fresh interpreter, best of 3)")
    figures["import_ms"] = ms
    return figures


if __name__ == "__main__":
    main()
