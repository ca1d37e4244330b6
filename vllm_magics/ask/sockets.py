"""Sockets of in-flight requests that another thread can cut.

Why: a request blocked waiting for a reply (`--no-stream`, or a stream before its first token) sits in
`recv` in a worker thread; closing its `requests.Session` does not touch connections in use, so
Ctrl-C would have to wait for the server. Shutting the socket down wakes the `recv` at once, and the
server sees the client go (vLLM then aborts the request). The sessions' connection classes record
each socket they open (`connect()` and `.sock` are http.client's public API).
"""
from __future__ import annotations

import socket
import threading
import weakref


class OpenSockets:
    def __init__(self):
        self._sockets: weakref.WeakSet = weakref.WeakSet()
        self._lock = threading.Lock()
        self._pools: dict = {}  # a session's pool class -> the same, recording its sockets

    def track(self, session) -> None:
        """Record every socket `session` (a requests.Session) opens from now on. The session's own pool
        classes are subclassed, not replaced: what the client does with its connections stays."""
        for adapter in dict.fromkeys(session.adapters.values()):
            manager = adapter.poolmanager
            manager.pool_classes_by_scheme = {scheme: self._tracked(cls)
                                              for scheme, cls in manager.pool_classes_by_scheme.items()}

    def _tracked(self, pool_cls):
        if pool_cls not in self._pools:
            owner = self

            class Connection(pool_cls.ConnectionCls):
                def connect(self):
                    super().connect()
                    owner._add(self.sock)

            self._pools[pool_cls] = type(pool_cls.__name__, (pool_cls,), {"ConnectionCls": Connection})
        return self._pools[pool_cls]

    def _add(self, sock) -> None:
        if sock is not None:
            with self._lock:
                self._sockets.add(sock)

    def shutdown_all(self) -> int:
        """Shut every recorded socket down (both ways); returns how many were open."""
        with self._lock:
            sockets = list(self._sockets)
        n = 0
        for sock in sockets:
            try:  # the plain socket's shutdown: ssl.SSLSocket's own clears its state (`_sslobj`) under
                socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the worker thread reading from it
                n += 1
            except (OSError, TypeError, ValueError):  # already closed
                pass
        return n
