"""Supervisor: `python -m vllm_magics.server.supervisor --log F --state S [--watch-parent PID] -- CMD...`

Leads the server's process group (started with a new session) and
- copies CMD's stdout and stderr into a log file that stays bounded (rotated to F.1 past
  --max-log-bytes), instead of a pipe nobody reads (vLLM blocks once a pipe buffer is full);
- records CMD's pid and, at the end, its exit code in a JSON state file, so a notebook can tell
  "exited 0 after its engine died" from "running" even though CMD is not its child;
- with --watch-parent, stops the whole group when that process (the notebook's kernel) is gone,
  however it died (SIGKILL included): its parent changes as the kernel is gone;
- once CMD exits by itself, stops what it left in the group (vLLM's engine and resource tracker
  otherwise hold GB of memory, a GPU, or run for half an hour).
Standard library only, and no IPython: it must start fast and outlive the kernel.
"""
from __future__ import annotations

import argparse
import os
import selectors
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from vllm_magics.files import write_json_private
from vllm_magics.server.process import terminate_group

PARENT_POLL_S = 0.2
WATCHDOG_GRACE_S = 10.0


class BoundedLog:
    def __init__(self, path: Path, max_bytes: int):
        self.path, self.max_bytes = path, max_bytes
        self.f = open(path, "ab", buffering=0)

    def write(self, data: bytes) -> None:
        self.f.write(data)
        if self.max_bytes and self.f.tell() > self.max_bytes:
            self.f.close()
            os.replace(self.path, str(self.path) + ".1")
            self.f = open(self.path, "ab", buffering=0)

    def note(self, text: str) -> None:
        self.write(f"[vllm_magics] {text}\n".encode())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vllm_magics.server.supervisor")
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--state", type=Path, required=True)
    parser.add_argument("--max-log-bytes", type=int, default=50_000_000)
    parser.add_argument("--watch-parent", type=int, default=None)
    parser.add_argument("--cleanup", type=Path, default=None, help="a private temp folder to remove at the end")
    parser.add_argument("cmd", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    log = BoundedLog(args.log, args.max_log_bytes)
    pgid = os.getpgrp()
    stopping = threading.Event()

    def on_term(signum, frame):
        # The manager signals the whole group: CMD got the same signal and shuts down by itself.
        # Keep copying its last lines into the log until it has exited.
        stopping.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    signal.signal(signal.SIGHUP, on_term)

    state = {"supervisor_pid": os.getpid(), "pgid": pgid, "cmd0": cmd[0] if cmd else None,
             "started_at": time.time(), "pid": None, "exit_code": None}
    try:
        child = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    except OSError as exc:
        log.note(f"could not start {cmd[0] if cmd else '(nothing)'}: {exc}")
        state.update(exit_code=127, ended_at=time.time(), error=str(exc))
        write_json_private(args.state, state)
        return 127
    state["pid"] = child.pid
    write_json_private(args.state, state)

    if args.watch_parent:
        watched = args.watch_parent

        def watchdog():
            while child.poll() is None:
                if os.getppid() != watched:
                    log.note(f"the process that started this server ({watched}) is gone: stopping the server")
                    stopping.set()
                    terminate_group(pgid, leader=child.pid, grace=WATCHDOG_GRACE_S, exclude=(os.getpid(),))
                    return
                time.sleep(PARENT_POLL_S)

        threading.Thread(target=watchdog, daemon=True).start()

    def record_exit(code: int, log_complete: bool = False) -> None:
        state.setdefault("ended_at", time.time())  # the moment it exited, not when the log was done
        state.update(exit_code=code, stopped_by_request=stopping.is_set(), log_complete=log_complete)
        write_json_private(args.state, state)

    fd = child.stdout.fileno()
    os.set_blocking(fd, False)
    sel = selectors.DefaultSelector()
    sel.register(fd, selectors.EVENT_READ)
    exited_at = None
    while sel.get_map():
        for _key, _ in sel.select(timeout=0.2 if exited_at is None else 0.05):
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                continue
            if data:
                log.write(data)
            else:
                sel.unregister(fd)
        if exited_at is None and child.poll() is not None:
            exited_at = time.monotonic()
            record_exit(child.returncode)  # at once: the manager is waiting to say why
        # Children that inherited the pipe may keep it open: drain briefly, then stop reading.
        if exited_at is not None and time.monotonic() - exited_at > 0.3:
            break
    code = child.wait()
    log.note(f"server process {child.pid} exited with code {code}")
    record_exit(code, log_complete=True)  # the manager can read the whole story now
    # Whatever CMD left behind in the group (engine core, resource tracker) goes too.
    terminate_group(pgid, grace=3.0, exclude=(os.getpid(),))
    if args.cleanup is not None:
        shutil.rmtree(args.cleanup, ignore_errors=True)  # vLLM's leftover ZeroMQ socket files
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
