"""A batch of questions (`%%ask --each`): many requests in flight at once, so vLLM's continuous
batching does the work. No IPython: callers pass `on_answer(answer)` for progress.

    answers = ask_many(make_client, items, prepare, {"max_tokens": 20}, model="m")

Costs stay linear in the number of items: prompts are built by the workers as they take items (the
first request leaves before the 100,000th prompt is rendered), progress is counted as answers finish,
and nothing walks the whole list per answer.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from typing import Callable, Sequence

from vllm_magics.ask.answer import Answer, AnswerList
from vllm_magics.ask.client import ChatClient
from vllm_magics.ask.request import AskError, ask
from vllm_magics.ask.sockets import OpenSockets
from vllm_magics.errors import VllmMagicsError


class BatchInterrupted(KeyboardInterrupt):
    """Ctrl-C during a batch. `answers` holds every answer started, in input order: the finished ones
    as they are, the ones in flight marked interrupted (with what had arrived)."""

    def __init__(self, answers: AnswerList):
        super().__init__()
        self.answers = answers


def ask_many(client_factory: Callable[[], ChatClient], items: Sequence, prepare: Callable, params: dict, *,
             model: str, concurrency: int = 16, stream: bool = True,
             on_answer: Callable[[Answer], None] | None = None) -> AnswerList:
    """Ask once per item: `prepare(item)` gives (prompt, messages). Results come back in input order;
    a failed item (its request, or its prompt) keeps its error and the rest go on. Ctrl-C returns at
    once with BatchInterrupted: requests in flight are cut (the server aborts them), the rest are not
    sent."""
    results = AnswerList()
    results.total = len(items)
    if not items:
        return results
    stop = threading.Event()
    lock = threading.Lock()
    in_flight: dict[int, Answer] = {}
    taken = [0]
    sockets = OpenSockets()
    workers = max(1, min(concurrency, len(items)))
    running = [workers]
    all_done = threading.Event()

    def take() -> Answer | None:
        with lock:
            i = taken[0]
            if stop.is_set() or i >= len(items):
                return None
            taken[0] += 1
            answer = Answer(index=i)
            results.append(answer)  # appended in index order: taken under the same lock
            in_flight[i] = answer
            return answer

    def work() -> None:
        client = None
        try:
            while (answer := take()) is not None:
                try:
                    answer.prompt, messages = prepare(items[answer.index])
                    if client is None:
                        client = client_factory()
                        sockets.track(client.session)
                    ask(client, messages, params, model=model, stream=stream, stop_event=stop, answer=answer)
                except AskError as exc:
                    answer.error = answer.error or str(exc)
                except Exception as exc:  # one bad item (its prompt template, say) must not lose the others
                    answer.error = answer.error or (str(exc) if isinstance(exc, VllmMagicsError)
                                                    else f"{exc.__class__.__name__}: {exc}")
                    answer.ended_at = answer.ended_at or time.monotonic()
                with lock:
                    if stop.is_set():
                        return  # interrupted: the list no longer takes this thread's changes
                    in_flight.pop(answer.index, None)
                if on_answer:
                    on_answer(answer)
        finally:
            with lock:
                running[0] -= 1
                if running[0] == 0:
                    all_done.set()

    for _ in range(workers):
        threading.Thread(target=work, name="vllm-magics-ask", daemon=True).start()
    try:
        while not all_done.wait(0.2):  # short waits: Ctrl-C reaches this thread between them
            pass
    except KeyboardInterrupt:
        raise BatchInterrupted(_interrupt(stop, lock, in_flight, results, sockets)) from None
    return results


def _interrupt(stop, lock, in_flight, results, sockets) -> AnswerList:
    """Stop taking items, cut the requests in flight, and keep a snapshot of each unfinished answer
    (the worker threads wind down on their own; nothing waits for them)."""
    with lock:
        stop.set()
        unfinished = dict(in_flight)
    now = time.monotonic()
    for i, answer in unfinished.items():  # snapshots first: cutting the sockets makes the workers write errors
        splitter = answer.live
        text = splitter.answer if splitter is not None else answer.text
        reasoning = splitter.reasoning if splitter is not None else answer.reasoning
        results[i] = dataclasses.replace(answer, text=text, reasoning=reasoning, interrupted=True, streaming=False,
                                         live=None, ended_at=answer.ended_at or now)
    sockets.shutdown_all()
    return results
