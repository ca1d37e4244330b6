"""What every group of magics shares: argument parsing, the managed server, showing results.

Only IPython and traitlets are imported at module level (already loaded in any IPython), so
`%load_ext vllm_magics` stays instant; everything else is imported when a magic runs.
"""
from __future__ import annotations

import functools
import os

from IPython.core.error import UsageError
from IPython.core.magic import Magics, magics_class
from traitlets import Unicode


def _tokens(line: str) -> list[str]:
    """Shell-like words (quotes removed, as in a terminal): `--params '{"a": 1}'` is one word."""
    from IPython.utils.process import arg_split

    try:
        return arg_split(line, posix=True)
    except ValueError as exc:  # shlex: "No closing quotation"
        raise UsageError(f"{exc.args[0].lower()} in: {line}") from None


def _parse(magic_method, line: str):
    """Parse a magic's arguments with its @magic_arguments parser (errors become UsageError)."""
    return magic_method.parser.parse_args(_tokens(line))


def _split_passthrough(line: str) -> tuple[list[str], list[str]]:
    """`MODEL --port 1 -- --any vllm flag` -> (["MODEL", "--port", "1"], ["--any", "vllm", "flag"])."""
    tokens = _tokens(line)
    if "--" in tokens:
        i = tokens.index("--")
        return tokens[:i], tokens[i + 1:]
    return tokens, []


def at_the_edge(magic: str):
    """Run a magic so that whatever goes wrong reaches the notebook as one UsageError line with the
    session's secrets redacted: a raw traceback (with `%xmode Verbose`, its frames' local variables)
    could show an API key. The UsageError is raised outside the except block, so it chains no exception
    and no frame of the failed call. Put it right above `def`, below `@line_magic`/`@cell_magic`."""
    def decorate(func):
        @functools.wraps(func)
        def run(self, *args, **kwargs):
            from vllm_magics.errors import VllmMagicsError

            try:
                return func(self, *args, **kwargs)
            except UsageError as exc:  # already the one line the user should read
                failure = str(exc)
            except KeyboardInterrupt:
                failure = f"{magic} was interrupted"
            except VllmMagicsError as exc:
                failure = str(exc)
            except Exception as exc:  # noqa: BLE001 - the edge: nothing raw reaches the notebook
                failure = f"{magic} failed: {exc.__class__.__name__}: {exc}"
            raise UsageError(self._redact(failure))
        return run
    return decorate


@magics_class
class MagicsBase(Magics):
    """Shared settings and helpers; the magics live in the subclasses (serve, ask, status, tunnel)."""

    url = Unicode("", help="%%ask sends to this OpenAI-compatible server instead of the managed one, "
                  "e.g. http://127.0.0.1:8000/v1").tag(config=True)
    api_key_env = Unicode("", help="Environment variable holding the API key for `url`.").tag(config=True)
    runtime_dir = Unicode("", help="Where logs and server state live (default: $VLLM_MAGICS_HOME or "
                          "~/.cache/vllm_magics).").tag(config=True)

    def __init__(self, shell=None, **kwargs):
        super().__init__(shell=shell, **kwargs)
        # The session's state, shared by every group of magics (VllmMagics joins them in one instance).
        self.server = None  # vllm_magics.server.manager.VllmServer
        self.tunnels = None  # vllm_magics.tunnel.manager.TunnelManager, made by %ngrok_up
        self._conversations = None  # vllm_magics.ask Conversations, made on first %%ask
        self._vllm_urls: dict[str, bool] = {}  # base URL -> is it a vLLM server
        self._last_metrics: dict = {}  # base URL -> MetricsSnapshot (tokens/s needs two samples)

    # -- helpers -----------------------------------------------------------------------------
    def _target(self, args):
        """(base URL, API key, managed server or None) for a magic that talks to a server: `--url` (or
        %config url) with the key read from `--api-key-env`, else the managed server. The managed
        server's own URL keeps its key and its process information. A URL without a scheme is taken as
        http://; a key sent over plain http:// beyond this machine gets a one-line warning."""
        import ipaddress
        import sys
        from urllib.parse import urlsplit

        from vllm_magics.status.probes import BadURL, server_root

        key = None
        key_env = args.api_key_env or self.api_key_env
        if key_env:
            key = os.environ.get(key_env)
            if not key:
                raise UsageError(f"the environment variable {key_env} is not set (it should hold the API key)")
        url, server = args.url or self.url, self.server
        if url:
            try:
                root = server_root(url)
            except BadURL as exc:
                raise UsageError(f"--url: {exc} (e.g. http://127.0.0.1:8000/v1)") from None
        if url and (server is None or root != server.base_url):
            parts = urlsplit(root)
            host = (parts.hostname or "").lower()
            try:
                local = host == "localhost" or ipaddress.ip_address(host).is_loopback or host == "0.0.0.0"
            except ValueError:  # a host name other than localhost
                local = False
            warned = self.__dict__.setdefault("_plain_http_warned", set())
            if key and parts.scheme == "http" and not local and root not in warned:
                warned.add(root)
                print(f"Warning: the API key goes to {root} over plain http://, readable by anyone on the "
                      "way; use an https:// URL (e.g. the server's %ngrok_up URL).", file=sys.stderr, flush=True)
            return root, key, None
        if server is None:
            raise UsageError("no server: start one with %vllm_serve MODEL, or pass --url")
        return server.base_url, key or server.api_key, server

    def _redact(self, text: str) -> str:
        """`text` on one line, without the keys and tokens this session knows."""
        from vllm_magics.redact import SecretRedactor

        redactor = SecretRedactor()
        if self.server is not None:
            redactor.add(self.server.api_key)
        key_env = self.api_key_env
        if key_env:
            redactor.add(os.environ.get(key_env))
        text = redactor.redact(text)
        if self.tunnels is not None:
            text = self.tunnels.redact(text)
        return " ".join(text.split())

    def _runtime_dir(self):
        from vllm_magics.server.manager import default_runtime_dir

        return self.runtime_dir or default_runtime_dir()

    def _in_notebook(self) -> bool:
        # Terminal IPython and plain InteractiveShell print lines; kernels get live display updates.
        return self.shell is not None and getattr(self.shell, "kernel", None) is not None

    def _current(self):
        if self.server is not None and self.server.is_alive():
            return self.server
        return None

    def _show(self, obj):
        if self._in_notebook():
            from IPython.display import display

            display(obj)
        else:
            print(obj.text(), flush=True)


def served_model_name_or_default(server) -> str:
    if server is None:
        return "MODEL"
    from vllm_magics.server.plan import served_model_name

    return served_model_name(server.plan)
