"""The library's exceptions, all of them. Each carries facts (a message in plain words, and details as
attributes); the notebook layer turns them into one-line UsageErrors and adds the `%magic` to type next.
Scripts get them as they are.

    VllmMagicsError                  a failure the user can act on; str() says what happened
    ├── ServerAlreadyRunning         start() on a server that runs
    ├── VllmNotInstalled             no `vllm` command
    ├── ServerStartError             exited or never ready (exit_code, log_path, log_tail, diagnoses)
    │   └── ServerTimeout            not ready in time (left running)
    ├── NoServer                     nothing answers at the URL
    ├── ServerError                  the server answered with an error (status, body)
    │   └── BadReply                 not like an OpenAI-compatible server (not HTTP/JSON, wrong shape)
    │       └── TooSlow              no complete reply within the time limit
    ├── AskError                     a request failed (answer: what arrived before)
    ├── TemplateError                the cell is not a template that renders
    ├── SchemaError                  a schema we cannot use, or a reply that does not fit it
    ├── HistoryError                 the ask history database
    ├── BatchStoreError              a batch's JSONL answer file
    ├── BadURL (also ValueError)     a --url that is no http(s) URL
    ├── Unreachable                  %vllm_status: the server does not answer like one
    └── TunnelError                  ngrok (code: ERR_NGROK_*, detail: ngrok's own text, redacted)
        ├── NgrokTokenMissing        no token anywhere (denied: Colab secrets we may not read)
        ├── NgrokAuthError           ERR_NGROK_4018, 105, 107
        ├── NgrokSessionLimit        ERR_NGROK_108: another agent online with this account
        ├── NgrokNotInstalled        no agent binary, and it could not be downloaded
        ├── NgrokStartTimeout        the agent did not come up in time
        ├── AgentConfigUnwritable    the token file cannot be written safely (path)
        ├── InsecureShareRefused     a server without a key, without --insecure
        └── NotOnColab               Colab's proxy asked for outside Colab
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vllm_magics.ask.answer import Answer


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


class NoServer(VllmMagicsError):
    pass


class ServerError(VllmMagicsError):
    """The server answered with an error status; `status` and vLLM's own message are kept."""

    def __init__(self, message: str, status: int | None = None, body=None):
        super().__init__(message)
        self.status = status
        self.body = body


class BadReply(ServerError):
    """The server answered, but not as an OpenAI-compatible server does (not HTTP, not JSON, an event
    of the wrong shape, a line without end). str() is the whole explanation."""


class TooSlow(BadReply):
    """No complete reply (headers, a body, a stream's next line) within the time limit."""


class AskError(VllmMagicsError):
    """A request failed; `answer` keeps whatever arrived before the failure."""

    def __init__(self, message: str, answer: Answer | None = None):
        super().__init__(message)
        self.answer = answer


class TemplateError(VllmMagicsError):
    pass


class SchemaError(VllmMagicsError):
    """The schema itself cannot be used (not a pydantic model or dict, or a keyword we cannot check)."""


class HistoryError(VllmMagicsError):
    pass


class BatchStoreError(VllmMagicsError):
    pass


class BadURL(VllmMagicsError, ValueError):
    pass


class Unreachable(VllmMagicsError):
    pass


class TunnelError(VllmMagicsError):
    """A tunnel could not be opened or managed (the base of every error of vllm_magics.tunnel.manager, defined here
    so that a missing token is one too). `code` is ngrok's ERR_NGROK_* code when it gave one; `detail` is
    ngrok's own text, redacted."""

    def __init__(self, message: str, *, code: str | None = None, detail: str = ""):
        super().__init__(message)
        self.code = code
        self.detail = detail


class NgrokTokenMissing(TunnelError):
    """No authtoken anywhere. `denied` names Colab secrets that exist but this notebook may not read."""

    def __init__(self, message: str, denied: tuple[str, ...] = ()):
        super().__init__(message)
        self.denied = denied


class NgrokAuthError(TunnelError):
    """ERR_NGROK_4018 (no token or an invalid one), 105 (malformed), 107 (reset or revoked)."""


class NgrokSessionLimit(TunnelError):
    """ERR_NGROK_108: another agent session is online with this account."""


class NgrokNotInstalled(TunnelError):
    """The agent binary is missing and could not be downloaded."""


class NgrokStartTimeout(TunnelError):
    """The agent did not become ready in time (for instance a binary that prints nothing)."""


class AgentConfigUnwritable(TunnelError):
    """The agent config (it holds the token) cannot be written at `path`: a bad path, or a folder others
    may write to."""

    def __init__(self, message: str, *, path: str, detail: str = ""):
        super().__init__(message, detail=detail)
        self.path = path


class InsecureShareRefused(TunnelError):
    """The server has no API key and `insecure` was not given."""


class NotOnColab(TunnelError):
    """Colab's proxy was asked for outside Google Colab."""
