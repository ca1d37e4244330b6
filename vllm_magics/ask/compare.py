"""One prompt, several models at once (`%%ask --compare A,B`): answers side by side. No IPython:
callers pass `on_update(column, answer)` for the live view.

    targets = [Target("base", url, key), Target("adapter", url, key, model="pineapple")]
    answers = compare(targets, [{"role": "user", "content": "Hi"}], {"temperature": 0})

A target is whatever answers a chat request: two servers, two models or LoRA adapters on one server,
or one model asked with two system prompts or two sets of parameters. Each target streams into its
own Answer in its own thread (ask.request.ask, unchanged); a failing target keeps its error and the
others go on; Ctrl-C cuts every request in flight (CompareInterrupted carries what had arrived).

With a list of prompts (`compare_each`, for `--each`): one row per item, one column per target, at
most `concurrency` requests in flight; work is taken row by row, so the cost stays linear in
items × targets and the first rows finish first.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable, Sequence

from vllm_magics.ask.answer import Answer, AnswerList
from vllm_magics.ask.client import ChatClient
from vllm_magics.ask.request import ask
from vllm_magics.ask.workers import Job, describe, run
from vllm_magics.errors import VllmMagicsError


@dataclass
class Target:
    """Where one column's answers come from. `model` None: the server's first model. `system`: the
    system prompt for this target (replaces the conversation's). `params`: merged over the shared ones."""

    label: str
    base_url: str
    api_key: str | None = field(default=None, repr=False)
    model: str | None = None
    system: str | None = None
    params: dict = field(default_factory=dict)
    timeout: float = 600.0

    def messages(self, messages: list[dict]) -> list[dict]:
        if self.system is None:
            return messages
        rest = [m for m in messages if not (isinstance(m, dict) and m.get("role") == "system")]
        return [{"role": "system", "content": self.system}] + rest

    def client(self) -> ChatClient:
        return ChatClient(self.base_url, self.api_key, timeout=self.timeout)


class Comparison(list):
    """The Answers of one compared prompt, in target order; `labels` names the columns."""

    def __init__(self, answers=(), labels: Sequence[str] = ()):
        super().__init__(answers)
        self.labels = list(labels)

    def text_view(self) -> str:
        """For terminals and scripts: each answer under its label (columns do not fit a terminal)."""
        return "\n\n".join(f"=== {label} ===\n{answer.text_view()}" for label, answer in zip(self.labels, self))

    def __repr__(self) -> str:
        return self.text_view()


class CompareTable:
    """`compare_each`'s result: `rows[i][j]` is item i's answer from target j. `total` is the number
    of items asked for (after Ctrl-C some rows are missing or partly filled)."""

    def __init__(self, labels: Sequence[str], prompts: list[str], rows: list[list[Answer | None]], total: int):
        self.labels, self.prompts, self.rows, self.total = list(labels), prompts, rows, total

    def column(self, label: str) -> AnswerList:
        """One target's answers, in item order (the items it was not asked are left out)."""
        j = self.labels.index(label)
        answers = AnswerList(row[j] for row in self.rows if row[j] is not None)
        answers.total = self.total
        return answers

    def to_frame(self):
        """A pandas DataFrame: the prompt, then each target's answer text (pandas imported here)."""
        import pandas as pd

        data = {"prompt": self.prompts}
        for j, label in enumerate(self.labels):
            data[label] = [row[j].text if row[j] is not None else None for row in self.rows]
        return pd.DataFrame(data)

    def text_view(self, rows: int = 20) -> str:
        lines = []
        for i, row in enumerate(self.rows[:rows]):
            lines.append(f"[{i}] {self.prompts[i][:120]}")
            for label, a in zip(self.labels, row):
                lines.append(f"    {label}: {_one_line(a)}")
        if len(self.rows) > rows:
            lines.append(f"... {len(self.rows) - rows} more rows (all are in .rows)")
        if self.total > len(self.rows):
            lines.append(f"{self.total - len(self.rows)} of {self.total} items not asked")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.text_view()


def _one_line(a: Answer | None) -> str:
    if a is None:
        return "(not asked)"
    if a.error:
        return f"error: {a.error}"
    text = a.text.strip().replace("\n", " ")[:200]
    return text + (" (interrupted)" if a.interrupted else "")


class CompareInterrupted(KeyboardInterrupt):
    """Ctrl-C during a comparison: `result` (a Comparison or CompareTable) holds every answer started,
    the unfinished ones marked interrupted with what had arrived."""

    def __init__(self, result):
        super().__init__()
        self.result = result


def _runner(targets: Sequence[Target], params: dict, stream: bool, stop: threading.Event,
            on_update: Callable[[int, Answer], None] | None = None) -> tuple[Callable, Callable]:
    """(do, new_client) for the engine: a job asks its target, in the worker's client for it."""

    def do(job: Job, client: Callable) -> None:
        if job.error:
            raise VllmMagicsError(job.error)
        target = targets[job.target]
        update = (lambda a, j=job.target: on_update(j, a)) if on_update else None
        ask(client(), target.messages(job.messages), {**params, **target.params}, model=target.model,
            stream=stream, on_update=update, stop_event=stop, answer=job.answer)

    return do, lambda job: targets[job.target].client()


def compare(targets: Sequence[Target], messages: list[dict], params: dict,
            on_update: Callable[[int, Answer], None] | None = None, *, stream: bool = True,
            on_done: Callable[[int, Answer], None] | None = None, on_tick: Callable[[], None] | None = None,
            tick_every: float = 0.05) -> Comparison:
    """Ask every target the same conversation at once; the Answers come back in target order, each
    with its own error if it failed. Ctrl-C raises CompareInterrupted with what had arrived.

    `on_update(column, answer)` and `on_done(column, answer)` run in the column's own thread (the one
    that may read its growing text); `on_tick()` runs in the caller's thread every `tick_every`
    seconds (a notebook display is updated from there)."""
    if not targets:
        raise ValueError("compare needs at least one target")
    result = Comparison([Answer(streaming=stream) for _ in targets], [t.label for t in targets])
    jobs = [Job(answer, j, messages) for j, answer in enumerate(result)]
    queue = iter(jobs)
    stop = threading.Event()
    do, new_client = _runner(targets, params, stream, stop, on_update)
    snapshots = run(lambda: next(queue, None), do, len(jobs), new_client, stop,
                    on_done=(lambda job: on_done(job.target, job.answer)) if on_done else None,
                    on_tick=on_tick, tick_every=tick_every, name="vllm-magics-compare")
    if snapshots is not None:
        for job, answer in snapshots:
            result[job.target] = answer
        raise CompareInterrupted(result)
    return result


def compare_each(targets: Sequence[Target], items: Sequence, prepare: Callable, params: dict, *,
                 concurrency: int = 8, stream: bool = True,
                 on_done: Callable[[int, int, Answer], None] | None = None,
                 on_tick: Callable[[], None] | None = None) -> CompareTable:
    """Ask every target once per item: `prepare(item)` gives (prompt, messages), called once per item
    when its row is first taken. At most `concurrency` requests are in flight in all."""
    if not targets:
        raise ValueError("compare needs at least one target")
    width = len(targets)
    table = CompareTable([t.label for t in targets], [], [], len(items))
    if not items:
        return table
    position = [0]  # the next (item, target) pair, row-major
    current: list = [None, None]  # the row being handed out and its (prompt, messages) or error

    def take() -> Job | None:  # called under the engine's lock: rows are appended in order
        i, j = divmod(position[0], width)
        if i >= len(items):
            return None
        position[0] += 1
        if j == 0:
            try:
                current[:] = [i, prepare(items[i])]
                table.prompts.append(current[1][0])
            except Exception as exc:  # a bad item (its template, say) fails its row, not the batch
                current[:] = [i, exc]
                table.prompts.append("")
            table.rows.append([None] * width)
        prepared = current[1]
        answer = Answer(index=i, streaming=stream)
        table.rows[i][j] = answer
        if isinstance(prepared, Exception):
            return Job(answer, j, None, describe(prepared))
        answer.prompt = prepared[0]
        return Job(answer, j, prepared[1])

    stop = threading.Event()
    workers = max(1, min(concurrency, len(items) * width))
    do, new_client = _runner(targets, params, stream, stop)
    snapshots = run(take, do, workers, new_client, stop,
                    on_done=(lambda job: on_done(job.answer.index, job.target, job.answer)) if on_done else None,
                    on_tick=on_tick, name="vllm-magics-compare")
    if snapshots is not None:
        for job, answer in snapshots:
            table.rows[answer.index][job.target] = answer
        raise CompareInterrupted(table)
    return table
