"""Private files: folders only their owner can enter, JSON state written atomically with mode 0600
(server state holds an API key), and state read back without trusting it to parse."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path


def read_json(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def private_dir(path: Path) -> Path:
    """A folder for logs, keys and tokens. The folders it has to make are made 0700; a folder that is
    already there is used as it is (never chmodded: it may be a shared one the user chose), but only
    when it is a real folder owned by this user: a symlink, or a folder owned by someone else, could
    send our secrets where another user reads them. Raises PermissionError then (the message says why)."""
    path = Path(path)
    missing = []
    ancestor = path
    while not os.path.lexists(ancestor) and ancestor != ancestor.parent:
        missing.append(ancestor)
        ancestor = ancestor.parent
    made = []
    for folder in reversed(missing):
        try:
            os.mkdir(folder, 0o700)
        except FileExistsError:
            continue  # made by someone else meanwhile: checked below like any existing folder
        # mkdir's mode is filtered by the umask. Through a descriptor that refuses a symlink: the folder
        # could have been swapped for one since.
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            os.fchmod(fd, 0o700)
        finally:
            os.close(fd)
        made.append(folder)
    if path not in made:
        _check_own_folder(path)
    return path


def _check_own_folder(path: Path) -> None:
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise PermissionError(f"{path} is a symbolic link: vllm_magics keeps private files only in a real "
                              "folder (choose another path)")
    if not stat.S_ISDIR(st.st_mode):
        raise PermissionError(f"{path} is not a folder")
    if st.st_uid != os.getuid():
        raise PermissionError(f"{path} belongs to another user (uid {st.st_uid}): vllm_magics keeps private "
                              "files only in a folder of yours (choose another path)")


def open_private(path: Path, append: bool = False) -> int:
    """A descriptor on a file only its owner may read (mode 0600 from its creation on, whatever the umask
    lets open() give), refusing a symlink planted in its place: logs and state may hold what a key
    leaked into. An existing file keeps its content with `append`, and is made 0600 either way."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (os.O_APPEND if append else os.O_TRUNC)
    fd = os.open(path, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)
    except OSError:
        os.close(fd)
        raise
    return fd


def write_json_private(path: Path, data: dict) -> None:
    """Atomically write JSON readable only by the owner (it may hold an API key)."""
    path = Path(path)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    try:
        os.unlink(tmp)  # left by a crashed writer of the same pid, or planted: never written through
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)
