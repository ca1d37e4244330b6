"""Deadlines for blocking socket reads (standard library only).

A socket timeout bounds each recv, not a reply: a server that sends one byte a second never trips it,
and an `http.client` header line or a `requests` body read can then block for hours. A `ReadGuard`
shuts its socket down once `limit` seconds pass without `progress()`: the blocked read sees the end of
the stream, and the caller, finding `guard.fired`, reports a server that is too slow. One daemon
thread watches every open guard (no thread per request; it sleeps while there is none).
"""
from __future__ import annotations

import os
import socket
import threading
import time

_guards: set = set()
_lock = threading.Condition()
_thread: threading.Thread | None = None


def _after_fork_in_child() -> None:
    # A fork while the watcher held the lock would leave it held for good in the child (its first guard
    # would hang); the watcher thread and the guards of the parent's requests do not exist there.
    global _lock, _thread
    _lock = threading.Condition()
    _thread = None
    _guards.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class ReadGuard:
    """`with ReadGuard(seconds) as g: ...; g.attach(sock)`: the clock starts at creation; `progress()`
    restarts it (a stream calls it per complete line, so only a stall ends the stream)."""

    def __init__(self, limit: float):
        self.limit = limit
        self.mark = time.monotonic()
        self.sock = None
        self.fired = False
        _register(self)

    def attach(self, sock) -> None:
        self.sock = sock
        if self.fired:  # the deadline passed while connecting
            self._shut()

    def progress(self) -> None:
        self.mark = time.monotonic()

    def close(self) -> None:
        """After this returns the guard never fires (the watcher fires under the same lock): the socket
        may be back in a keep-alive pool, serving another request."""
        with _lock:
            _guards.discard(self)

    def __enter__(self) -> "ReadGuard":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _fire(self) -> None:
        self.fired = True
        self._shut()

    def _shut(self) -> None:
        sock = self.sock
        if sock is None:
            return
        try:  # the plain socket's shutdown: ssl.SSLSocket's own would drop its state under a reading thread
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
        except (OSError, TypeError, ValueError):
            pass  # already closed


def _register(guard: ReadGuard) -> None:
    global _thread
    with _lock:
        _guards.add(guard)
        if _thread is None or not _thread.is_alive():  # not alive: first use, or a forked child
            _thread = threading.Thread(target=_watch, name="vllm_magics-read-deadlines", daemon=True)
            _thread.start()
        _lock.notify()


def _watch() -> None:
    while True:
        lock = _lock
        with lock:
            now = time.monotonic()
            due = [g for g in _guards if now - g.mark >= g.limit]
            _guards.difference_update(due)
            for g in due:  # under the lock, so that no close() slips in between choosing and firing
                g._fire()  # a shutdown(2): it does not block
            if not due:
                ends = [g.mark + g.limit for g in _guards]
                # progress() only moves an end later: waking early and looking again is harmless
                lock.wait(max(min(ends) - now, 0.01) if ends else None)
