"""A batch's transient errors, retried with back-off, and its progress (done / failed / in flight,
tokens per second, time left). Plain Python, used by batch_store.run_to_store."""
from __future__ import annotations

import random
import threading
import time
from typing import Callable

from vllm_magics.errors import BadReply


# -- transient errors: retried with back-off ------------------------------------------------------
TRANSIENT_STATUS = frozenset({408, 429, 502, 503, 504})  # busy or a proxy in between; 500 is repeatable


def is_transient(exc: BaseException) -> bool:
    """Worth asking again: a refused/reset connection or a busy server. AskError hides the original
    (`raise ... from None` still keeps it as __context__), so the chain is followed. Never a reply that is
    not a chat server's or none in time (BadReply, TooSlow), whatever it was raised from: the same again."""
    import requests

    from vllm_magics.ask.client import NoServer

    seen = 0
    while exc is not None and seen < 5:
        if isinstance(exc, BadReply):
            return False
        status = getattr(exc, "status", None)
        if isinstance(status, int):
            return status in TRANSIENT_STATUS
        if isinstance(exc, (NoServer, ConnectionError, requests.ConnectionError,
                            requests.exceptions.ChunkedEncodingError)):
            return True  # refused, reset, cut mid-answer (a read timeout is not: the server is just slow)
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def with_retries(fn: Callable, *, attempts: int = 5, policy: Callable = is_transient, base: float = 0.5,
                 cap: float = 20.0, sleep: Callable[[float], object] | None = None,
                 jitter: Callable[[], float] = random.random, on_retry: Callable | None = None,
                 stop_event: threading.Event | None = None):
    """fn() until it works, a non-transient error, `attempts` tries or a stop. Waits base*2^k (capped),
    scaled by 0.5..1 at random so many workers do not come back at the same instant."""
    for k in range(attempts):
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - the policy decides
            if k == attempts - 1 or not policy(exc) or (stop_event is not None and stop_event.is_set()):
                raise
            delay = min(cap, base * 2 ** k) * (0.5 + 0.5 * jitter())
            if on_retry:
                on_retry(exc, delay)
            (sleep or (stop_event.wait if stop_event else time.sleep))(delay)


# -- progress -------------------------------------------------------------------------------------
class BatchProgress:
    """done / failed / in flight, tokens per second, time left. O(1) per update, thread-safe."""

    def __init__(self, total: int, already_done: int = 0, clock: Callable[[], float] = time.monotonic):
        self.total, self.already_done, self.clock = total, already_done, clock
        self.done = self.failed = self.in_flight = self.retries = self.tokens = 0
        self._started_at: float | None = None
        self._lock = threading.Lock()

    def started(self) -> None:
        with self._lock:
            self.in_flight += 1
            if self._started_at is None:
                self._started_at = self.clock()

    def finished(self, ok: bool, tokens: int = 0, aborted: bool = False) -> None:
        """One item is in flight no more: done, failed, or `aborted` (cut by Ctrl-C: neither, it is
        asked again on resume)."""
        with self._lock:
            self.in_flight -= 1
            self.tokens += tokens or 0
            if aborted:
                return
            if ok:
                self.done += 1
            else:
                self.failed += 1

    def retried(self, *_args) -> None:
        with self._lock:
            self.retries += 1

    def snapshot(self) -> dict:
        with self._lock:
            span = self.clock() - self._started_at if self._started_at is not None else 0.0
            finished = self.done + self.failed
            left = self.total - self.already_done - finished
            rate = finished / span if span > 0 else 0.0
            return {"total": self.total, "done": self.already_done + self.done, "failed": self.failed,
                    "in_flight": self.in_flight, "retries": self.retries, "resumed": self.already_done,
                    "tokens_per_second": self.tokens / span if span > 0 else None,
                    "seconds_left": left / rate if rate > 0 else None}

    def line(self) -> str:
        s = self.snapshot()
        parts = [f"{s['done']:,} / {s['total']:,} done", f"{s['failed']:,} failed", f"{s['in_flight']} in flight"]
        if s["retries"]:
            parts.append(f"{s['retries']} retried")
        if s["tokens_per_second"] is not None:
            parts.append(f"{s['tokens_per_second']:.0f} tokens/s")
        if s["seconds_left"] is not None:
            m, sec = divmod(int(s["seconds_left"] + 0.5), 60)
            parts.append(f"{m}:{sec:02d} left")
        return " · ".join(parts)
