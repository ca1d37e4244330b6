"""The answer renderer's cost at two sizes, for text a model may write and for text built to be slow:
an opener with no closer (the old regex renderer took 78 s on `" **a" * 20000`), unclosed links and
math, long tables, runs of `_` and `<`. Linear cost doubles with the size (ratio about 2); quadratic
would be about 4. Also a realistic answer of about 500 KB (the text of ~100k tokens), rendered once
as at the end of a stream. Prints figures; never fails.
"""
from __future__ import annotations

import pathlib
import sys
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

CASES = {
    "emphasis opener, no closer": lambda n: " **a" * n,
    "single * and _ runs": lambda n: "x_" * n + " *a" * n,
    "unclosed links": lambda n: "[a](" * n,
    "unclosed \\( math": lambda n: "\\( a " * n,
    "single $ amounts": lambda n: "$a " * n,
    "table rows": lambda n: "| a | b |\n|---|---|\n" + "| c | d |\n" * (n // 2),
    "raw < and &": lambda n: "<" * (2 * n) + "&" * (2 * n),
}
REALISTIC = ("The **capital** of France is Paris, and `x = 1` is code; see https://docs.vllm.ai and $x^2$.\n\n"
             "- item one\n- item two\n\n```python\ndef f(x):\n    return x * 2\n```\n\n")


def timed(text: str) -> float:
    from vllm_magics.notebook.views.markdown import render_markdown

    t0 = time.perf_counter()
    render_markdown(text)
    return time.perf_counter() - t0


def main() -> dict:
    import markdown_it

    timed("warm **up** `x` ```py\nx\n```")
    print(f"markdown-it-py {markdown_it.__version__}")
    results = {}
    for name, make in CASES.items():
        small, big = timed(make(10_000)), timed(make(20_000))
        print(f"  {name:28s} {len(make(10_000)):>7,} chars {small * 1000:7.0f} ms, x2 size {big * 1000:7.0f} ms "
              f"-> ratio {big / small:.2f}")
        results[name] = big / small
    text = REALISTIC * (500_000 // len(REALISTIC))
    seconds = timed(text)
    print(f"  a realistic answer of {len(text):,} chars: {seconds * 1000:.0f} ms ({seconds / len(text) * 1e6:.2f} µs/char)")
    results["realistic_us_per_char"] = seconds / len(text) * 1e6
    return results


if __name__ == "__main__":
    main()
