"""What every group of magics shares: argument parsing, the managed server, showing results.

Only IPython and traitlets are imported at module level (already loaded in any IPython), so
`%load_ext vllm_magics` stays instant; everything else is imported when a magic runs.
"""
from __future__ import annotations

import functools
import os
import re

from IPython.core.error import UsageError
from IPython.core.magic import Magics, magics_class
from traitlets import Unicode

DEFAULT_NAME = "default"  # the name of a server started without --name
_SERVER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,31}")  # fullmatch: `$` would pass a trailing newline


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
        # The managed servers by name (%vllm_serve --name), the default one first: see `server`.
        self.servers: dict = {}  # name -> vllm_magics.server.manager.VllmServer
        self.tunnels = None  # vllm_magics.tunnel.manager.TunnelManager, made by %ngrok_up
        self._conversations = None  # vllm_magics.ask Conversations, made on first %%ask
        self._vllm_urls: dict[str, bool] = {}  # base URL -> is it a vLLM server
        self._last_metrics: dict = {}  # base URL -> MetricsSnapshot (tokens/s needs two samples)

    # -- the managed servers ---------------------------------------------------------------
    @property
    def server(self):
        """The server a magic without a name means: the first running one in `servers`, else the first
        (a stopped one, whose log and exit code stay readable), else None."""
        return self._default_entry()[1]

    @server.setter
    def server(self, value) -> None:
        name = self._default_entry()[0]
        if value is None:
            self.servers.pop(name, None)
        else:
            self.servers[name] = value

    def _default_entry(self) -> tuple:
        """(name, server) of `server`; (DEFAULT_NAME, None) when there is none."""
        for name, server in self.servers.items():
            if server.is_alive():
                return name, server
        return next(iter(self.servers.items()), (DEFAULT_NAME, None))

    def _check_name(self, name: str) -> str:
        if not _SERVER_NAME.fullmatch(name or ""):
            raise UsageError(f"--name {name!r}: a server name is a simple identifier (letters, digits, '_' or '-', "
                             "starting with a letter or '_'; at most 32), e.g. --name r1")
        return name

    def _server_named(self, name: str):
        """The server called `name`, or a UsageError that lists the servers there are."""
        if name in self.servers:
            return self.servers[name]
        known = ", ".join(self.servers) if self.servers else "none yet (%vllm_serve MODEL --name NAME starts one)"
        raise UsageError(f"no server named {name!r}; this kernel's servers: {known}")

    def _resolve_model(self, name: str):
        """(server, the model field to send) for `--model NAME`: NAME is a server's name, its served model
        name (or model argument) or one of its LoRA adapters. (None, NAME) when no managed server has it."""
        from vllm_magics.server.plan import adapter_names, served_model_name

        if name in self.servers:
            server = self.servers[name]
            return server, served_model_name(server.plan)
        hits = []
        for server_name, server in self.servers.items():
            served = served_model_name(server.plan)
            if name in (served, server.plan.model):
                hits.append((server_name, server, served))
            elif name in adapter_names(server.plan):
                hits.append((server_name, server, name))
        if len(hits) > 1:  # a stopped server does not compete with a running one
            hits = [h for h in hits if h[1].is_alive()] or hits
        if len(hits) > 1:
            raise UsageError(f"--model {name} is served by {len(hits)} servers ({', '.join(h[0] for h in hits)}): "
                             f"give the server's name instead, e.g. --model {hits[0][0]}")
        return (hits[0][1], hits[0][2]) if hits else (None, name)

    def _running_servers(self) -> dict:
        return {name: s for name, s in self.servers.items() if s.is_alive()}

    # -- helpers -----------------------------------------------------------------------------
    def _target(self, args):
        """(base URL, API key, managed server or None) for a magic that talks to a server: `--url` (or
        %config url) with the key read from `--api-key-env`, else the managed server. The managed
        server's own URL keeps its key and its process information. A URL without a scheme is taken as
        http://; a key sent over plain http:// beyond this machine gets a one-line warning.

        With several managed servers, `--model NAME` picks the server that has NAME (a server name, served
        model or LoRA adapter) and `args.model` becomes the name that server knows the model by."""
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
            same = [s for s in self.servers.values() if s.base_url == root]  # a running one before a stopped one
            server = next((s for s in same if s.is_alive()), same[0] if same else server)
        elif getattr(args, "model", None) and self.servers:
            found, model = self._resolve_model(args.model)
            if found is not None:
                server, args.model = found, model
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

    def _close_tunnels_to(self, port: int) -> None:
        """Close the tunnels to `port` (its server is stopping): the next server on that port, perhaps one
        without a key, must not become public through them."""
        for tunnel in (self.tunnels.list() if self.tunnels is not None else []):
            if tunnel.port != port:
                continue
            try:
                self.tunnels.close(tunnel.public_url)
            except Exception as exc:  # noqa: BLE001 - the server is stopped already: say what is still open
                print(self._redact(f"Warning: the tunnel {tunnel.public_url} to port {port} could not be closed "
                                   f"({exc.__class__.__name__}: {exc}); %ngrok_down --all closes every tunnel."))
            else:
                print(f"Closed the tunnel {tunnel.public_url} to port {port}.")

    def _redact(self, text: str) -> str:
        """`text` on one line, without the keys and tokens this session knows."""
        from vllm_magics.redact import SecretRedactor

        redactor = SecretRedactor()
        for server in self.servers.values():
            redactor.add(server.api_key)
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
