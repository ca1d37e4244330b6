"""%%ask for data work, through a real IPython shell: --schema (into a DataFrame), --jsonl (a batch in a
file, interrupted and resumed), --export-batch (requests for `vllm run-batch`)."""
from __future__ import annotations

import _thread
import json
import threading

import pandas as pd
import pytest
from IPython.core.error import UsageError
from pydantic import BaseModel, Field, field_validator

from vllm_magics.ask.batch_store import item_key


class Word(BaseModel):
    word: str = Field(max_length=12)
    letters: int


WORDS = ["cat", "house", "river", "apple", "green", "table", "music", "light", "stone", "bread",
         "cloud", "dog", "ocean", "paper", "chair", "sun", "garden", "window", "tiger", "book"]
PROMPT = "The word is {{ item.w }}. Reply in JSON with the word and its letter count."


# -- no server needed -----------------------------------------------------------------------------
def test_flags_that_need_each_or_jsonl_are_one_line(shell):
    shell.user_ns["xs"] = [1, 2]
    shell.user_ns["not_a_schema"] = 42
    cases = [("--resume --each xs", "--resume continues a --jsonl file"),
             ("--jsonl a.jsonl", "--jsonl works with --each NAME"),
             ("--export-batch a.jsonl", "--export-batch works with --each NAME"),
             ("--each xs --jsonl a --export-batch b", "pick one"),
             ("--schema Nope", "--schema Nope: there is no variable named Nope"),
             ("--schema not_a_schema", "--schema not_a_schema: a schema is a pydantic model class or a JSON-schema")]
    for line, message in cases:
        with pytest.raises(UsageError, match=message):
            shell.run_cell_magic("ask", line, "hi")


