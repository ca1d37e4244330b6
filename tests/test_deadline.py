"""vllm_magics.status.deadline: a guard never fires once close() has returned (its socket may be back in
a keep-alive pool, serving the next request), and a fork while the watcher holds the lock leaves the
child working."""
from __future__ import annotations

import os
import signal
import socket
import threading
import time

from vllm_magics.status import deadline
from vllm_magics.status.deadline import ReadGuard


def test_a_guard_closed_while_the_watcher_fires_others_is_not_fired_after_close(monkeypatch):
    events: list[str] = []
    firing, release = threading.Event(), threading.Event()
    guards = [ReadGuard(3600.0) for _ in range(2)]
    pairs = [socket.socketpair() for _ in guards]
    try:
        for g, (a, _b) in zip(guards, pairs):
            g.attach(a)

        def hooked(g):
            def shut():
                events.append(f"shut {id(g)}")
                if not firing.is_set():  # the first one fired holds the watcher in its round
                    firing.set()
                    release.wait(30)
            return shut

        for g in guards:
            g._shut = hooked(g)
            g.limit = 0.0  # both due in the same round
        with deadline._lock:
            deadline._lock.notify()
        assert firing.wait(30)
        first = next(g for g in guards if events[0] == f"shut {id(g)}")
        other = next(g for g in guards if g is not first)

        def close_other():
            other.close()
            events.append("closed")

        closer = threading.Thread(target=close_other)
        closer.start()
        closer.join(0.3)
        blocked = closer.is_alive()  # the watcher is in its round: close() waits for it to finish
        release.set()
        closer.join(30)
        assert blocked, events
        # Whatever the round did to the other guard happened before close() returned, never after.
        assert events[-1] == "closed" and events.count(f"shut {id(other)}") <= 1
    finally:
        release.set()
        for g in guards:
            g.close()
        for a, b in pairs:
            a.close()
            b.close()


def test_a_fork_while_the_watcher_holds_the_lock_leaves_the_child_working():
    a, b = socket.socketpair()
    held, done = threading.Event(), threading.Event()

    def watcher_round():  # another thread holds the lock at the fork, as the watcher does in each round
        with deadline._lock:
            held.set()
            done.wait(30)

    holder = threading.Thread(target=watcher_round)
    holder.start()
    held.wait(30)
    child = os.fork()
    if child == 0:  # the child: guard a read, as a status probe would
        try:
            b.settimeout(30)
            with ReadGuard(0.05) as g:
                g.attach(b)
                got = b.recv(1)  # nothing is sent: the guard shuts the socket, the read sees its end
            os._exit(0 if (got == b"" and g.fired) else 1)
        except BaseException:  # noqa: BLE001 - any failure is the child's exit code
            os._exit(2)
    done.set()
    holder.join()
    for _ in range(600):  # a hang guard, not a timing bound: a deadlocked child never exits
        pid, status = os.waitpid(child, os.WNOHANG)
        if pid:
            break
        time.sleep(0.05)
    else:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
        raise AssertionError("the child hung on the lock it inherited held")
    a.close()
    b.close()
    assert os.waitstatus_to_exitcode(status) == 0
