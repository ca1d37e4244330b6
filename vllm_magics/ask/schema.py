"""Structured answers: ask the server for JSON that fits a schema, then parse and validate the reply.

    spec = answer_schema(Person)                # a pydantic v2 model class, or a JSON-schema dict
    params.update(spec.request_fields())        # {"response_format": {"type": "json_schema", ...}}
    result = spec.parse(answer.text)            # Parsed(data=Person(...), error=None)
    frame = answers_to_frame(df, answers, spec) # input rows + the schema's fields + `_error`

Why `response_format` and not vLLM's own `structured_outputs: {"json": schema}`: vLLM 0.32 turns
`response_format.json_schema.schema` into exactly `structured_outputs.json`
(vllm/entrypoints/generate/base/protocol.py, structured_outputs_from_response_format), so both give
the same grammar-constrained decoding (measured on the rig: same reply), and `response_format` is
the OpenAI field that other servers given by --url understand too. vLLM ignores `strict` and always
enforces the schema; it requires `json_schema.name` (400 without it).

Reasoning stays apart: only the answer text is parsed (the server's `reasoning` field and a
`<think>` block are split off by ReasoningSplitter first). Plain module: pydantic and pandas are
imported when used.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Iterable

from vllm_magics.errors import SchemaError

ERROR_COLUMN = "_error"


@dataclass
class Parsed:
    """One reply checked against a schema: `data` (a model instance or plain JSON) or a one-line `error`."""
    data: Any = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _field_path(loc) -> str:
    return ".".join(str(p) for p in loc)


# -- the schema -----------------------------------------------------------------------------------
class AnswerSchema:
    """A pydantic model class or a JSON-schema dict, with its request fields and its validator."""

    def __init__(self, schema, name: str | None = None, strict: bool = True):
        if isinstance(schema, dict):
            self.model = None
            self.json_schema = schema
            check_supported(schema)
            default_name = schema.get("title") or "answer"
        elif isinstance(schema, type) and hasattr(schema, "model_json_schema") and hasattr(schema, "model_validate_json"):
            self.model = schema
            self.json_schema = schema.model_json_schema()
            default_name = schema.__name__
        else:
            raise SchemaError(f"a schema is a pydantic model class or a JSON-schema dict, not {type(schema).__name__}")
        # OpenAI's rule for the name: ^[a-zA-Z0-9_-]{1,64}$ (vLLM takes any string).
        self.name = re.sub(r"[^A-Za-z0-9_-]", "_", str(name or default_name))[:64] or "answer"
        self.strict = strict

    @property
    def fields(self) -> list[str]:
        """The top-level properties: the columns a batch's frame gets."""
        return list((self.json_schema.get("properties") or {}).keys())

    def request_fields(self) -> dict:
        """Merge into the request body (the `params` of ask / ask_many)."""
        return {"response_format": {"type": "json_schema", "json_schema": {
            "name": self.name, "schema": self.json_schema, "strict": self.strict}}}

    def parse(self, text: str) -> Parsed:
        """Validate the answer text (never the reasoning). Never raises on bad model output."""
        text = strip_fence(text or "")
        if self.model is not None:
            from pydantic import ValidationError

            try:
                return Parsed(self.model.model_validate_json(text))
            except ValidationError as exc:
                return Parsed(error=pydantic_error_line(exc))
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:  # ValueError: bad JSON, or an int too long to read
            return Parsed(error=f"not JSON: {_one_line(exc)}")
        problem = validate(data, self.json_schema)
        return Parsed(error=problem) if problem else Parsed(data)

    def parse_message(self, message: dict) -> Parsed:
        """A non-streamed reply's `message` (e.g. from `vllm run-batch` output): reasoning split off first."""
        from vllm_magics.ask.reasoning import ReasoningSplitter

        splitter = ReasoningSplitter()
        splitter.feed(message or {})
        splitter.finish()
        return self.parse(splitter.answer)

    def as_dict(self, data) -> dict:
        """A validated object as a plain dict (the row's schema fields)."""
        if self.model is not None and hasattr(data, "model_dump"):
            return data.model_dump()
        return data if isinstance(data, dict) else {"value": data}


def answer_schema(schema, name: str | None = None, strict: bool = True) -> AnswerSchema:
    return schema if isinstance(schema, AnswerSchema) else AnswerSchema(schema, name=name, strict=strict)


