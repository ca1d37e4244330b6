"""The engine under `ask_many` (batch.py) and `compare`/`compare_each` (compare.py): a few threads
take jobs (an Answer to fill) one at a time under a lock; Ctrl-C stops the taking, keeps a snapshot of
every answer in flight and cuts their requests. No IPython.

    snapshots = run(take, do, workers, new_client, stop)   # None: every job ran

`take()` (called under the engine's lock) gives the next Job or None; `do(job, client)` asks it, where
`client()` is the worker's ChatClient for `job.target` (made on first use, closed when the worker
ends). A failing job keeps its error on its answer; the others go on.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass
from typing import Callable

from vllm_magics.ask.answer import Answer
from vllm_magics.ask.sockets import OpenSockets
from vllm_magics.errors import AskError, VllmMagicsError


@dataclass
class Job:
    answer: Answer
    target: int = 0  # which client: a compared target's column (a batch has one)
    messages: list[dict] | None = None
    error: str | None = None  # the item's prompt could not be made


def describe(exc: BaseException) -> str:
    """One line for an answer's error: our own errors say it plainly, others name their class."""
    return str(exc) if isinstance(exc, VllmMagicsError) else f"{exc.__class__.__name__}: {exc}"


def run(take: Callable[[], Job | None], do: Callable[[Job, Callable], None], workers: int,
        new_client: Callable[[Job], object], stop: threading.Event, *,
        on_done: Callable[[Job], None] | None = None, on_tick: Callable[[], None] | None = None,
        tick_every: float = 0.2, name: str = "vllm-magics-ask") -> list[tuple[Job, Answer]] | None:
    """Run jobs from `take()` on `workers` threads until none is left, calling `on_tick()` from this
    thread every `tick_every` seconds meanwhile. Returns None when all ran; after Ctrl-C, (job, its
    answer as it stood) for each job in flight (their requests cut; the threads wind down alone)."""
    lock = threading.Lock()
    in_flight: dict[int, Job] = {}
    running = [workers]
    all_done = threading.Event()
    sockets = OpenSockets()

    def work() -> None:
        clients: dict = {}

        def client_for(job: Job):
            def client():
                if job.target not in clients:
                    clients[job.target] = new_client(job)
                    sockets.track(clients[job.target].session)
                return clients[job.target]
            return client

        try:
            while True:
                with lock:
                    job = None if stop.is_set() else take()
                    if job is None:
                        return
                    in_flight[id(job)] = job
                _do(job, client_for(job))
                with lock:
                    if stop.is_set():
                        return  # interrupted: the result no longer takes this thread's changes
                    in_flight.pop(id(job), None)
                if on_done:
                    try:
                        on_done(job)
                    except Exception as exc:  # a failing progress callback must not kill the worker
                        job.answer.error = job.answer.error or f"after the answer: {describe(exc)}"
        finally:
            for c in clients.values():  # keep-alive sockets would stay open until garbage collection
                c.session.close()
            with lock:
                running[0] -= 1
                if running[0] == 0:
                    all_done.set()

    def _do(job: Job, client: Callable) -> None:
        answer = job.answer
        try:
            do(job, client)
        except AskError as exc:
            answer.error = answer.error or str(exc)
        except Exception as exc:  # one bad target or item must not lose the others
            answer.error = answer.error or describe(exc)
        answer.ended_at = answer.ended_at or time.monotonic()

    try:
        # Started inside the try: a Ctrl-C while a thread starts (Thread.start waits for it) must stop
        # the ones already taking jobs, not leave them asking unseen (seen on a loaded machine).
        for _ in range(workers):
            threading.Thread(target=work, name=name, daemon=True).start()
        while not all_done.wait(tick_every):  # short waits: Ctrl-C reaches this thread between them
            if on_tick:
                on_tick()
    except BaseException as exc:  # Ctrl-C, or a failing on_tick: no request may go on unseen
        with lock:
            stop.set()
            unfinished = list(in_flight.values())
        now = time.monotonic()
        snapshots = [(job, snapshot(job.answer, now)) for job in unfinished]  # before the cut: the
        sockets.shutdown_all()  # workers then write connection errors onto their own answers
        if not isinstance(exc, KeyboardInterrupt):
            raise
        return snapshots
    return None


def snapshot(answer: Answer, now: float) -> Answer:
    """An unfinished answer as it stands, its thread still writing to it: a copy, read without
    changing anything (str() of a GrowingText joins and replaces its pieces: a piece appended
    meanwhile would be lost)."""
    live = answer.live
    text = live.answer_text.since(0) if live is not None else answer.text
    reasoning = live.reasoning_text.since(0) if live is not None else answer.reasoning
    return dataclasses.replace(answer, text=text, reasoning=reasoning, interrupted=True, streaming=False,
                               live=None, ended_at=answer.ended_at or now)