def test_export_batch_writes_run_batch_requests_and_says_how_to_run_them(shell, tmp_path, capsys):
    shell.user_ns["df"] = pd.DataFrame({"w": WORDS[:5]})
    shell.user_ns["Word"] = Word
    path = tmp_path / "requests.jsonl"
    shell.run_cell_magic("ask", f"--each df --schema Word --model my-model --temperature 0 --max-tokens 30 "
                                f"--system 'Be brief.' --export-batch {path}", PROMPT)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["custom_id"] for line in lines] == [f"item-{i}" for i in range(5)]
    body = lines[2]["body"]
    assert body["model"] == "my-model" and body["temperature"] == 0 and body["max_tokens"] == 30
    assert body["messages"] == [{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": PROMPT.replace("{{ item.w }}", "river")}]
    assert body["response_format"]["json_schema"]["schema"] == Word.model_json_schema()
    assert "stream" not in body and "return_token_ids" not in body
    out = capsys.readouterr().out
    assert f"vllm run-batch -i {path} -o {tmp_path / 'requests-output.jsonl'} --model my-model" in out
    assert "batch_output_frame(" in out and "rows=df, schema=Word" in out
    with pytest.raises(UsageError, match="--export-batch: name the model with --model"):
        shell.run_cell_magic("ask", f"--each df --export-batch {path}", PROMPT)


def test_answer_views_show_the_data_and_the_schema_error():
    from vllm_magics.ask.answer import Answer
    from vllm_magics.notebook.views.answer_view import answer_bundle

    ok = Answer(text='{"word": "cat", "letters": 3}', data=Word(word="cat", letters=3))
    bundle = answer_bundle(ok)
    assert '"letters": 3' in bundle["text/plain"] and "vm-data" in bundle["text/html"]
    bad = Answer(text='{"word": 1}', schema_error="field `word`: Input should be a valid string")
    assert "does not fit the schema: field `word`" in answer_bundle(bad)["text/plain"]
    assert "does not fit the schema: field `word`" in answer_bundle(bad)["text/html"]


# -- the real server --------------------------------------------------------------------------------
@pytest.mark.server
def test_schema_over_a_20_row_frame_gives_20_validated_rows_and_marks_one_that_does_not_fit(
        managed, smollm2_server, tmp_path):
    shell = managed(smollm2_server)
    shell.user_ns["df"] = pd.DataFrame({"w": WORDS})
    shell.user_ns["Word"] = Word
    shell.run_cell_magic("ask", "--each df --schema Word --temperature 0 --max-tokens 40 --out got", PROMPT)
    got = shell.user_ns["got"]
    assert len(got) == 20 and all(isinstance(a.data, Word) for a in got), [a.schema_error for a in got]
    assert got[0].request["response_format"]["type"] == "json_schema"
    frame = got.to_frame()
    assert len(frame) == 20 and list(frame["w"]) == WORDS and frame["_error"].isna().all()
    assert all(isinstance(v, str) and len(v) <= 12 for v in frame["word"])
    assert list(frame["letters"]) == [a.data.letters for a in got]

    # A stricter model than the JSON the server is asked for: the one word it refuses fails its rows
    # only; every row stays, in order.
    refused = frame["word"].iloc[7]

    class Stricter(BaseModel):
        word: str
        letters: int

        @field_validator("word")
        @classmethod
        def not_the_refused_word(cls, v):
            if v == refused:
                raise ValueError(f"{refused!r} is not allowed")
            return v

    shell.user_ns["Stricter"] = Stricter
    path = tmp_path / "words.jsonl"
    shell.run_cell_magic("ask", f"--each df --schema Stricter --jsonl {path} --temperature 0 --max-tokens 40", PROMPT)
    results = shell.user_ns["_ask"]
    strict = results.to_frame()
    failed = strict.index[strict["_error"].notna()].tolist()
    assert 7 in failed and failed == frame.index[frame["word"] == refused].tolist()
    assert strict["_error"][7] == f"row 7: field `word`: Value error, {refused!r} is not allowed"
    assert len(strict) == 20 and list(strict["w"]) == WORDS and strict["word"].notna().sum() == 20 - len(failed)
    assert results[7].schema_error and results[7].data is None and isinstance(results[0].data, Stricter)

    # A single %%ask: the Answer carries the object, or the line naming the field.
    shell.run_cell_magic("ask", "--schema Word --temperature 0 --max-tokens 40",
                         "The word is tiger. Reply in JSON with the word and its letter count.")
    one = shell.user_ns["_ask"]
    assert isinstance(one.data, Word) and one.schema_error is None


@pytest.mark.server
def test_jsonl_batch_interrupted_and_resumed_asks_each_item_once_in_order(managed, smollm2_server, tmp_path, capsys):
    """Ctrl-C (a real SIGINT-style interrupt of the main thread) midway through a 300-item --jsonl batch,
    then --resume. The 2,000-item version of this, through the same run_to_store, is
    tests/test_batch_store.py::test_2000_items_interrupted_and_resumed_lose_nothing_and_repeat_nothing."""
    from test_batch_store import successes

    shell = managed(smollm2_server)
    n = 300
    shell.user_ns["numbers"] = list(range(n))
    path = tmp_path / "numbers.jsonl"
    # One-token answers: each token more is an engine step more per item, and the test is about the file.
    line = f"--each numbers --jsonl {path} --concurrency 32 --temperature 0 --max-tokens 1"
    prompt = "Repeat this number: {{ item }}"

    def interrupt_midway():
        while not path.exists() or path.read_bytes().count(b"\n") < 100:
            threading.Event().wait(0.02)
        _thread.interrupt_main()

    before = successes(smollm2_server)
    threading.Thread(target=interrupt_midway, daemon=True).start()
    with pytest.raises(UsageError, match=r"interrupted: .* answers are kept in .*run the same cell with --resume"):
        shell.run_cell_magic("ask", line, prompt)
    first = [json.loads(x) for x in path.read_bytes().splitlines()]
    assert 100 <= len(first) < n and shell.user_ns["_ask"].answered == len(first)

    with pytest.raises(UsageError, match="already holds answers: add --resume"):
        shell.run_cell_magic("ask", line, prompt)
    shell.run_cell_magic("ask", line + " --resume --out done", prompt)
    lines = [json.loads(x) for x in path.read_bytes().splitlines()]
    assert sorted(r["i"] for r in lines) == list(range(n))  # none lost, none answered twice
    # The server finished each item once, but for the few in flight at the Ctrl-C: one whose last token the
    # server had sent before the stream was cut is asked again (its answer never reached the file).
    extra = successes(smollm2_server) - before - n
    assert 0 <= extra <= 32, extra
    from vllm_magics.server.plan import served_model_name

    model = served_model_name(smollm2_server.plan)  # the name the magic sends for the managed server
    # Each stored answer belongs to its own input: its key is the hash of that item's request.
    for r in lines:
        messages = [{"role": "user", "content": f"Repeat this number: {r['i']}"}]
        assert r["key"] == item_key(messages, {"temperature": 0.0, "max_tokens": 1, "return_token_ids": True},
                                       model)
    done = shell.user_ns["done"]
    assert len(done) == n and [a.index for a in done] == list(range(n)) and all(a.ok for a in done)
    out = capsys.readouterr().out
    assert " 0 failed" in out and "failed ·" in out and not [x for x in out.splitlines() if "done ·" in x and
                                                           " 0 failed" not in x]  # cut by Ctrl-C: not failures
    assert f"{n} / {n} done" in out.replace(",", "") and "in flight" in out and "left" in out


def test_batch_views_are_bounded_and_escape_model_output(tmp_path):
    from vllm_magics.ask.answer import Answer
    from vllm_magics.ask.batch_store import AnswerStore, BatchResults, answer_fields
    from vllm_magics.notebook.views.answer_view import answers_table_bundle, frame_bundle

    path = tmp_path / "a.jsonl"
    with AnswerStore(path) as store:
        for i in range(120):
            a = Answer(text='{"word": "<b>x</b>", "letters": 3}' if i != 5 else "not json", index=i)
            a.ended_at = a.started_at
            store.write(i, None, answer_fields(a))
    results = BatchResults(path, 130, schema=Word, rows=pd.DataFrame({"w": range(130)}))
    assert results[5].schema_error.startswith("not JSON") and results[0].data == Word(word="<b>x</b>", letters=3)
    frame = results.to_frame()
    assert len(frame) == 130 and frame["_error"].notna().sum() == 11  # row 5, and the 10 never answered
    assert "120 ok" not in results.summary() and "119 ok, 1 failed, 10 not answered" in results.summary()
    head = results.head(50)
    bundle = frame_bundle(frame.iloc[:50], len(results), results.summary())
    assert "<b>x</b>" not in bundle["text/html"] and "&lt;b&gt;x&lt;/b&gt;" in bundle["text/html"]
    assert "80 more rows" in bundle["text/plain"]
    table = answers_table_bundle(head, len(results), results.summary())
    assert table["text/plain"].count("\n[") == 49 and "80 more" in table["text/plain"]
    assert "<b>x</b>" not in table["text/html"]
