"""Is a TCP port free, and if not, which process listens on it (Linux /proc, no extra packages)."""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from vllm_magics.server.process import cmdline

_LISTEN = "0A"


@dataclass(frozen=True)
class PortHolder:
    pid: int | None  # None when the socket belongs to a process we may not inspect
    command: str

    def describe(self) -> str:
        if self.pid is None:
            return "another process (not visible to this user)"
        return f"pid {self.pid} ({self.command[:120] or '?'})"


def port_is_free(host: str, port: int) -> bool:
    """True when we could bind host:port now (what vLLM will try to do)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        # vLLM's uvicorn sets SO_REUSEADDR too: a port in TIME_WAIT is free for it.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    local, state, inode = parts[1], parts[3], parts[9]
                    if state == _LISTEN and int(local.rsplit(":", 1)[1], 16) == port:
                        inodes.add(inode)
        except (OSError, StopIteration):
            continue
    return inodes


def port_holder(port: int) -> PortHolder | None:
    """The process listening on `port` (any address), or None when nothing listens."""
    inodes = _listening_inodes(port)
    if not inodes:
        return None
    wanted = {f"socket:[{i}]" for i in inodes}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fd_dir = f"/proc/{entry.name}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"{fd_dir}/{fd}") in wanted:
                    pid = int(entry.name)
                    return PortHolder(pid, cmdline(pid))
            except OSError:
                continue
    return PortHolder(None, "")


def next_free_port(host: str, start: int, attempts: int = 50) -> int | None:
    for port in range(start, min(start + attempts, 65536)):
        if port_is_free(host, port):
            return port
    return None
