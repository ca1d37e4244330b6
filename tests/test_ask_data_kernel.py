"""%%ask --schema / --jsonl and %ask_history in a real Jupyter kernel (jupyter_client): the live batch
progress, the frame of validated fields, the history table, and the stop button during a --jsonl batch."""
from __future__ import annotations

import json
import threading

import pytest

from helpers import wait_until
from test_kernel_real import run  # the kernel fixture: conftest.py

pytestmark = [pytest.mark.server, pytest.mark.kernel]

SETUP = """
%load_ext vllm_magics
import os
import pandas as pd
from pydantic import BaseModel
os.environ['VLLM_MAGICS_TEST_KEY'] = {key!r}
class Word(BaseModel):
    word: str
    letters: int
df = pd.DataFrame({{"w": ["cat", "house", "<b>river</b>", "apple", "green", "table"]}})
numbers = list(range(120))
"""


def displays(messages) -> list[dict]:
    return [m["content"]["data"] for m in messages if m["msg_type"] in ("display_data", "update_display_data")]


def test_schema_batch_history_and_the_stop_button_in_a_kernel(kernel, smollm2_server, tmp_path):  # noqa: F811
    km, kc = kernel
    run(kc, SETUP.format(key=smollm2_server.api_key))
    opts = f"--url {smollm2_server.base_url}/v1 --api-key-env VLLM_MAGICS_TEST_KEY --temperature 0"

    path = tmp_path / "words.jsonl"
    messages = run(kc, f"%%ask {opts} --max-tokens 40 --each df --schema Word --jsonl {path}\n"
                       "The word is {{ item.w }}. Reply in JSON with the word and its letter count.")
    shown = displays(messages)
    assert any("in flight" in d["text/plain"] and "tokens/s" in d["text/plain"] for d in shown)  # live progress
    table = shown[-1]["text/html"]
    assert "<th>letters</th>" in table and "<th>_error</th>" in table and "6 answers in" in shown[-1]["text/plain"]
    assert "<b>river</b>" not in table and "&lt;b&gt;river&lt;/b&gt;" in table  # input and output escaped
    frame = run(kc, "print(_ask.to_frame().to_json(orient='records'))")
    rows = json.loads("".join(m["content"]["text"] for m in frame if m["msg_type"] == "stream"))
    assert len(rows) == 6 and all(isinstance(r["letters"], int) for r in rows)

    shown = displays(run(kc, "%ask_history -n 3"))
    assert len(shown) == 1 and "vm-history" in shown[0]["text/html"] and "The word is" in shown[0]["text/plain"]

    # The stop button midway through a --jsonl batch: every finished answer stays in the file.
    big = tmp_path / "numbers.jsonl"

    def stop_after_some():
        wait_until(lambda: big.exists() and big.read_bytes().count(b"\n") >= 20, 300, interval=0.05)
        km.interrupt_kernel()

    threading.Thread(target=stop_after_some, daemon=True).start()
    reply, _ = run(kc, f"%%ask {opts} --max-tokens 4 --each numbers --jsonl {big} --concurrency 8\n"
                       "Repeat: {{ item }}", ok=False)
    assert reply["content"]["ename"] == "UsageError" and "--resume" in reply["content"]["evalue"]
    kept = big.read_bytes().count(b"\n")
    assert 20 <= kept < 120
    run(kc, f"%%ask {opts} --max-tokens 4 --each numbers --jsonl {big} --concurrency 8 --resume\nRepeat: {{{{ item }}}}")
    assert sorted(json.loads(x)["i"] for x in big.read_bytes().splitlines()) == list(range(120))
