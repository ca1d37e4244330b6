"""Structured answers: request fields, parsing and validation, a batch into a DataFrame; real servers."""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pytest
from pydantic import BaseModel, Field, field_validator

from vllm_magics.ask.answer import Answer
from vllm_magics.ask.schema import AnswerSchema, SchemaError, answers_to_frame, validate


class Person(BaseModel):
    name: str
    age: int


PERSON_DICT = {"type": "object", "title": "Person", "properties": {
    "name": {"type": "string", "maxLength": 10}, "age": {"type": "integer", "minimum": 0},
    "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2}},
    "required": ["name", "age"], "additionalProperties": False}


def test_request_fields_are_openai_json_schema():
    fields = AnswerSchema(Person).request_fields()
    rf = fields["response_format"]
    assert rf["type"] == "json_schema"
    assert rf["json_schema"]["name"] == "Person" and rf["json_schema"]["strict"] is True
    assert rf["json_schema"]["schema"]["properties"]["age"]["type"] == "integer"
    assert AnswerSchema({"type": "object"}, name="my schema!").request_fields()["response_format"][
        "json_schema"]["name"] == "my_schema_"


def test_pydantic_reply_is_validated_and_errors_name_the_field():
    spec = AnswerSchema(Person)
    ok = spec.parse('{"name": "Ann", "age": 31}')
    assert ok.ok and ok.data == Person(name="Ann", age=31)
    bad = spec.parse('{"name": "Ann", "age": "old"}')
    assert bad.error == "field `age`: Input should be a valid integer, unable to parse string as an integer"
    assert spec.parse('{"name": "Ann"}').error == "field `age`: Field required"
    assert spec.parse("not json").error.startswith("not JSON:")
    assert spec.parse('```json\n{"name": "Ann", "age": 3}\n```').ok  # a server that ignored response_format
    two = spec.parse("{}").error
    assert two.endswith("(and 1 more)") and "\n" not in two


@pytest.mark.parametrize("reply,problem", [
    ('{"name": "Ann", "age": 3}', None),
    ('{"name": "Ann", "age": 3.0}', None),
    ('{"name": "Ann", "age": true}', "field `age`: expected integer, got boolean"),
    ('{"name": "Ann", "age": -1}', "field `age`: must be >= 0"),
    ('{"name": "Annabelle Lee", "age": 3}', "field `name`: must have at most 10 characters"),
    ('{"name": "Ann"}', "field `age`: Field required"),
    ('{"name": "Ann", "age": 3, "x": 1}', "field `x`: is not an allowed field"),
    ('{"name": "Ann", "age": 3, "tags": ["a", 2]}', "field `tags.1`: expected string, got integer"),
    ('{"name": "Ann", "age": 3, "tags": ["a", "b", "c"]}', "field `tags`: must have at most 2 items"),
    ('[1]', "expected object, got array"),
    ('{"name": "Ann", "age": 1' + "0" * 5000 + "}", "not JSON: "),
    ("[" * 100000, "not JSON: "),
])
def test_dict_schema_subset_validator(reply, problem):
    result = AnswerSchema(PERSON_DICT).parse(reply)
    if problem is None:
        assert result.ok and result.data["name"] == "Ann"
    else:
        assert result.error.startswith(problem) and "\n" not in result.error


def test_dict_validator_refs_anyof_enum_pattern():
    schema = {"$defs": {"Kind": {"enum": ["a", "b"]}}, "type": "object", "properties": {
        "kind": {"$ref": "#/$defs/Kind"}, "code": {"anyOf": [{"type": "string", "pattern": "^[0-9]{3}$"},
                                                             {"type": "null"}]}}}
    assert validate({"kind": "a", "code": "123"}, schema) is None
    assert validate({"kind": "a", "code": None}, schema) is None
    assert validate({"kind": "c"}, schema) == 'field `kind`: must be one of ["a", "b"]'
    assert validate({"code": "12"}, schema) == "field `code`: matches none of the allowed forms (anyOf)"


def test_unsupported_keywords_are_refused_not_ignored():
    with pytest.raises(SchemaError, match="uniqueItems at `tags`"):
        AnswerSchema({"type": "object", "properties": {"tags": {"type": "array", "uniqueItems": True}}})
    with pytest.raises(SchemaError, match="must be one schema"):
        AnswerSchema({"type": "array", "items": [{"type": "string"}]})
    with pytest.raises(SchemaError, match="pydantic model class or a JSON-schema dict"):
        AnswerSchema("Person")
    # pydantic's own schema for a model is within the subset (so a dict copy of it can be checked too)
    AnswerSchema(Person.model_json_schema())


def test_reasoning_is_never_parsed_as_json():
    spec = AnswerSchema(Person)
    # vLLM with --reasoning-parser: the thought is in message.reasoning
    msg = {"reasoning": 'maybe {"name": 1}', "content": '{"name": "Bo", "age": 2}'}
    assert spec.parse_message(msg).data == Person(name="Bo", age=2)
    # without a parser: a <think> block in content (DeepSeek-R1's template opens it in the prompt)
    assert spec.parse_message({"content": '<think>{"age": "x"}</think>\n{"name": "Bo", "age": 2}'}).ok
    assert spec.parse_message({"content": 'hmm {"x"}</think>{"name": "Bo", "age": 2}'}).ok


def test_frame_keeps_every_row_in_order_and_marks_failures():
    df = pd.DataFrame({"text": ["a", "b", "c", "d"], "name": [1, 2, 3, 4]}, index=[10, 11, 12, 13])
    answers = [Answer(text='{"name": "A", "age": 1}'), Answer(text='{"name": "B", "age": "x"}'),
               Answer(error="the server answered 503: busy"), '{"name": "D", "age": 4}']
    frame = answers_to_frame(df, answers, Person)
    assert list(frame.index) == [10, 11, 12, 13]
    assert list(frame.columns) == ["text", "name", "name_answer", "age", "_error"]
    assert [None if pd.isna(v) else v for v in frame["name_answer"]] == ["A", None, None, "D"]
    assert frame["_error"][11].startswith("row 1: field `age`: Input should be a valid integer")
    assert frame["_error"][12] == "row 2: the server answered 503: busy"
    assert frame["_error"].isna().tolist() == [True, False, False, True]
    assert list(answers_to_frame(["x"], [Answer(text="{", interrupted=True)], Person)["_error"]) == [
        "row 0: interrupted before the answer was complete"]
    with pytest.raises(ValueError, match="3 answers for 4 input rows"):
        answers_to_frame(df, answers[:3], Person)


# -- real servers ---------------------------------------------------------------------------------
class Word(BaseModel):
    word: str = Field(max_length=12)
    letters: int


WORDS = ["cat", "house", "river", "apple", "green", "table", "music", "light", "stone", "bread",
         "cloud", "dog", "ocean", "paper", "chair", "sun", "garden", "window", "tiger", "book"]


@pytest.mark.server
def test_pydantic_schema_over_20_rows_gives_20_validated_rows(smollm2_server):
    from vllm_magics.ask.client import ChatClient
    from vllm_magics.ask.request import ask

    spec = AnswerSchema(Word)
    df = pd.DataFrame({"w": WORDS})
    params = {"temperature": 0, "max_tokens": 40, **spec.request_fields()}

    def one(w):
        client = ChatClient(smollm2_server.base_url, api_key=smollm2_server.api_key)
        messages = [{"role": "user", "content": f"The word is {w}. Reply in JSON with the word and its letter count."}]
        return ask(client, messages, params, model=smollm2_server.plan.model)

    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(one, WORDS))
    assert all(a.finish_reason == "stop" for a in answers), [a.text for a in answers]
    frame = answers_to_frame(df, answers, spec)
    assert len(frame) == 20 and list(frame["w"]) == WORDS
    assert frame["_error"].isna().all(), frame["_error"].tolist()
    assert all(isinstance(v, str) and len(v) <= 12 for v in frame["word"])
    assert all(isinstance(v, int) for v in frame["letters"])
    # The same replies against the dict form of the schema (the subset validator) agree.
    assert answers_to_frame(df, answers, Word.model_json_schema())["_error"].isna().all()

    # A stricter schema than the one requested: row 7's word is refused, so row 7 (and only rows with
    # that same word) fail; every row is still there, in order.
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

    strict = answers_to_frame(df, answers, Stricter)
    failed = strict.index[strict["_error"].notna()].tolist()
    assert 7 in failed and failed == frame.index[frame["word"] == refused].tolist()
    assert strict["_error"][7] == f"row 7: field `word`: Value error, {refused!r} is not allowed"
    assert strict["word"].notna().sum() == 20 - len(failed) and list(strict["w"]) == WORDS


@pytest.mark.server
def test_reasoning_model_thought_stays_apart_from_the_json(r1_server):
    """tiny-r1 is a random model: a regex grammar (the recipe of test_ask_real) makes it think, close
    the thought and then write JSON; the reasoning parser splits them and only the JSON is parsed."""
    import urllib.request

    from vllm_magics.ask.client import ChatClient
    from vllm_magics.ask.request import ask

    req = urllib.request.Request(f"{r1_server.base_url}/tokenize", json.dumps(
        {"model": r1_server.plan.model, "prompt": "</think>", "add_special_tokens": False}).encode(),
        {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        [close_id] = json.load(resp)["tokens"]
    params = {"temperature": 0, "max_tokens": 40, "logit_bias": {str(close_id): 100},
              "structured_outputs": {"regex": r'\{"name": "x"\}</think>\{"name": "Bo", "age": 7\}'}}
    answer = ask(ChatClient(r1_server.base_url, api_key=r1_server.api_key), [{"role": "user", "content": "hi"}], params)
    assert answer.reasoning == '{"name": "x"}'  # JSON-looking thought: kept apart, never validated
    assert AnswerSchema(Person).parse(answer.text).data == Person(name="Bo", age=7)
