"""Supervisor: `python -m vllm_magics.server.supervisor --log F --state S [--watch-parent PID] -- CMD...`

Leads the server's process group (started with a new session) and
- copies CMD's stdout and stderr into a log file that stays bounded (rotated to F.1 past
  --max-log-bytes), instead of a pipe nobody reads (vLLM blocks once a pipe buffer is full);
- records CMD's pid and, at the end, its exit code in a JSON state file, so a notebook can tell
  "exited 0 after its engine died" from "running" even though CMD is not its child;
- survives a log it cannot write (a full disk): keeps draining CMD's output, drops it, and says so
  once in the state file (`log_write_error`);
- makes CMD die with it (Linux PR_SET_PDEATHSIG), so a supervisor killed with SIGKILL leaves no
  server running unsupervised;
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

from vllm_magics.files import open_private, write_json_private
from vllm_magics.server.process import start_ticks, terminate_group
from vllm_magics.server.vllm_log import rotated_path

PARENT_POLL_S = 0.2
PR_SET_PDEATHSIG = 1  # linux/prctl.h
WATCHDOG_GRACE_S = 10.0


class StateFile:
    """The state file, saved from the main thread and from the watchdog thread (its log notes can report
    a failed write): one lock, so the two never write the same temporary file at once, and a copy
    dumped, since json.dump iterates the dict while the other thread could be changing it."""

    def __init__(self, path: Path, state: dict):
        self.path, self._state = path, dict(state)
        self._lock = threading.Lock()

    def save(self, defaults: dict | None = None, **changes) -> None:
        """Set `changes` (and `defaults` where not set yet), then write the file."""
        with self._lock:
            for k, v in (defaults or {}).items():
                self._state.setdefault(k, v)
            self._state.update(changes)
            snapshot = dict(self._state)
            try:
                write_json_private(self.path, snapshot)
            except OSError:
                pass  # a full disk: the next save may succeed; the manager also watches the pids


class BoundedLog:
    """The log file, kept under `max_bytes` by rotation. A failed write (a full disk, a file size limit)
    drops that output instead of stopping the supervisor: the pipe must keep being drained, or vLLM
    blocks, and the exit code must still be recorded. `on_first_drop` is told once."""

    def __init__(self, path: Path, max_bytes: int, on_first_drop=None):
        self.path, self.max_bytes = path, max_bytes
        self.on_first_drop = on_first_drop
        self.dropped = 0  # bytes lost to write errors
        self.failed = False
        self.f = None
        self._guard(self._open)

    def _open(self) -> None:
        self.f = os.fdopen(open_private(self.path, append=True), "ab", buffering=0)

    def _guard(self, action) -> bool:
        try:
            action()
            return True
        except OSError as exc:
            if not self.failed and self.on_first_drop is not None:
                self.on_first_drop(exc)
            self.failed = True
            return False

    def write(self, data: bytes) -> None:
        if self.f is None and not self._guard(self._open):
            self.dropped += len(data) or 1
            return
        if not self._guard(lambda: self.f.write(data)):
            self.dropped += len(data) or 1
            return
        if self.max_bytes and self.f.tell() > self.max_bytes:
            self.f.close()
            self.f = None
            self._guard(lambda: os.replace(self.path, rotated_path(self.path)))
            self._guard(self._open)

    def note(self, text: str) -> None:
        self.write(f"[vllm_magics] {text}\n".encode())


def _die_with_parent(parent: int):
    """preexec_fn for the command: the kernel sends it SIGTERM when the supervisor dies, even by SIGKILL
    (Linux prctl PR_SET_PDEATHSIG), so vLLM never runs on unsupervised; it then stops its own children
    as on any SIGTERM. Where there is no prctl, nothing is set."""
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork
    except (OSError, AttributeError):
        return None

    def preexec():
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the supervisor died before prctl took effect
            os._exit(1)
    return preexec


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
    pgid = os.getpgrp()
    stopping = threading.Event()
    state = StateFile(args.state, {"supervisor_pid": os.getpid(), "pgid": pgid, "cmd0": cmd[0] if cmd else None,
                                   "started_at": time.time(), "pid": None, "exit_code": None})

    def on_first_drop(exc: OSError) -> None:
        state.save(log_write_error=f"{exc.__class__.__name__}: {exc.strerror or exc}")

    # Past a file size limit (RLIMIT_FSIZE) a write raises EFBIG instead of this signal killing us.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    log = BoundedLog(args.log, args.max_log_bytes, on_first_drop)

    def on_term(signum, frame):
        # The manager signals the whole group: CMD got the same signal and shuts down by itself.
        # Keep copying its last lines into the log until it has exited.
        stopping.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    signal.signal(signal.SIGHUP, on_term)

    try:
        child = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 preexec_fn=_die_with_parent(os.getpid()))
    except (OSError, subprocess.SubprocessError) as exc:
        log.note(f"could not start {cmd[0] if cmd else '(nothing)'}: {exc}")
        state.save(exit_code=127, ended_at=time.time(), error=str(exc))
        return 127
    state.save(pid=child.pid, pid_start=start_ticks(child.pid))

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
        dropped = {"log_dropped_bytes": log.dropped} if log.dropped else {}
        state.save({"ended_at": time.time()},  # the moment it exited, not when the log was done
                   exit_code=code, stopped_by_request=stopping.is_set(), log_complete=log_complete, **dropped)

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
