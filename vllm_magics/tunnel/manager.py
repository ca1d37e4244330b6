"""Sharing a local server through an ngrok tunnel: the decisions (no pyngrok, no IPython, no display).

    from vllm_magics.tunnel.token import find_token
    from vllm_magics.tunnel.manager import TunnelManager

    token, source = find_token(interactive=True)       # token: a Secret (its repr is masked)
    tunnels = TunnelManager()
    t = tunnels.open(8000, api_key=server.api_key, authtoken=token, token_source=source)
    t.public_url, t.openai_base_url            # https://....ngrok-free.app, .../v1
    tunnels.close(t.public_url); tunnels.stop()

The agent itself is driven by tunnel/agent.py (the only code that touches pyngrok); a manager takes any
object with that interface (`agent=`), which is how its decisions are tested in-process.

Safe by default:
- The authtoken never goes on a command line (where `ps` shows it to every user): it is written into the
  agent's own config file (mode 0600, in a private folder), passed as `--config`. It is held as a Secret
  (masked repr), so a traceback that shows local variables does not show it.
- Request inspection is off: every endpoint is created with `"inspect": false` and the agent's
  inspection store is disabled (`inspect_db_size: -1`). Otherwise the agent keeps each request,
  Authorization header included, readable by anyone on the machine at 127.0.0.1:4040/api/requests/http.
- The token (and a basic-auth password) is redacted from every log record of the `pyngrok` loggers
  (pyngrok forwards each line the agent prints, and ngrok's ERR_NGROK_105 echoes the whole token) and
  from every exception message raised here.
- A server without an API key is not exposed unless `insecure=True`.
- The agent dies with this Python process: `stop()` runs at exit, and a watchdog process
  (tunnel/watchdog.py) stops it if this process is killed.
"""
from __future__ import annotations

import atexit
import json
import os
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from vllm_magics.redact import Secret, SecretRedactor, mask_secret
from vllm_magics.tunnel.agent import PYNGROK_LOGGERS, AgentFailure
from vllm_magics.tunnel.errors import (
    AgentConfigUnwritable, InsecureShareRefused, NgrokAuthError, NgrokNotInstalled, NgrokSessionLimit,
    NgrokStartTimeout, translate,
)
from vllm_magics.tunnel.token import NgrokTokenMissing, TunnelError, find_token

__all__ = [
    "Tunnel", "TunnelManager", "TunnelError", "AgentConfigUnwritable", "NgrokAuthError", "NgrokSessionLimit",
    "NgrokNotInstalled", "NgrokStartTimeout", "InsecureShareRefused", "NgrokTokenMissing", "health_through",
    "SKIP_WARNING_HEADER",
]

DOWNLOAD_URL = "https://ngrok.com/download"
SKIP_WARNING_HEADER = ("ngrok-skip-browser-warning", "1")
# The agent config the manager asks for (besides the token): no inspection store (requests and their
# headers are never kept), no update check, no console UI, info-level logfmt lines (what pyngrok parses).
AGENT_SETTINGS = {"inspect_db_size": -1, "update_check": False, "console_ui": False, "log_level": "info",
                  "log_format": "logfmt"}


# -- tunnels --------------------------------------------------------------------------------------------
@dataclass
class Tunnel:
    """An open tunnel. `public_url` has no trailing slash."""

    public_url: str
    name: str
    port: int
    basic_auth: bool = False
    created_at: float = field(default_factory=time.time)
    upstream: str = ""

    @property
    def openai_base_url(self) -> str:
        return self.public_url.rstrip("/") + "/v1"

    def age(self) -> float:
        return time.time() - self.created_at


def basic_auth_credential(basic_auth) -> tuple[str, str] | None:
    """(user, password) from "user:password" or a pair, checked against ngrok's rules; None for None."""
    if basic_auth is None:
        return None
    if isinstance(basic_auth, str):
        user, sep, password = basic_auth.partition(":")
        if not sep:
            raise TunnelError("basic auth is given as 'user:password' or a (user, password) pair")
    else:
        user, password = basic_auth
    if not user or ":" in user:
        raise TunnelError("the basic-auth user name must be non-empty and have no ':'")
    if not 8 <= len(password) <= 128:
        raise TunnelError("ngrok wants a basic-auth password of 8 to 128 characters")
    return user, password


