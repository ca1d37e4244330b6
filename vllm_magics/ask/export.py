"""The same batch on vLLM's own batch runner: write the requests in the OpenAI batch format that
`vllm run-batch` reads, and read its output back in input order.

    export_batch("in.jsonl", message_lists, {"temperature": 0, "max_tokens": 64}, model=MODEL)
    #   vllm run-batch -i in.jsonl -o out.jsonl --model MODEL
    answers = read_batch_output("out.jsonl", n=len(message_lists))      # Answers, in input order
    frame = batch_output_frame("out.jsonl", rows=df)                     # or rows=df, schema=Person

One line per request: {"custom_id": "item-<i>", "method": "POST", "url": "/v1/chat/completions",
"body": {...}} (vllm/entrypoints/launchers/run_batch.py, BatchRequestInput). The runner refuses
streamed requests, so the stream fields are left out. Its output lines come in any order:
{"id", "custom_id", "response": {"status_code", "request_id", "body": <chat completion>},
"error": null | message | {"error": {...}}}; custom_id puts them back in order. The output file is
untrusted: a line that does not parse is skipped, a missing item gets an error saying so.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Sequence

from vllm_magics.ask.answer import Answer, AnswerList
from vllm_magics.ask.frames import answers_frame

CHAT_URL = "/v1/chat/completions"
MISSING = "no line for this item in the batch output"
_TRANSPORT = ("stream", "stream_options")


def custom_id(i: int, prefix: str = "item-") -> str:
    return f"{prefix}{i}"


def export_batch(path: str | Path, message_lists: Iterable[list[dict]], params: dict, *, model: str,
                 prefix: str = "item-") -> int:
    """Write one request line per item (custom_id `<prefix><index>`); returns how many."""
    body_params = {k: v for k, v in params.items() if k not in _TRANSPORT}
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for n, messages in enumerate(message_lists, start=1):
            line = {"custom_id": custom_id(n - 1, prefix), "method": "POST", "url": CHAT_URL,
                    "body": {"model": model, "messages": messages, **body_params}}
            f.write(json.dumps(line, ensure_ascii=False) + "\n")
    return n


def _error_text(record: dict) -> str | None:
    err = record.get("error")
    if isinstance(err, dict):  # an ErrorResponse: {"error": {"message", "type", "code"}}
        inner = err.get("error", err)
        err = inner.get("message") if isinstance(inner, dict) else inner
    response = record.get("response") if isinstance(record.get("response"), dict) else {}
    status = response.get("status_code")
    if err:
        return f"{status}: {err}" if isinstance(status, int) and status >= 400 else str(err)
    if isinstance(status, int) and status >= 400:
        return f"the batch runner answered {status}"
    return None


def answer_from_output(record: dict, index: int | None = None) -> Answer:
    """One output line as an Answer (reasoning split off as in a streamed reply)."""
    from vllm_magics.ask.reasoning import ReasoningSplitter

    answer = Answer(index=index)
    answer.started_at = answer.ended_at = 1.0  # no timings in the runner's output
    answer.error = _error_text(record)
    response = record.get("response") if isinstance(record.get("response"), dict) else {}
    body = response.get("body") if isinstance(response.get("body"), dict) else {}
    choices = body.get("choices") if isinstance(body.get("choices"), list) else []
    choice = choices[0] if choices and isinstance(choices[0], dict) else {}
    message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
    splitter = ReasoningSplitter()
    splitter.feed({k: v for k, v in message.items() if k in ("content", "reasoning", "reasoning_content")
                   and isinstance(v, str)})
    splitter.finish()
    answer.text, answer.reasoning, answer.reasoning_source = splitter.answer, splitter.reasoning, splitter.source
    answer.finish_reason = choice.get("finish_reason") if isinstance(choice.get("finish_reason"), str) else None
    answer.model = body.get("model") if isinstance(body.get("model"), str) else None
    answer.usage = body.get("usage") if isinstance(body.get("usage"), dict) else None
    if not answer.error and not choice:
        answer.error = "the batch output has no answer for this item"
    return answer


def read_batch_output(path: str | Path, n: int | None = None, ids: Sequence[str] | None = None,
                      prefix: str = "item-") -> AnswerList:
    """The runner's output as Answers in input order. Give `n` (ids are `<prefix>0..n-1`) or the
    `ids` in input order; without either, the ids in the file, in the order of their numbers (a
    missing item then goes unnoticed: give `n` to have it marked)."""
    records: dict[str, dict] = {}
    with open(path, "rb") as f:
        for raw in f:
            try:
                record = json.loads(raw)
            except (ValueError, RecursionError):
                continue
            if isinstance(record, dict) and isinstance(record.get("custom_id"), str):
                records[record["custom_id"]] = record
    if ids is None and n is None:  # the ids seen: a number from the (untrusted) file sizes nothing
        numbered = {k: _number(k, prefix) for k in records}
        ids = sorted((k for k, number in numbered.items() if number is not None), key=numbered.__getitem__)
    elif ids is None:
        ids = [custom_id(i, prefix) for i in range(n)]
    out = AnswerList()
    for i, cid in enumerate(ids):
        record = records.get(cid)
        if record is None:
            out.append(Answer(index=i, error=MISSING))
            out[-1].ended_at = out[-1].started_at
        else:
            out.append(answer_from_output(record, i))
    return out


def _number(cid: str, prefix: str) -> int | None:
    """The item number in `<prefix><number>`, or None (not ours, or more digits than any batch has:
    int() of thousands of digits is refused, and slow, on some Pythons)."""
    digits = cid[len(prefix):]
    if not cid.startswith(prefix) or not digits.isdecimal() or len(digits) > 18:
        return None
    return int(digits)


def batch_output_frame(path: str | Path, rows=None, schema=None, ids: Sequence[str] | None = None,
                       prefix: str = "item-"):
    """A DataFrame of the runner's output in input order: with `schema`, the input rows joined to its
    fields (failed rows marked in `_error`); without, the answer columns next to the input rows."""
    n = len(rows) if rows is not None and ids is None else None
    answers = read_batch_output(path, n=n, ids=ids, prefix=prefix)
    if schema is not None:
        from vllm_magics.ask.schema import answers_to_frame

        return answers_to_frame(rows if rows is not None else range(len(answers)), answers, schema)
    return answers_frame(answers, rows)
