"""A batch of questions (`%%ask --each`): many requests in flight at once, so vLLM's continuous
batching does the work. No IPython: callers pass `on_answer(answer)` for progress.

    answers = ask_many(make_client, items, prepare, {"max_tokens": 20}, model="m")

Costs stay linear in the number of items: prompts are built by the workers as they take items (the
first request leaves before the 100,000th prompt is rendered), progress is counted as answers finish,
and nothing walks the whole list per answer.
"""
from __future__ import annotations

import threading
from typing import Callable, Sequence

from vllm_magics.ask.answer import Answer, AnswerList, not_answered
from vllm_magics.ask.client import ChatClient
from vllm_magics.ask.request import ask
from vllm_magics.ask.workers import Job, run


class BatchAnswers(AnswerList):
    """The answers of an --each batch, with what `to_frame()` joins them to: the input `rows` and the
    `schema` (both optional)."""

    rows = None
    schema = None

    def to_frame(self, rows=None, schema=None):
        """A DataFrame in input order. With a schema (given, or the batch's --schema): the input rows
        joined to its fields, failed rows marked in `_error`. Without: the answer columns next to the
        input rows. Items an interrupted batch never asked are rows marked "not answered"."""
        from vllm_magics.ask.frames import answers_frame

        rows = rows if rows is not None else self.rows
        schema = schema if schema is not None else self.schema
        n = len(rows) if rows is not None else max(len(self), self.total or 0)
        answers = list(self[:n]) + [not_answered(i) for i in range(len(self), n)]
        if schema is not None:
            from vllm_magics.ask.schema import answers_to_frame

            return answers_to_frame(rows if rows is not None else range(n), answers, schema)
        return answers_frame(answers, rows)


class BatchInterrupted(KeyboardInterrupt):
    """Ctrl-C during a batch. `answers` holds every answer started, in input order: the finished ones
    as they are, the ones in flight marked interrupted (with what had arrived)."""

    def __init__(self, answers: AnswerList):
        super().__init__()
        self.answers = answers


def ask_many(client_factory: Callable[[], ChatClient], items: Sequence, prepare: Callable, params: dict, *,
             model: str, concurrency: int = 16, stream: bool = True,
             on_answer: Callable[[Answer], None] | None = None) -> BatchAnswers:
    """Ask once per item: `prepare(item)` gives (prompt, messages). Results come back in input order;
    a failed item (its request, or its prompt) keeps its error and the rest go on. Ctrl-C returns at
    once with BatchInterrupted: requests in flight are cut (the server aborts them), the rest are not
    sent."""
    results = BatchAnswers()
    results.total = len(items)
    if not items:
        return results
    stop = threading.Event()

    def take() -> Job | None:  # under the engine's lock: answers are appended in index order
        i = len(results)
        if i >= len(items):
            return None
        results.append(Answer(index=i))
        return Job(results[i])

    def do(job: Job, client: Callable) -> None:
        answer = job.answer
        answer.prompt, messages = prepare(items[answer.index])
        ask(client(), messages, params, model=model, stream=stream, stop_event=stop, answer=answer)

    snapshots = run(take, do, max(1, min(concurrency, len(items))), lambda job: client_factory(), stop,
                    on_done=(lambda job: on_answer(job.answer)) if on_answer else None)
    if snapshots is not None:
        for _, answer in snapshots:
            results[answer.index] = answer
        raise BatchInterrupted(results)
    return results
