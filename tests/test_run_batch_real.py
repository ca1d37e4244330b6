"""`vllm run-batch` export: the OpenAI batch format out, the runner's output back in input order; and a
real round trip through the rig's `vllm run-batch`, compared with the session server's answers."""
from __future__ import annotations

import json
import os
import subprocess

import pandas as pd
import pytest
from pydantic import BaseModel

from helpers import SMOLLM2, VLLM_BIN
from vllm_magics.ask.export import MISSING, batch_output_frame, export_batch, read_batch_output


def out_line(cid: str, content: str | None = None, error=None, status: int = 200, **message) -> str:
    body = None if content is None else {"model": "m", "choices": [{"index": 0, "finish_reason": "stop",
                                         "message": {"role": "assistant", "content": content, **message}}],
                                         "usage": {"prompt_tokens": 5, "completion_tokens": 2}}
    return json.dumps({"id": "vllm-x", "custom_id": cid, "error": error,
                       "response": {"status_code": status, "request_id": "r", "body": body}}) + "\n"


def test_export_writes_openai_batch_lines(tmp_path):
    path = tmp_path / "in.jsonl"
    msgs = [[{"role": "user", "content": "é?"}], [{"role": "user", "content": "b"}]]
    assert export_batch(path, iter(msgs), {"max_tokens": 8, "stream": True, "stream_options": {}}, model="m") == 2
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert lines[1] == {"custom_id": "item-1", "method": "POST", "url": "/v1/chat/completions",
                        "body": {"model": "m", "messages": msgs[1], "max_tokens": 8}}  # never streamed
    assert lines[0]["body"]["messages"][0]["content"] == "é?"


def test_output_back_in_input_order_with_errors_and_reasoning(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text(out_line("item-2", '{"name": "C", "age": 3}')
                    + out_line("item-0", '{"name": "A", "age": 1}', reasoning="thinking {")
                    + out_line("item-3", None, error={"error": {"message": "The model `x` does not exist.",
                                                                "code": 404}}, status=404)
                    + "garbage\n" + json.dumps({"custom_id": 5}) + "\n"
                    + out_line("item-4", "<think>hmm</think>\n{\"name\": \"E\", \"age\": \"x\"}"), encoding="utf-8")
    answers = read_batch_output(path, n=6)
    assert [a.index for a in answers] == list(range(6))
    assert answers[0].text == '{"name": "A", "age": 1}' and answers[0].reasoning == "thinking {"
    assert answers[1].error == MISSING and answers[3].error == "404: The model `x` does not exist."
    assert answers[4].reasoning == "hmm" and answers[2].usage["completion_tokens"] == 2
    # Without n: the ids seen (0, 2, 3, 4), never a list sized by an untrusted number; n marks the gaps.
    seen = read_batch_output(path)
    assert len(seen) == 4 and seen[0].text == answers[0].text and seen[-1].reasoning == "hmm"

    class Person(BaseModel):
        name: str
        age: int

    df = pd.DataFrame({"q": list("abcdef")})
    frame = batch_output_frame(path, rows=df, schema=Person)
    assert list(frame["q"]) == list("abcdef") and [None if pd.isna(v) else v for v in frame["name"]] == [
        "A", None, "C", None, None, None]
    assert frame["_error"][4].startswith("row 4: field `age`") and frame["_error"][5].endswith(MISSING)
    plain = batch_output_frame(path, rows=df)
    assert plain["text"][2] == '{"name": "C", "age": 3}' and plain["error"][1] == MISSING


PROMPTS = ["What is the capital of France?", "Name a colour.", "What is 2+2?", "Say hello to Ann.",
           "Name a large animal."]


@pytest.mark.server
def test_run_batch_round_trip_matches_the_magic(tmp_path, managed, smollm2_server):
    """The file `%%ask --each ... --export-batch` writes, run by vLLM's own `vllm run-batch`, gives the
    answers `%%ask --each` gives for the same items on the session server (same model, temperature 0)."""
    shell = managed(smollm2_server)
    model = smollm2_server.plan.model
    assert model == str(SMOLLM2)  # run-batch below serves the same path, so the same model name
    shell.user_ns["prompts"] = pd.DataFrame({"prompt": PROMPTS})
    options = f"--each prompts --temperature 0 --max-tokens 16 --model {model}"
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    shell.run_cell_magic("ask", f"{options} --export-batch {src}", "{{ item.prompt }}")
    exported = [json.loads(line) for line in src.read_text(encoding="utf-8").splitlines()]
    assert [e["body"]["messages"][-1]["content"] for e in exported] == PROMPTS
    with open(src, "a", encoding="utf-8") as f:  # one request the runner must refuse: reported, not lost
        f.write(json.dumps({"custom_id": "item-5", "method": "POST", "url": "/v1/chat/completions",
                            "body": dict(exported[0]["body"], model="no-such-model")}) + "\n")
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1", VLLM_ENABLE_V1_MULTIPROCESSING="0", HF_HUB_OFFLINE="1",
               VLLM_NO_USAGE_STATS="1")
    run = subprocess.run([str(VLLM_BIN), "run-batch", "-i", str(src), "-o", str(out), "--model", model,
                          "--enforce-eager"], env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    batch = read_batch_output(out, n=6)
    assert all(a.ok and a.finish_reason in ("stop", "length") for a in batch[:5]), [a.error for a in batch]
    assert "no-such-model" in batch[5].error and batch[5].error.startswith("404")

    # The magic sends the items at once, as the runner does: the same batch shapes on the engine.
    shell.run_cell_magic("ask", f"{options} --concurrency 5 --out direct", "{{ item.prompt }}")
    direct = shell.user_ns["direct"]
    assert all(a.ok for a in direct), [a.error for a in direct]
    assert [a.text for a in batch[:5]] == [a.text for a in direct]
    frame = batch_output_frame(out, rows=pd.DataFrame({"prompt": PROMPTS + ["bad"]}))
    assert list(frame["prompt"][:5]) == PROMPTS and list(frame["text"][:5]) == [a.text for a in direct]
