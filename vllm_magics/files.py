"""Private files: folders only their owner can enter, JSON state written atomically with mode 0600
(server state holds an API key), and state read back without trusting it to parse."""
from __future__ import annotations

import json
import os
from pathlib import Path


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


def private_dir(path: Path) -> Path:
    """A folder only its owner can enter (it holds logs, keys, tokens); made if missing."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


def write_json_private(path: Path, data: dict) -> None:
    """Atomically write JSON readable only by the owner (it may hold an API key)."""
    path = Path(path)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)