def default_ngrok_dir() -> Path:
    from vllm_magics.server.manager import default_runtime_dir

    return default_runtime_dir() / "ngrok"


class TunnelManager:
    """One ngrok agent (started on first use) and the tunnels this object opened through it.

    `ngrok_path`: the agent binary (default: $PYNGROK_NGROK_PATH, else pyngrok's default path, where it
    downloads the binary when missing). `config_path`: the agent config this manager writes (default
    <runtime dir>/ngrok/agent.yml). `startup_timeout`: seconds the agent may take to come up, enforced
    here even when the agent prints nothing (pyngrok's own timeout is checked only between lines).
    `agent`: an object with tunnel/agent.py's PyngrokAgent interface (default: a PyngrokAgent).
    """

    def __init__(self, *, ngrok_path: str | os.PathLike | None = None,
                 config_path: str | os.PathLike | None = None, startup_timeout: float = 20.0,
                 download_timeout: float = 6.0, request_timeout: float = 4.0, web_addr: str | None = None,
                 watchdog: bool = True, region: str | None = None, agent=None):
        self._redactor = SecretRedactor()
        if agent is None:
            from vllm_magics.tunnel.agent import PyngrokAgent

            agent = PyngrokAgent(ngrok_path, Path(config_path) if config_path else default_ngrok_dir() / "agent.yml",
                                 startup_timeout=startup_timeout, request_timeout=request_timeout, region=region,
                                 redact=self._redactor.redact)
        self.agent = agent
        self.startup_timeout = float(startup_timeout)
        self.download_timeout = float(download_timeout)
        self.web_addr = web_addr
        self.use_watchdog = watchdog
        self._tunnels: dict[str, Tunnel] = {}
        self._lock = threading.RLock()
        self._watchdog: subprocess.Popen | None = None
        self._atexit_registered = False
        self._owner_pid: int | None = None  # the process that started the agent: the only one to stop it
        self.token_source: str | None = None
        self._token_masked: str | None = None

    # -- state ----------------------------------------------------------------------------------------
    @property
    def ngrok_path(self) -> str:
        return self.agent.path

    @property
    def config_path(self) -> Path:
        return self.agent.config_path

    @property
    def region(self) -> str | None:
        return self.agent.region

    @property
    def agent_pid(self) -> int | None:
        return self.agent.pid

    def is_running(self) -> bool:
        return self.agent.running()

    @property
    def api_url(self) -> str | None:
        return self.agent.api_url

    def redact(self, text) -> str:
        return self._redactor.redact(text)

    # -- agent ----------------------------------------------------------------------------------------
    def start(self, authtoken: Secret | str | None = None, token_source: str | None = None) -> None:
        """Start the agent if it is not running. Without `authtoken`, find_token(interactive=False)."""
        with self._lock:
            if self.is_running():
                return
            self._redactor.install(PYNGROK_LOGGERS)
            if self.agent.adopt_running():
                # pyngrok runs one agent per binary: this kernel already has one (an earlier manager, or the
                # user's own pyngrok calls). Use it; leave it running.
                return
            if not authtoken:
                authtoken, token_source = find_token(interactive=False)
            token = authtoken if isinstance(authtoken, Secret) else Secret(authtoken)
            del authtoken  # only the Secret stays in this frame
            self.token_source = token_source
            self._token_masked = mask_secret(token.reveal())
            self._redactor.add(token)
            self._install_binary()
            settings = dict(AGENT_SETTINGS, **({"web_addr": self.web_addr} if self.web_addr else {}))
            failure = None
            try:
                self.agent.write_config(token, settings)
            except OSError as exc:
                failure = AgentConfigUnwritable(
                    f"The ngrok agent config cannot be written at {self.config_path}: "
                    f"{self.redact(exc.strerror or exc)}. It holds the token: choose a path in a folder only you "
                    "can write to.", path=str(self.config_path), detail=self.redact(exc))
            if failure is not None:
                raise failure
            self._start_agent()
            self._owner_pid = os.getpid()
            if not self._atexit_registered:
                atexit.register(self.stop)
                self._atexit_registered = True

    def _install_binary(self) -> None:
        failure = None
        try:
            self.agent.install(self.download_timeout)
        except AgentFailure as exc:
            failure = exc
        if failure is None:
            return
        if failure.kind == "unsupported":
            raise NgrokNotInstalled(f"The ngrok agent is not at {self.ngrok_path} and pyngrok cannot install it: "
                                    f"{failure.text}", detail=failure.text)
        raise NgrokNotInstalled(
            f"The ngrok agent is not at {self.ngrok_path} and could not be downloaded: this machine cannot "
            f"reach ngrok's download site ({failure.text}). Install it yourself: download the Linux build from "
            f"{DOWNLOAD_URL} on a machine that can, copy the `ngrok` file here, make it executable "
            "(chmod +x), and pass its path as ngrok_path (or set PYNGROK_NGROK_PATH). Colab's own proxy "
            "needs no download.", detail=failure.text)

    def _start_agent(self) -> None:
        """Start, with our own deadline; a watchdog as soon as the agent process exists."""
        starting = self.agent.begin_start()
        began = time.monotonic()
        done = False
        try:
            # The limit is read at each pass: another thread may change it while the agent starts.
            while not done and time.monotonic() < began + self.startup_timeout:
                pid = starting.spawned_pid()
                if pid is not None:
                    self._spawn_watchdog(pid)
                done = starting.wait(0.02)
        except BaseException:  # Ctrl-C while waiting: leave no agent behind
            starting.abort()
            self._stop_watchdog()
            raise
        if not done:
            error, said = starting.last_words()
            starting.abort()
            self._stop_watchdog()
            if error or said:
                what = f"its last error: {error}" if error else f"its last lines: {said}"
                raise NgrokStartTimeout(
                    f"The ngrok agent was not ready after {self.startup_timeout:.0f} s and was stopped ({what}). "
                    "This machine may not reach ngrok's servers.", detail=error or said)
            raise NgrokStartTimeout(
                f"The ngrok agent ({self.ngrok_path}) was not ready after {self.startup_timeout:.0f} s "
                "(it printed nothing) and was stopped. Check that it is an ngrok v3 agent "
                f"(`{self.ngrok_path} --version`) and that this machine can reach ngrok's servers, then try "
                "again.")
        failure = None
        try:
            starting.finish()
        except AgentFailure as exc:
            failure = self._translate(exc)
        if failure is not None:
            self._stop_watchdog()
            raise failure  # outside the except block: nothing chained
        if self.agent.pid is not None:
            self._spawn_watchdog(self.agent.pid)

    def _spawn_watchdog(self, pid: int) -> None:
        from vllm_magics.tunnel import watchdog

        if self.use_watchdog and self._watchdog is None:
            self._watchdog = watchdog.spawn(pid)

    def _stop_watchdog(self) -> None:
        w, self._watchdog = self._watchdog, None
        if w is not None and w.poll() is None:
            w.terminate()
            try:
                w.wait(2.0)
            except subprocess.TimeoutExpired:
                w.kill()
                w.wait()

    def stop(self) -> None:
        """Close this manager's tunnels and stop the agent it started (an agent it found running is left
        alone). Safe to call twice; runs at exit. A no-op in a forked child: atexit handlers carry over
        os.fork, and a child that exits must leave its parent's agent be (the lock may be held there too)."""
        if self._owner_pid is not None and os.getpid() != self._owner_pid:
            return
        with self._lock:
            if self.is_running():
                self.close_all()
            self.agent.stop()
            self._tunnels.clear()
            self._stop_watchdog()
            self._redactor.uninstall()
            if self._atexit_registered:
                atexit.unregister(self.stop)
                self._atexit_registered = False

    # -- tunnels --------------------------------------------------------------------------------------
    def open(self, port: int, *, api_key: str | None, insecure: bool = False,
             authtoken: Secret | str | None = None, token_source: str | None = None, basic_auth=None,
             host: str = "127.0.0.1", name: str | None = None, domain: str | None = None) -> Tunnel:
        """Open a public HTTPS endpoint to http://host:port. `api_key` is the server's key (None: it has
        none, refused unless `insecure`). `basic_auth`: (user, password) or "user:password", enforced by
        ngrok (browsers only: ngrok's basic auth and the OpenAI clients share the Authorization header)."""
        port = int(port)
        if not api_key and not insecure:
            raise InsecureShareRefused(
                f"The server on port {port} has no API key: anyone with the link could use it (and your GPU). "
                "Restart it with an API key, or pass insecure=True to share it anyway.")
        cred = basic_auth_credential(basic_auth)
        options: dict = {"inspect": False}
        if domain:  # a reserved or custom domain: the endpoint's `url`
            options["url"] = domain if "://" in domain else f"https://{domain}"
        if cred is not None:
            self._redactor.add(cred[1])
            policy = {"on_http_request": [{"actions": [
                {"type": "basic-auth", "config": {"credentials": [f"{cred[0]}:{cred[1]}"]}}]}]}
            options["traffic_policy"] = json.dumps(policy)  # JSON is YAML, which the agent expects
        self.start(authtoken, token_source)
        name = name or f"vllm-magics-{port}-{uuid.uuid4().hex[:8]}"
        upstream = f"http://{host}:{port}"
        failure = None
        with self._lock:
            try:
                public_url = self.agent.connect(name, upstream, options)
            except AgentFailure as exc:
                failure = self._translate(exc, opening=True)
            if failure is not None:
                raise failure
            tunnel = Tunnel(public_url=public_url, name=name, port=port, basic_auth=cred is not None,
                            upstream=upstream)
            self._tunnels[tunnel.public_url] = tunnel
            return tunnel

    def _translate(self, failure: AgentFailure, opening: bool = False) -> TunnelError:
        return translate(failure, redact=self.redact, token_source=self.token_source,
                         token_masked=self._token_masked, opening=opening)

    def list(self) -> list[Tunnel]:
        """The tunnels this manager opened that are still open (none once the agent is gone)."""
        with self._lock:
            if self._tunnels and not self.is_running():
                self._tunnels.clear()
            return list(self._tunnels.values())

    def _find(self, url_or_name: str) -> Tunnel | None:
        key = str(url_or_name).rstrip("/")
        for t in self._tunnels.values():
            if key in (t.public_url, t.name, t.openai_base_url):
                return t
        return None

    def close(self, url_or_name: str) -> bool:
        """Close one tunnel (by public URL, /v1 URL or name). False when this manager has no such tunnel."""
        with self._lock:
            t = self._find(url_or_name)
            if t is None:
                return False
            failure = None
            if self.is_running():
                try:
                    self.agent.disconnect(t.public_url)
                except AgentFailure as exc:
                    if exc.status != 404:  # 404: the agent had already closed it
                        failure = self._translate(exc)
            self._tunnels.pop(t.public_url, None)
            if failure is not None:
                raise failure
            return True

    def close_all(self) -> int:
        """Close every tunnel of this manager; the agent keeps running. Returns how many were closed."""
        with self._lock:
            return sum(1 for t in list(self._tunnels.values()) if self.close(t.public_url))

def health_through(public_url: str, timeout: float = 10.0, *, basic_auth=None) -> int | None:
    """HTTP status of GET <public_url>/health through the tunnel, or None when nothing answers.

    Sends `ngrok-skip-browser-warning: 1`: on free ngrok accounts a request that looks like it comes
    from a browser gets ngrok's "You are about to visit..." warning page (ERR_NGROK_6024, status 200)
    instead of the server's answer. API clients (curl, the openai package, requests) are not shown that
    page; browsers are, until the visitor clicks through, and any request that carries this header (any
    value) skips it."""
    from vllm_magics.status.probes import health_status

    headers = {SKIP_WARNING_HEADER[0]: SKIP_WARNING_HEADER[1], "User-Agent": "vllm_magics"}
    cred = basic_auth_credential(basic_auth)
    if cred is not None:
        import base64

        headers["Authorization"] = "Basic " + base64.b64encode(f"{cred[0]}:{cred[1]}".encode()).decode()
    return health_status(public_url.rstrip("/"), timeout, headers=headers)
