"""The library's exceptions. The magics turn them into one-line UsageErrors at the edge; scripts get
them as they are, with the details (exit code, log tail, diagnoses) as attributes."""
from __future__ import annotations


class VllmMagicsError(Exception):
    """Base class: a failure the user can act on; str() is the plain-language message."""


class ServerAlreadyRunning(VllmMagicsError):
    pass


class VllmNotInstalled(VllmMagicsError):
    pass


class ServerStartError(VllmMagicsError):
    """The server exited or never became ready. Its log stays on disk at `log_path`."""

    def __init__(self, message: str, *, exit_code=None, log_path=None, log_tail: str = "", diagnoses=()):
        super().__init__(message)
        self.exit_code = exit_code
        self.log_path = log_path
        self.log_tail = log_tail
        self.diagnoses = list(diagnoses)


class ServerTimeout(ServerStartError):
    pass
