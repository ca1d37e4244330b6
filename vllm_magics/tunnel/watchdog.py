"""A tiny process that stops the ngrok agent when the Python process that started it is gone.

    python -S -m vllm_magics.tunnel.watchdog PARENT_PID AGENT_PID AGENT_START_TIME

pyngrok stops its agent only from an atexit handler, which a SIGKILLed kernel (Colab's "Restart", the
out-of-memory killer) never runs; the agent would then keep the account's single free agent session busy
(ERR_NGROK_108) until the machine goes. The watchdog polls: while its parent is alive it waits; once it
is reparented (the parent died), it sends the agent SIGTERM, then SIGKILL if it is still there a
moment later. The agent's start time (field 22 of /proc/PID/stat) guards against a reused pid: a process
that merely has the agent's old pid is never signalled. Linux only (no /proc, no watchdog).

Imports only the standard library: it runs with `-S` (no site-packages).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable


def proc_start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (a string), or None when it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    fields = raw[raw.rfind(b")") + 2:].split()  # the command name, in parentheses, may hold spaces
    return None if fields[0] == b"Z" else fields[19].decode()


def watch(parent: int, pid: int, start: str, *, getppid: Callable[[], int] = os.getppid,
          started: Callable[[int], str | None] = proc_start_time, kill: Callable[[int, int], None] = os.kill,
          sleep: Callable[[float], None] = time.sleep, poll: float = 0.2, grace_polls: int = 40) -> str:
    """Wait while `parent` is our parent; then stop the agent `pid` if it is still the process that
    started at `start`. Returns what happened: "agent gone" (it ended first: nothing to do),
    "terminated", "killed" (it outlived SIGTERM for `grace_polls` short pauses)."""
    while getppid() == parent:
        if started(pid) != start:
            return "agent gone"
        sleep(poll)
    if started(pid) != start:
        return "agent gone"
    kill(pid, signal.SIGTERM)
    for _ in range(grace_polls):
        sleep(0.05)
        if started(pid) != start:
            return "terminated"
    kill(pid, signal.SIGKILL)
    return "killed"


def spawn(pid: int) -> subprocess.Popen | None:
    """Start a watchdog over the agent `pid` for this process; None when there is no /proc (not Linux)."""
    start = proc_start_time(pid)
    if start is None:
        return None
    # `-S`: no site-packages (only the standard library is needed), so the package's own folder is the
    # path, and the working folder too (the first entry `-m` puts on sys.path).
    root = str(Path(__file__).resolve().parents[2])
    return subprocess.Popen(
        [sys.executable, "-S", "-m", "vllm_magics.tunnel.watchdog", str(os.getpid()), str(pid), start],
        cwd=root, env={"PYTHONPATH": root}, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, close_fds=True, start_new_session=True)


def main(argv: list[str]) -> int:
    try:
        parent, pid, start = int(argv[0]), int(argv[1]), argv[2]
    except (IndexError, ValueError):
        print("usage: python -m vllm_magics.tunnel.watchdog PARENT_PID AGENT_PID AGENT_START_TIME",
              file=sys.stderr)
        return 2
    try:
        watch(parent, pid, start)
    except ProcessLookupError:  # it ended between the check and the signal
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