_FENCE = re.compile(r"\A\s*```(?:json)?\s*\n(.*?)\n?```\s*\Z", re.S)


def strip_fence(text: str) -> str:
    """A server that ignores response_format may wrap the JSON in a ```json fence: take what is inside."""
    m = _FENCE.match(text)
    return m.group(1) if m else text


def pydantic_error_line(exc) -> str:
    errors = exc.errors(include_url=False, include_input=False)
    if not errors:
        return _one_line(exc)
    first = errors[0]
    where = _field_path(first.get("loc") or ())
    line = f"field `{_one_line(where, 80)}`: {first.get('msg')}" if where else str(first.get("msg"))
    if first.get("type") == "json_invalid":
        line = f"not JSON: {first.get('msg')}"
    more = len(errors) - 1
    return _one_line(line + (f" (and {more} more)" if more else ""))


# -- a small validator for dict schemas ----------------------------------------------------------
# pydantic v2 cannot build a validator from a JSON-schema dict, and `jsonschema` is not on Colab's
# default stack, so dict schemas are checked by this subset. Annotation keywords are ignored; any
# other keyword is refused up front (SchemaError) rather than silently not checked.
CHECKED_KEYWORDS = frozenset({
    "type", "properties", "required", "additionalProperties", "items", "enum", "const", "anyOf",
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength", "pattern",
    "minItems", "maxItems", "$ref", "$defs", "definitions"})
ANNOTATION_KEYWORDS = frozenset({
    "title", "description", "default", "examples", "$schema", "$id", "format", "$comment", "readOnly",
    "writeOnly", "deprecated"})
_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def check_supported(schema, path: str = "") -> None:
    if not isinstance(schema, dict):
        if isinstance(schema, bool):
            return
        raise SchemaError(f"schema at `{path or '(root)'}` is {type(schema).__name__}, not an object")
    unknown = set(schema) - CHECKED_KEYWORDS - ANNOTATION_KEYWORDS
    if unknown:
        raise SchemaError(f"the JSON-schema keyword(s) {', '.join(sorted(unknown))} at `{path or '(root)'}` "
                          "cannot be checked here; use a pydantic model for this schema")
    for key in ("properties", "$defs", "definitions"):
        for name, sub in (schema.get(key) or {}).items():
            check_supported(sub, f"{path}.{name}" if path else name)
    for sub in schema.get("anyOf") or []:
        check_supported(sub, path)
    if "items" in schema and not isinstance(schema["items"], (dict, bool)):
        raise SchemaError(f"`items` at `{path or '(root)'}` must be one schema (a list of them is not checked here)")
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            check_supported(schema[key], f"{path}[]" if key == "items" else path)


def _type_ok(value, name: str) -> bool:
    if name == "integer":
        return isinstance(value, int) and not isinstance(value, bool) or (
            isinstance(value, float) and value.is_integer())
    if name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    kind = _TYPES.get(name)
    return kind is not None and isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))


def _resolve(ref: str, root: dict) -> dict:
    m = re.fullmatch(r"#/(\$defs|definitions)/([^/]+)", ref)
    target = (root.get(m.group(1)) or {}).get(m.group(2)) if m else None
    if target is None:
        raise SchemaError(f"cannot resolve $ref {ref!r} (only #/$defs/NAME and #/definitions/NAME)")
    return target


