"""What `%load_ext vllm_magics` adds to a bare IPython start (goal: <= 30 ms).

Baseline and subject in the same run, interleaved: `ipython -c 'pass'` against
`ipython -c '%load_ext vllm_magics'`, as whole processes (what a user waits for), plus the in-process
time of the load_ext call itself. Prints medians; machines are noisy, read the ratio."""
from __future__ import annotations

import statistics
import subprocess
import sys
import time

RUNS = 15
BASE = [sys.executable, "-m", "IPython", "--quick", "--no-banner", "--colors=nocolor", "-c"]
INPROC = ("import time\nfrom IPython.core.interactiveshell import InteractiveShell\nip = InteractiveShell.instance()\n"
          "t = time.perf_counter()\nip.run_line_magic('load_ext', 'vllm_magics')\nprint(time.perf_counter() - t)")


def timed(cmd) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def main() -> dict:
    # pip compiles a package's bytecode when it installs it; an editable checkout under
    # PYTHONDONTWRITEBYTECODE (set on these machines) would recompile every module at every start.
    import compileall
    import pathlib

    import vllm_magics

    compileall.compile_dir(str(pathlib.Path(vllm_magics.__file__).parent), quiet=1)
    bare, loaded, inproc = [], [], []
    for _ in range(RUNS):
        bare.append(timed(BASE + ["pass"]))
        loaded.append(timed(BASE + ["%load_ext vllm_magics"]))
        out = subprocess.run([sys.executable, "-c", INPROC], capture_output=True, text=True, check=True).stdout
        inproc.append(float(out.strip().splitlines()[-1]))
    b, l, i = statistics.median(bare), statistics.median(loaded), statistics.median(inproc)
    print(f"bare IPython start        median {b * 1000:7.1f} ms  ({RUNS} runs)")
    print(f"IPython + %load_ext       median {l * 1000:7.1f} ms  -> +{(l - b) * 1000:.1f} ms, ratio {l / b:.3f}")
    print(f"load_ext call in process  median {i * 1000:7.2f} ms  (goal <= 30 ms)")
    return {"bare_ms": b * 1000, "loaded_ms": l * 1000, "added_ms": (l - b) * 1000, "inproc_ms": i * 1000}


if __name__ == "__main__":
    main()
