"""`Answer`: one reply from the model, with its reasoning, usage and timings; `AnswerList`: the answers
of a batch. Plain data with a plain-text view (the repr, for scripts and terminals). The notebook's
HTML and Markdown views are in vllm_magics.notebook.views.answer_view, registered as IPython formatters
when the extension loads."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

NOT_ANSWERED = "not answered: the batch stopped before this item"


@dataclass
class Answer:
    text: str = ""
    reasoning: str = ""
    model: str | None = None
    finish_reason: str | None = None
    usage: dict | None = None
    request: dict = field(default_factory=dict)  # the JSON body sent (no key: that is a header)
    reasoning_source: str | None = None  # "reasoning", "reasoning_content", "tags" or None
    reasoning_chunks: int = 0  # stream events that carried reasoning (one token or a few)
    reasoning_token_ids: int | None = None  # exact count, when the server sent token ids (vLLM)
    started_at: float = field(default_factory=time.monotonic)
    first_token_at: float | None = None
    ended_at: float | None = None
    interrupted: bool = False
    error: str | None = None
    streaming: bool = False  # still arriving (the live view)
    prompt: str = ""
    index: int | None = None  # position in an --each batch
    # With a schema (%%ask --schema): the validated object, or one line naming the field that failed.
    data: object | None = None
    schema_error: str | None = None
    # While streaming: the ReasoningSplitter whose growing texts a live view reads piece by piece
    # (`text` and `reasoning` are filled in when the stream ends). None otherwise.
    live: object | None = field(default=None, repr=False, compare=False)

    # -- figures --------------------------------------------------------------------------------
    @property
    def ttft(self) -> float | None:
        return self.first_token_at - self.started_at if self.first_token_at else None

    @property
    def elapsed(self) -> float:
        return (self.ended_at or time.monotonic()) - self.started_at

    def _count(self, key: str) -> int | None:
        value = (self.usage or {}).get(key)  # from the server: a number only if it is one
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    @property
    def prompt_tokens(self) -> int | None:
        return self._count("prompt_tokens")

    @property
    def completion_tokens(self) -> int | None:
        return self._count("completion_tokens")

    @property
    def reasoning_tokens(self) -> str | None:
        """How long the reasoning was: the server's count (vLLM 0.32 reports 0), else the token ids it
        sent, else the number of stream events (a lower bound: vLLM sometimes merges tokens)."""
        details = (self.usage or {}).get("completion_tokens_details") or {}
        if isinstance(details, dict) and isinstance(details.get("reasoning_tokens"), int) and details["reasoning_tokens"]:
            return str(details["reasoning_tokens"])
        if self.reasoning_token_ids:
            return str(self.reasoning_token_ids)
        return f"≥{self.reasoning_chunks}" if self.reasoning_chunks else None

    @property
    def tokens_per_second(self) -> float | None:
        if not self.completion_tokens or not self.first_token_at or not self.ended_at:
            return None
        span = self.ended_at - self.first_token_at
        return self.completion_tokens / span if span > 0 else None

    @property
    def cut_by_max_tokens(self) -> bool:
        return self.finish_reason == "length"

    @property
    def ok(self) -> bool:
        return self.error is None and not self.interrupted

    def footer_items(self) -> list[str]:
        items = []
        if self.model:
            items.append(self.model.rsplit("/", 1)[-1] if self.model.startswith("/") else self.model)
        if self.prompt_tokens is not None:
            items.append(f"{self.prompt_tokens} tokens in")
        if self.completion_tokens is not None:
            items.append(f"{self.completion_tokens} out")
        if self.ttft is not None:
            items.append(f"first token {self.ttft * 1000:.0f} ms")
        if self.tokens_per_second:
            items.append(f"{self.tokens_per_second:.1f} tokens/s")
        items.append(f"{self.elapsed:.1f} s")
        if self.finish_reason:
            items.append(f"finish: {self.finish_reason}")
        return items

    def warnings(self) -> list[str]:
        out = []
        if self.cut_by_max_tokens:
            limit = self.request.get("max_tokens") or self.request.get("max_completion_tokens")
            out.append(f"The answer was cut off: it reached max_tokens ({limit or 'the server default'}). "
                       "Ask again with a larger --max-tokens.")
        if self.interrupted:
            out.append("Interrupted: this is the part that arrived before you stopped it (the server "
                       "aborted the request).")
        if self.error:
            out.append(self.error)
        if self.schema_error:
            out.append(f"The answer does not fit the schema: {self.schema_error}")
        return out

    def data_json(self) -> str | None:
        """The validated data as indented JSON (a pydantic object is dumped first), or None."""
        if self.data is None:
            return None
        import json

        data = self.data.model_dump() if hasattr(self.data, "model_dump") else self.data
        return json.dumps(data, indent=2, ensure_ascii=False, default=str)

    # -- views ----------------------------------------------------------------------------------
    def __str__(self) -> str:
        return self.text

    def text_view(self) -> str:
        parts = []
        if self.reasoning:
            n = self.reasoning_tokens
            parts.append(f"[reasoning{f', {n} tokens' if n else ''}]\n{self.reasoning.strip()}\n[/reasoning]")
        data = self.data_json()
        parts.append(f"[data]\n{data}" if data is not None else self.text.strip())
        parts += [f"! {w}" for w in self.warnings()]
        parts.append("-- " + " · ".join(self.footer_items()))
        return "\n\n".join(p for p in parts if p)

    def __repr__(self) -> str:
        return self.text_view()


class AnswerList(list):
    """Answers of an --each batch, in input order. `total` is the number of items asked for: after an
    interrupted batch the list holds fewer (the ones started, finished or not)."""

    total: int | None = None

    @property
    def finished(self) -> int:
        return sum(1 for a in self if a.ended_at is not None and not a.interrupted)

    def summary(self) -> str:
        failed = sum(1 for a in self if a.error)
        interrupted = sum(1 for a in self if a.interrupted and not a.error)
        parts = [f"{len(self) - failed - interrupted} ok"] + [f"{n} {what}" for n, what in (
            (failed, "failed"), (interrupted, "interrupted")) if n]
        total = self.total if self.total is not None else len(self)
        return f"{total} answer{'s' if total != 1 else ''}: " + ", ".join(parts) + (
            f", {total - len(self)} not asked" if total > len(self) else "")

    def text_view(self, rows: int = 50) -> str:
        """One line per answer, the first `rows` of them (a batch may have 100,000), then a summary."""
        lines = []
        for i, a in enumerate(self[:rows]):
            status = "ok" if a.ok else ("interrupted" if a.interrupted else "error")
            body = a.text.strip().replace("\n", " ") if a.ok else (a.error or "")
            lines.append(f"[{i}] {status}: {body[:200]}")
        if len(self) > rows:
            lines.append(f"... {len(self) - rows} more (all are in this list)")
        if len(self) > rows or (self.total or 0) > len(self):
            lines.append(self.summary())
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.text_view()

    @property
    def texts(self) -> list[str]:
        return [a.text for a in self]


def not_answered(index: int) -> Answer:
    """The stand-in for an item a batch never asked (over: its elapsed time is 0)."""
    answer = Answer(index=index, error=NOT_ANSWERED)
    answer.ended_at = answer.started_at
    return answer