def validate(value, schema, root: dict | None = None, path: tuple = ()) -> str | None:
    """The first problem as one line ("field `age`: expected integer, got string"), or None."""
    root = root if root is not None else schema
    if schema is True or schema == {}:
        return None
    if schema is False:
        return _problem(path, "no value is allowed here")
    if "$ref" in schema:
        return validate(value, _resolve(schema["$ref"], root), root, path)
    if "anyOf" in schema:
        if all(validate(value, sub, root, path) for sub in schema["anyOf"]):
            return _problem(path, "matches none of the allowed forms (anyOf)")
    types = schema.get("type")
    if types is not None:
        names = types if isinstance(types, list) else [types]
        if not any(_type_ok(value, t) for t in names):
            return _problem(path, f"expected {' or '.join(names)}, got {_json_type(value)}")
    if "const" in schema and value != schema["const"]:
        return _problem(path, f"must be {json.dumps(schema['const'])}")
    if "enum" in schema and value not in schema["enum"]:
        return _problem(path, f"must be one of {_one_line(json.dumps(schema['enum']), 120)}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        for key, bad, word in (("minimum", lambda v, b: v < b, ">="), ("maximum", lambda v, b: v > b, "<="),
                               ("exclusiveMinimum", lambda v, b: v <= b, ">"),
                               ("exclusiveMaximum", lambda v, b: v >= b, "<")):
            if key in schema and bad(value, schema[key]):
                return _problem(path, f"must be {word} {schema[key]}")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            return _problem(path, f"must have at least {schema['minLength']} characters")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            return _problem(path, f"must have at most {schema['maxLength']} characters")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            return _problem(path, f"does not match the pattern {schema['pattern']!r}")
    if isinstance(value, list):
        return _check_array(value, schema, root, path)
    if isinstance(value, dict):
        return _check_object(value, schema, root, path)
    return None


def _check_array(value: list, schema: dict, root: dict, path: tuple) -> str | None:
    if len(value) < schema.get("minItems", 0):
        return _problem(path, f"must have at least {schema['minItems']} items")
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        return _problem(path, f"must have at most {schema['maxItems']} items")
    if isinstance(schema.get("items"), (dict, bool)):
        for i, item in enumerate(value):
            problem = validate(item, schema["items"], root, path + (i,))
            if problem:
                return problem
    return None


def _check_object(value: dict, schema: dict, root: dict, path: tuple) -> str | None:
    props = schema.get("properties") or {}
    for name in schema.get("required") or []:
        if name not in value:
            return _problem(path + (name,), "Field required")
    extra = schema.get("additionalProperties", True)
    for name, item in value.items():
        sub = props.get(name, extra)
        problem = validate(item, sub, root, path + (name,)) if sub is not False else (
            _problem(path + (name,), "is not an allowed field"))
        if problem:
            return problem
    return None


def _json_type(value) -> str:
    for name in ("boolean", "integer", "number", "string", "array", "object", "null"):
        if _type_ok(value, name):
            return name
    return type(value).__name__


def _problem(path: tuple, message: str) -> str:
    where = _field_path(path)
    return _one_line(f"field `{_one_line(where, 80)}`: {message}" if where else message)


# -- a batch into a DataFrame --------------------------------------------------------------------
def answers_to_frame(rows, answers: Iterable, schema) -> "Any":
    """The input rows (a DataFrame, or a list of dicts / values) joined to the schema's fields.

    `answers` are in input order: Answer objects (their `.text`, and `.error` for failed requests) or
    plain strings. A row whose answer failed or does not fit keeps its input, gets empty schema fields
    and its reason in `_error` ("row 7: field `age`: ..."); no row is dropped, the order is kept.
    A schema field named like an input column becomes `<name>_answer`.
    """
    import pandas as pd

    spec = answer_schema(schema)
    if isinstance(rows, pd.DataFrame):
        frame = rows.reset_index(drop=True)  # join by position; the input's index comes back at the end
    else:
        rows = list(rows)
        frame = pd.DataFrame(rows if rows and isinstance(rows[0], dict) else {"input": rows})
    names = {f: (f"{f}_answer" if f in frame.columns else f) for f in spec.fields}
    out: dict[str, list] = {col: [] for col in names.values()}
    out[ERROR_COLUMN] = []
    n = 0
    for n, answer in enumerate(answers, start=1):
        error = getattr(answer, "error", None) or (
            "interrupted before the answer was complete" if getattr(answer, "interrupted", False) else None)
        parsed = None if error else spec.parse(answer if isinstance(answer, str) else getattr(answer, "text", ""))
        if parsed is not None and parsed.error:
            error = parsed.error
        values = spec.as_dict(parsed.data) if parsed is not None and parsed.ok else {}
        for f, col in names.items():
            out[col].append(values.get(f))
        out[ERROR_COLUMN].append(f"row {n - 1}: {_one_line(error)}" if error else None)
    if n != len(frame):
        raise ValueError(f"{n} answers for {len(frame)} input rows: they must pair up in order")
    result = pd.concat([frame, pd.DataFrame(out, index=frame.index)], axis=1)
    if isinstance(rows, pd.DataFrame):
        result.index = rows.index
    return result
