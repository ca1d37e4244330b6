"""Launching and signalling a process group: the mechanism under the server manager (no policy, no UI).

A server runs as a process group led by a small supervisor (`vllm_magics.server.supervisor`) so that:
- its output goes to a bounded log file, never to a pipe nobody reads (a full pipe blocks vLLM);
- its exit code is recorded in a state file even when the notebook that started it is gone;
- it dies with the notebook's kernel, even one killed with SIGKILL, unless detached.
Linux only: the group is listed from /proc (Colab and this project's CI are Linux).
"""
from __future__ import annotations

import enum
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from vllm_magics.files import open_private, read_json


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (which may hold spaces and parentheses)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return raw[raw.rfind(b")") + 2 :].decode().split()


def pid_alive(pid: int | None) -> bool:
    """Running (zombies count as gone: they hold no memory and only wait to be reaped)."""
    if not pid:
        return False
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def start_ticks(pid: int | None) -> int | None:
    """When the process started (clock ticks after boot): with the pid, an identity that survives pid reuse."""
    fields = _stat_fields(pid) if pid else None
    return int(fields[19]) if fields and len(fields) > 19 else None


def process_group(pid: int | None) -> int | None:
    fields = _stat_fields(pid) if pid else None
    return int(fields[2]) if fields else None


def group_members(pgid: int | None) -> list[int]:
    """Live (non-zombie) processes whose process group is `pgid`."""
    if not pgid:
        return []
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        # fields: state ppid pgrp ...
        if fields and fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return sorted(members)


def cmdline_args(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.rstrip(b"\0").split(b"\0")] if raw.strip(b"\0") else []


def cmdline(pid: int) -> str:
    return " ".join(cmdline_args(pid)).strip()


