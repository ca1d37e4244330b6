"""Reading the server's log while the supervisor writes (and rotates) it: follow new lines, read the tail.

Both read a bounded amount per call, whatever the log's size (it may reach the rotation limit, 20 MB).
"""
from __future__ import annotations

import os
from pathlib import Path

from vllm_magics.server.vllm_log import rotated_path


class LogFollower:
    """Reads the lines appended to a log since the last call (follows rotation to a new file)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.offset = 0
        self.partial = b""
        self.inode = None

    def skip_to_end(self) -> None:
        try:
            st = os.stat(self.path)
        except OSError:
            return
        self.inode, self.offset, self.partial = st.st_ino, st.st_size, b""

    def read_new_lines(self, max_bytes: int = 1_000_000) -> list[str]:
        try:
            st = os.stat(self.path)
        except OSError:
            return []
        if self.inode is not None and (st.st_ino != self.inode or st.st_size < self.offset):
            self.offset, self.partial = 0, b""  # rotated
        self.inode = st.st_ino
        if st.st_size <= self.offset:
            return []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read(max_bytes)
        self.offset += len(data)
        data = self.partial + data
        *complete, self.partial = data.split(b"\n")
        return [line.decode(errors="replace") for line in complete]


def tail_text(path: Path, max_bytes: int = 256_000) -> str:
    """About the last `max_bytes` of a log, reading its rotated predecessor too when the current one is short."""
    chunks = []
    for candidate in (rotated_path(path), Path(path)):
        try:
            with open(candidate, "rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - max_bytes))
                chunks.append(f.read())
        except OSError:
            continue
    data = b"".join(chunks)[-max_bytes:]
    return data.decode(errors="replace")


def tail_lines(path: Path, n: int = 20, max_bytes: int = 256_000) -> list[str]:
    """The last `n` non-blank lines of a log (0: all in the last `max_bytes`)."""
    # Progress bars redraw with \r: keep each line's last state, as a terminal would show it.
    lines = [line.rsplit("\r", 1)[-1] for line in tail_text(path, max_bytes).splitlines()]
    lines = [line for line in lines if line.strip()]
    return lines[-n:] if n else lines
