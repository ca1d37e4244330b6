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
    """True when we could bind host:port now (what vLLM will try to do). A host that is not an address
    at all (it cannot even be encoded, or names nothing) raises ValueError: "taken" would mislead."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        # vLLM's uvicorn sets SO_REUSEADDR too: a port in TIME_WAIT is free for it.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except (TypeError, UnicodeError, socket.gaierror) as exc:
            raise ValueError(f"--host {host!r} is not an address this machine can listen on "
                             f"({exc.__class__.__name__}): use 127.0.0.1 (this machine) or 0.0.0.0 (all)") from None
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


def _socket_links(pid: int) -> set[str]:
    fd_dir = f"/proc/{pid}/fd"
    links = set()
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        return links
    for fd in fds:
        try:
            links.add(os.readlink(f"{fd_dir}/{fd}"))
        except OSError:
            continue
    return links


def port_listening(port: int) -> bool:
    """Something listens on `port` (any address)."""
    return bool(_listening_inodes(port))


def port_holders(port: int, known: tuple[int, ...] = ()) -> list[PortHolder]:
    """The processes listening on `port` (any address); [] when nothing listens. With `known` pids, only
    the listening sockets none of them holds are looked up ([] also when they hold them all), which
    spares reading every process's descriptors. A socket whose owner we may not inspect gives pid None."""
    wanted = {f"socket:[{i}]" for i in _listening_inodes(port)}
    if not wanted:
        return []
    for pid in known:
        wanted -= _socket_links(pid)
    found: list[PortHolder] = []
    seen: set[str] = set()
    if wanted:
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                held = _socket_links(int(entry.name)) & wanted
                if held:
                    seen |= held
                    found.append(PortHolder(int(entry.name), cmdline(int(entry.name))))
    if len(seen) < len(wanted):
        found.append(PortHolder(None, ""))
    return found


def port_holder(port: int) -> PortHolder | None:
    """The process listening on `port` (any address), or None when nothing listens."""
    holders = port_holders(port)
    return holders[0] if holders else None


def next_free_port(host: str, start: int, attempts: int = 50) -> int | None:
    for port in range(start, min(start + attempts, 65536)):
        if port_is_free(host, port):
            return port
    return None