def signal_pids(pids, sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass  # already gone (or reused by someone else's process: not ours to signal)


class StopStep(enum.Enum):
    """How far a stop had to go; tests assert the path taken."""

    ALREADY_GONE = "already gone"
    TERMINATED = "stopped by SIGTERM"
    KILLED = "SIGKILL needed"
    FAILED = "processes survived SIGKILL"


def terminate_group(
    pgid: int,
    leader: int | None = None,
    grace: float = 10.0,
    kill_wait: float = 5.0,
    exclude: tuple[int, ...] = (),
    poll: float = 0.05,
) -> StopStep:
    """Stop every process in a group: SIGTERM, wait `grace` s for the leader (vLLM shuts its own
    children down), then SIGKILL whatever is left. vLLM's multiprocessing resource tracker ignores
    SIGTERM and outlives the rest, so "the leader exited" is not "the group is gone"."""

    def members():
        return [p for p in group_members(pgid) if p not in exclude]

    if not members():
        return StopStep.ALREADY_GONE
    signal_pids(members(), signal.SIGTERM)
    started = time.monotonic()
    while time.monotonic() < started + grace:
        if not members():
            return StopStep.TERMINATED
        # A second after the leader is gone, what remains are helpers that will not exit by themselves.
        if leader is not None and not pid_alive(leader) and time.monotonic() > started + 1.0:
            break
        time.sleep(poll)
    if not members():
        return StopStep.TERMINATED
    deadline = time.monotonic() + kill_wait
    while time.monotonic() < deadline:
        left = members()
        if not left:
            return StopStep.KILLED
        signal_pids(left, signal.SIGKILL)
        time.sleep(poll)
    return StopStep.KILLED if not members() else StopStep.FAILED


SUPERVISOR_MODULE = "vllm_magics.server.supervisor"


@dataclass
class SupervisedProcess:
    """A command running under the supervisor. `pgid` == the supervisor's pid.

    Pids in state files may be stale (the machine rebooted, the pid was reused): before reading a pid as
    ours or signalling its group, its identity is checked. The supervisor is ours when its start time is
    the one recorded at launch and its command line is our supervisor with our state file; the command
    is ours when it is in the supervisor's group with the start time the supervisor recorded."""

    popen: subprocess.Popen | None  # None when adopted from another kernel
    supervisor_pid: int
    state_path: Path
    log_path: Path
    supervisor_start: int | None = None  # start_ticks(supervisor_pid) at launch

    @property
    def pgid(self) -> int:
        return self.supervisor_pid

    def state(self) -> dict:
        return read_json(self.state_path)

    @property
    def pid(self) -> int | None:
        """The command's own pid (vLLM's API server), once the supervisor has started it."""
        pid = self.state().get("pid")
        return pid if isinstance(pid, int) else None

    def supervisor_is_ours(self) -> bool:
        if self.popen is not None:
            # Our child: its pid cannot be reused before we reap it (and between its fork and its exec,
            # its command line is still ours, not the supervisor's).
            return self.popen.poll() is None
        pid = self.supervisor_pid
        if not pid_alive(pid) or self.supervisor_start is None or start_ticks(pid) != self.supervisor_start:
            return False
        args = cmdline_args(pid)
        return (SUPERVISOR_MODULE in args and "--state" in args
                and args[args.index("--state") + 1:][:1] == [str(self.state_path)])

    def command_is_ours(self) -> bool:
        state = self.state()
        pid, started = state.get("pid"), state.get("pid_start")
        return (isinstance(pid, int) and started is not None and pid_alive(pid)
                and process_group(pid) == self.pgid and start_ticks(pid) == started)

    def exit_code(self) -> int | None:
        """The command's exit code once it has exited, else None."""
        code = self.state().get("exit_code")
        if code is not None:
            return code
        if self.popen is not None:
            rc = self.popen.poll()
            if rc is not None:  # the supervisor itself died before recording one
                return rc
        elif not self.supervisor_is_ours() and not self.command_is_ours():
            return -1
        return None

    def is_alive(self) -> bool:
        if self.pid is None:  # not started yet: alive while the supervisor is
            return self.exit_code() is None and self.supervisor_is_ours()
        return self.command_is_ours() and self.state().get("exit_code") is None

    def members(self) -> list[int]:
        return group_members(self.pgid) if self.supervisor_is_ours() or self.command_is_ours() else []

    def terminate(self, grace: float = 10.0, kill_wait: float = 5.0) -> StopStep:
        """Stop the group, if it is still ours: a group whose supervisor and command are both gone may
        now be someone else's (pids are reused), and is never signalled."""
        if self.supervisor_is_ours() or self.command_is_ours():
            step = terminate_group(self.pgid, leader=self.pid, grace=grace, kill_wait=kill_wait)
        else:
            step = StopStep.ALREADY_GONE
        if self.popen is not None:
            try:
                self.popen.wait(timeout=kill_wait)
            except subprocess.TimeoutExpired:
                pass
        return step


def launch_supervised(
    argv: list[str],
    *,
    env: dict[str, str],
    log_path: Path,
    state_path: Path,
    max_log_bytes: int,
    detach: bool = False,
    cwd: str | None = None,
    cleanup: Path | None = None,
) -> SupervisedProcess:
    """Start `argv` under the supervisor in a new session (its own process group)."""
    # Absolute: the state path on the supervisor's command line is part of its identity.
    log_path, state_path = Path(log_path).absolute(), Path(state_path).absolute()
    state_path.unlink(missing_ok=True)
    sup = [sys.executable, "-m", SUPERVISOR_MODULE, "--log", str(log_path), "--state", str(state_path),
           "--max-log-bytes", str(max_log_bytes)]
    if not detach:
        sup += ["--watch-parent", str(os.getpid())]
    if cleanup is not None:
        sup += ["--cleanup", str(cleanup)]
    # The supervisor's own early failures (before it opens the log) land in the same file.
    with os.fdopen(open_private(log_path, append=True), "ab") as early:
        popen = subprocess.Popen(
            sup + ["--"] + list(argv),
            stdin=subprocess.DEVNULL,
            stdout=early,
            stderr=early,
            env=env,
            cwd=cwd,
            start_new_session=True,
            close_fds=True,
        )
    # Our child until we reap it, so its pid cannot have been reused yet: its start time is its own.
    return SupervisedProcess(popen, popen.pid, state_path, log_path, start_ticks(popen.pid))
