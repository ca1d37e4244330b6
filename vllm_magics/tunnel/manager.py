"""Sharing a local server: an ngrok tunnel through pyngrok, or Colab's own proxy (no IPython, no display).

    from vllm_magics.tunnel.token import find_authtoken
    from vllm_magics.tunnel.manager import TunnelManager, tunnel_card

    token, source = find_authtoken(interactive=True)
    tunnels = TunnelManager()
    t = tunnels.open(8000, api_key=server.api_key, authtoken=token, token_source=source)
    t.public_url, t.openai_base_url            # https://....ngrok-free.app, .../v1
    tunnels.close(t.public_url); tunnels.stop()

Safe by default:
- The authtoken never goes on a command line (where `ps` shows it to every user). pyngrok passes
  `--authtoken TOKEN` when `PyngrokConfig.auth_token` is set, and fills that from $NGROK_AUTHTOKEN by
  itself: the manager clears it and writes the token into its own agent config file instead (mode 0600
  in a 0700 folder), passed as `--config`.
- Request inspection is off: every endpoint is created with `"inspect": false` and the agent's
  inspection store is disabled (`agent.inspect_db_size: -1`). Otherwise the agent keeps each request,
  Authorization header included, readable by anyone on the machine at 127.0.0.1:4040/api/requests/http.
- The token (and a basic-auth password) is redacted from every log record of the `pyngrok` loggers
  (pyngrok forwards each line the agent prints to `pyngrok.process.ngrok`, and ngrok's ERR_NGROK_105
  echoes the whole token) and from every exception message this module raises.
- A server without an API key is not exposed unless `insecure=True`.
- The agent dies with this Python process: `stop()` runs at exit, and a small watchdog process stops the
  agent if this process is killed (pyngrok only registers a SIGTERM at exit, which a SIGKILLed kernel never
  runs, and the agent would keep the account's single free agent session busy: ERR_NGROK_108).
"""
from __future__ import annotations

import atexit
import json
import math
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from vllm_magics.tunnel.token import DASHBOARD_TOKEN_URL, NgrokTokenMissing, TunnelError, find_authtoken
from vllm_magics.redact import SecretRedactor, mask_secret
from vllm_magics.files import private_dir

__all__ = [
    "Tunnel", "TunnelManager", "TunnelCard", "ColabProxy", "TunnelError", "NgrokAuthError", "NgrokSessionLimit",
    "NgrokNotInstalled", "NgrokStartTimeout", "InsecureShareRefused", "NotOnColab", "NgrokTokenMissing",
    "find_authtoken", "health_through", "colab_proxy_url", "curl_example", "python_example", "tunnel_card",
    "KEY_SCOPE_NOTE", "BASIC_AUTH_NOTE", "SKIP_WARNING_HEADER",
]

AGENTS_URL = "https://dashboard.ngrok.com/agents"
DOWNLOAD_URL = "https://ngrok.com/download"
SKIP_WARNING_HEADER = ("ngrok-skip-browser-warning", "1")
PYNGROK_LOGGERS = ("pyngrok", "pyngrok.process", "pyngrok.process.ngrok", "pyngrok.ngrok", "pyngrok.installer",
                   "pyngrok.conf", "pyngrok.agent", "pyngrok.log")

KEY_SCOPE_NOTE = (
    "vLLM's API key guards only the /v1 routes: /health, /metrics, /tokenize, /detokenize, /version and /docs "
    "answer anyone who has the link.")
BASIC_AUTH_NOTE = (
    "Basic auth is for browsers only: ngrok's basic auth and the OpenAI clients both use the Authorization "
    "header, so a client cannot send both the password and the API key.")


# -- errors (TunnelError, the base, and NgrokTokenMissing come from vllm_magics.tunnel.token) -------------
class NgrokAuthError(TunnelError):
    """ERR_NGROK_4018 (no token or an invalid one), 105 (malformed), 107 (reset or revoked)."""


class NgrokSessionLimit(TunnelError):
    """ERR_NGROK_108: another agent session is online with this account."""


class NgrokNotInstalled(TunnelError):
    """The agent binary is missing and could not be downloaded."""


class NgrokStartTimeout(TunnelError):
    """The agent did not become ready in time (for instance a binary that prints nothing)."""


class InsecureShareRefused(TunnelError):
    """The server has no API key and `insecure` was not given."""


class NotOnColab(TunnelError):
    """Colab's proxy was asked for outside Google Colab."""


def _clean_ngrok_text(text: str) -> str:
    """ngrok's logfmt `err` values carry \\n and \\r\\n escapes: make them readable, on one line."""
    text = text.replace("\\r", " ").replace("\\n", " ").replace("\r", " ").replace("\n", " ")
    return re.sub(r"\s+", " ", text).strip().rstrip(".")


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
    provider: str = "ngrok"

    @property
    def openai_base_url(self) -> str:
        return self.public_url.rstrip("/") + "/v1"

    def age(self) -> float:
        return time.time() - self.created_at


@dataclass
class ColabProxy:
    """Colab's own proxy to a kernel port: no account needed, but the URL works only for you (your Google
    login, in this browser) while the notebook is open; not for other people, nor for clients elsewhere."""

    url: str | None
    port: int
    link_shown: bool = False
    note: str = ("works only for you, in this browser, while this notebook is open: "
                 "to share with others or call it from elsewhere, use ngrok")

    @property
    def openai_base_url(self) -> str | None:
        return self.url.rstrip("/") + "/v1" if self.url else None


def _basic_auth_credential(basic_auth) -> tuple[str, str] | None:
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


# The watchdog: a tiny process of its own that stops the agent when the process that started it is gone
# (its parent changes), including after a SIGKILL, when no atexit handler runs. /proc start times guard
# against a reused pid.
_WATCHDOG = r"""
import os, signal, sys, time
parent, pid, start = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
def started(p):
    try:
        raw = open("/proc/%d/stat" % p, "rb").read()
    except OSError:
        return None
    f = raw[raw.rfind(b")") + 2:].split()
    return None if f[0] == b"Z" else f[19].decode()
while os.getppid() == parent:
    if started(pid) != start:
        sys.exit(0)
    time.sleep(0.2)
if started(pid) == start:
    os.kill(pid, signal.SIGTERM)
    for _ in range(40):
        time.sleep(0.05)
        if started(pid) != start:
            sys.exit(0)
    os.kill(pid, signal.SIGKILL)
"""


def _proc_start_time(pid: int) -> str | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = raw[raw.rfind(b")") + 2:].split()
    return None if fields[0] == b"Z" else fields[19].decode()


def default_ngrok_dir() -> Path:
    from vllm_magics.server.manager import default_runtime_dir

    return default_runtime_dir() / "ngrok"


class TunnelManager:
    """One ngrok agent (started on first use) and the tunnels this object opened through it.

    `ngrok_path`: the agent binary (default: $PYNGROK_NGROK_PATH, else pyngrok's default path, where it
    downloads the binary when missing). `config_path`: the agent config this manager writes (default
    <runtime dir>/ngrok/agent.yml). `startup_timeout`: seconds the agent may take to come up, enforced
    here even when the agent prints nothing (pyngrok's own timeout is checked only between lines).
    """

    def __init__(self, *, ngrok_path: str | os.PathLike | None = None,
                 config_path: str | os.PathLike | None = None, startup_timeout: float = 20.0,
                 download_timeout: float = 6.0, request_timeout: float = 4.0, web_addr: str | None = None,
                 watchdog: bool = True, region: str | None = None):
        from pyngrok import conf
        from pyngrok.conf import PyngrokConfig

        self.ngrok_path = str(ngrok_path or os.environ.get("PYNGROK_NGROK_PATH") or conf.DEFAULT_NGROK_PATH)
        self.config_path = Path(config_path) if config_path else default_ngrok_dir() / "agent.yml"
        self.startup_timeout = float(startup_timeout)
        self.download_timeout = float(download_timeout)
        self.web_addr = web_addr
        self.use_watchdog = watchdog
        self.config = PyngrokConfig(
            ngrok_path=self.ngrok_path, config_path=str(self.config_path),
            # pyngrok's own limit (checked only between the agent's lines) is set past ours, which always
            # applies first and says the same thing whether or not the agent printed anything.
            startup_timeout=int(math.ceil(self.startup_timeout)) + 5, request_timeout=request_timeout,
            monitor_thread=True,  # someone must keep reading the agent's stdout, or a full pipe blocks it
            start_new_session=True,  # a Ctrl-C in a terminal IPython must not kill the agent
            region=region,  # passed as `--region` (no secret in it)
        )
        # PyngrokConfig copies $NGROK_AUTHTOKEN (and $NGROK_API_KEY) into these, and pyngrok then passes
        # `--authtoken TOKEN` on the agent's command line. The token goes in the config file instead.
        self.config.auth_token = None
        self.config.api_key = None
        self._redactor = SecretRedactor()
        self._tunnels: dict[str, Tunnel] = {}
        self._lock = threading.RLock()
        self._watchdog: subprocess.Popen | None = None
        self._owns_agent = False
        self._atexit_registered = False
        self.token_source: str | None = None
        self._token_masked: str | None = None
        self.agent_process = None  # pyngrok's NgrokProcess while running

    # -- state ----------------------------------------------------------------------------------------
    @property
    def agent_pid(self) -> int | None:
        p = self.agent_process
        return p.proc.pid if p is not None and p.proc.poll() is None else None

    def is_running(self) -> bool:
        from pyngrok import process

        return self.agent_process is not None and process.is_process_running(self.ngrok_path)

    @property
    def api_url(self) -> str | None:
        return self.agent_process.api_url if self.is_running() else None

    def redact(self, text) -> str:
        return self._redactor.redact(text)

    # -- agent ----------------------------------------------------------------------------------------
    def start(self, authtoken: str | None = None, token_source: str | None = None) -> None:
        """Start the agent if it is not running. Without `authtoken`, find_authtoken(interactive=False)."""
        from pyngrok import process

        with self._lock:
            if self.is_running():
                return
            if process.is_process_running(self.ngrok_path):
                # An agent from this binary is already running in this kernel (pyngrok allows one per
                # binary): an earlier manager, or the user's own pyngrok calls. Use it; leave it running.
                self.agent_process = process._current_processes[self.ngrok_path]
                self._owns_agent = False
                self._redactor.install(PYNGROK_LOGGERS)
                return
            if not authtoken:
                authtoken, token_source = find_authtoken(interactive=False)
            self.token_source = token_source
            self._token_masked = mask_secret(authtoken)
            self._redactor.add(authtoken)
            self._redactor.install(PYNGROK_LOGGERS)
            self._ensure_binary()
            self._write_agent_config(authtoken)
            self._start_agent()
            self._owns_agent = True
            if not self._atexit_registered:
                atexit.register(self.stop)
                self._atexit_registered = True

    def _ensure_binary(self) -> None:
        from pyngrok import installer
        from pyngrok.exception import PyngrokError, PyngrokNgrokInstallError

        if os.path.exists(self.ngrok_path):
            return
        failure = other = None
        try:
            # What ngrok.connect() would do itself, but with our timeout (pyngrok's is a fixed 6 s).
            installer.install_ngrok(self.ngrok_path, ngrok_version="3", timeout=self.download_timeout)
        except PyngrokNgrokInstallError as exc:
            failure = self.redact(str(exc))
        except PyngrokError as exc:  # e.g. a platform ngrok does not build for
            other = self.redact(str(exc))
        if other is not None:
            raise NgrokNotInstalled(f"The ngrok agent is not at {self.ngrok_path} and pyngrok cannot install it: "
                                    f"{other}", detail=other)
        if failure is not None:
            raise NgrokNotInstalled(
                f"The ngrok agent is not at {self.ngrok_path} and could not be downloaded: this machine cannot "
                f"reach ngrok's download site ({failure}). Install it yourself: download the Linux build from "
                f"{DOWNLOAD_URL} on a machine that can, copy the `ngrok` file here, make it executable "
                "(chmod +x), and pass its path as ngrok_path (or set PYNGROK_NGROK_PATH). Colab's own proxy "
                "needs no download.", detail=failure)

    def _write_agent_config(self, authtoken: str) -> None:
        import yaml

        private_dir(self.config_path.parent)
        agent = {
            "authtoken": authtoken,
            "inspect_db_size": -1,  # no inspection store: requests (and their headers) are never kept
            "update_check": False,
            "console_ui": False,
            "log_level": "info",  # pyngrok accepts info or debug, and parses logfmt lines
            "log_format": "logfmt",
        }
        if self.web_addr:
            agent["web_addr"] = self.web_addr
        text = yaml.safe_dump({"version": "3", "agent": agent}, default_flow_style=False)
        tmp = self.config_path.with_name(self.config_path.name + f".{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.config_path)
        self._forget_cached_config()

    def _forget_cached_config(self) -> None:
        # pyngrok's installer caches parsed config files (token included) in a module-level dict.
        try:
            from pyngrok import installer

            installer._config_cache.pop(str(self.config_path), None)
        except (ImportError, AttributeError):
            pass

    def _start_agent(self) -> None:
        """process.get_process() in a thread: it blocks in readline() while the agent prints nothing, so
        pyngrok's startup_timeout never fires then. Kill the agent when our own deadline passes."""
        from pyngrok import process

        box: dict = {}

        def run():
            try:
                box["process"] = process.get_process(self.config)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                box["error"] = exc

        starter = threading.Thread(target=run, name="vllm-magics-ngrok-start", daemon=True)
        starter.start()
        deadline = time.monotonic() + self.startup_timeout
        agent = None
        try:
            while starter.is_alive() and time.monotonic() < deadline:
                if agent is None:
                    np_ = process._current_processes.get(self.ngrok_path)
                    if np_ is not None and np_.proc.poll() is None:
                        agent = np_
                        self._spawn_watchdog(agent.proc.pid)
                starter.join(0.02)
        except BaseException:  # Ctrl-C while waiting: leave no agent behind
            self._abort_start(starter, agent)
            raise
        if starter.is_alive():
            agent = agent or process._current_processes.get(self.ngrok_path)
            said = [self.redact(_clean_ngrok_text(log.line)) for log in (agent.logs if agent else [])][-3:]
            error = self.redact(_clean_ngrok_text(agent.startup_error)) if agent and agent.startup_error else ""
            self._abort_start(starter, agent)
            if error or said:
                what = f"its last error: {error}" if error else "its last lines: " + "; ".join(said)
                raise NgrokStartTimeout(
                    f"The ngrok agent was not ready after {self.startup_timeout:.0f} s and was stopped ({what}). "
                    "This machine may not reach ngrok's servers.", detail=error or "; ".join(said))
            raise NgrokStartTimeout(
                f"The ngrok agent ({self.ngrok_path}) was not ready after {self.startup_timeout:.0f} s "
                "(it printed nothing) and was stopped. Check that it is an ngrok v3 agent "
                f"(`{self.ngrok_path} --version`) and that this machine can reach ngrok's servers, then try "
                "again.")
        if "error" in box:
            self._stop_watchdog()
            raise self._translate(box["error"])  # outside any except block: no pyngrok __context__
        self.agent_process = box["process"]
        if self._watchdog is None:
            self._spawn_watchdog(self.agent_process.proc.pid)

    def _abort_start(self, starter: threading.Thread, agent) -> None:
        if agent is not None and agent.proc.poll() is None:
            agent.proc.kill()  # pyngrok's readline() then returns "" and it cleans up its own state
        starter.join(5.0)
        self._stop_watchdog()

    def _spawn_watchdog(self, pid: int) -> None:
        if not self.use_watchdog or self._watchdog is not None:
            return
        start = _proc_start_time(pid)
        if start is None:
            return  # no /proc (not Linux): atexit is all there is
        self._watchdog = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _WATCHDOG, str(os.getpid()), str(pid), start],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            close_fds=True, start_new_session=True)

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
        alone). Safe to call twice; runs at exit."""
        from pyngrok import ngrok, process

        with self._lock:
            if self.agent_process is not None and self.is_running():
                self.close_all()
            if self._owns_agent and self.agent_process is not None:
                proc = self.agent_process.proc
                if proc.poll() is None:
                    proc.terminate()  # lets the agent end its session with ngrok cleanly
                    try:
                        proc.wait(3.0)
                    except subprocess.TimeoutExpired:
                        pass
                process.kill_process(self.ngrok_path)  # SIGKILL if still there; forgets the process
                for url in [u for u, t in ngrok._current_tunnels.items()
                            if t.pyngrok_config is self.config]:
                    ngrok._current_tunnels.pop(url, None)
            self._tunnels.clear()
            self.agent_process = None
            self._owns_agent = False
            self._stop_watchdog()
            self._redactor.uninstall()
            if self._atexit_registered:
                atexit.unregister(self.stop)
                self._atexit_registered = False

    # -- tunnels --------------------------------------------------------------------------------------
    def open(self, port: int, *, api_key: str | None, insecure: bool = False, authtoken: str | None = None,
             token_source: str | None = None, basic_auth=None, host: str = "127.0.0.1",
             name: str | None = None, domain: str | None = None) -> Tunnel:
        """Open a public HTTPS endpoint to http://host:port. `api_key` is the server's key (None: it has
        none, refused unless `insecure`). `basic_auth`: (user, password) or "user:password", enforced by
        ngrok (browsers only: see BASIC_AUTH_NOTE)."""
        from pyngrok import ngrok
        from pyngrok.exception import PyngrokError

        port = int(port)
        if not api_key and not insecure:
            raise InsecureShareRefused(
                f"The server on port {port} has no API key: anyone with the link could use it (and your GPU). "
                "Restart it with a key: %vllm_serve MODEL --restart (a random key is the default: leave out "
                "--no-api-key). To share it without a key anyway, pass insecure=True (%ngrok_up --insecure).")
        cred = _basic_auth_credential(basic_auth)
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
                t = ngrok.connect(upstream, "http", name=name, pyngrok_config=self.config, **options)
            except PyngrokError as exc:
                failure = self._translate(exc, opening=True)
            if failure is not None:
                raise failure
            self._forget_cached_config()
            tunnel = Tunnel(public_url=str(t.public_url).rstrip("/"), name=t.name or name, port=port,
                            basic_auth=cred is not None, upstream=upstream)
            self._tunnels[tunnel.public_url] = tunnel
            return tunnel

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
        from pyngrok import ngrok
        from pyngrok.exception import PyngrokError, PyngrokNgrokHTTPError

        with self._lock:
            t = self._find(url_or_name)
            if t is None:
                return False
            failure = None
            if self.is_running():
                try:
                    ngrok.disconnect(t.public_url, pyngrok_config=self.config)
                except PyngrokNgrokHTTPError as exc:
                    if exc.status_code != 404:  # 404: the agent had already closed it
                        failure = self._translate(exc)
                except PyngrokError as exc:
                    failure = self._translate(exc)
            self._tunnels.pop(t.public_url, None)
            if failure is not None:
                raise failure
            return True

    def close_all(self) -> int:
        """Close every tunnel of this manager; the agent keeps running. Returns how many were closed."""
        with self._lock:
            n = 0
            for t in list(self._tunnels.values()):
                if self.close(t.public_url):
                    n += 1
            return n

    # -- errors ---------------------------------------------------------------------------------------
    def _translate(self, exc: BaseException, opening: bool = False) -> TunnelError:
        """A plain-words TunnelError for a pyngrok exception, with every secret redacted."""
        from pyngrok.exception import PyngrokNgrokHTTPError, PyngrokNgrokInstallError

        if isinstance(exc, TunnelError):
            return exc
        raw = str(exc)
        ngrok_error = getattr(exc, "ngrok_error", None) or ""
        body = getattr(exc, "body", None) or ""
        code = getattr(exc, "ngrok_error_code", None)
        if code is None:
            m = re.search(r"ERR_NGROK_\d+", " ".join((raw, ngrok_error, body)))
            code = m.group(0) if m else None
        detail = self.redact(_clean_ngrok_text(ngrok_error or body or raw))
        source = f" (from {self.token_source})" if self.token_source else ""
        if isinstance(exc, PyngrokNgrokInstallError):
            return NgrokNotInstalled(f"The ngrok agent could not be installed: {detail}", detail=detail)
        if code == "ERR_NGROK_4018":
            return NgrokAuthError(
                f"ngrok refused to start: the authtoken{source} is missing or invalid (ERR_NGROK_4018). Copy it "
                f"again from {DASHBOARD_TOKEN_URL} (sign up free at dashboard.ngrok.com if you have no account) "
                "and store it as the Colab secret NGROK_AUTHTOKEN (key icon in the left bar, Notebook access on).",
                code=code, detail=detail)
        if code == "ERR_NGROK_105":
            shown = f" ({self._token_masked})" if self._token_masked else ""
            return NgrokAuthError(
                f"ngrok says the authtoken{source}{shown} does not look like an ngrok authtoken (ERR_NGROK_105). "
                f"Copy only the token itself from {DASHBOARD_TOKEN_URL}: no `ngrok config add-authtoken` "
                "in front of it, no quotes, no spaces.", code=code, detail=detail)
        if code == "ERR_NGROK_107":
            return NgrokAuthError(
                f"ngrok says the authtoken{source} is invalid: it was reset or revoked (ERR_NGROK_107). Copy "
                f"the current one from {DASHBOARD_TOKEN_URL}.", code=code, detail=detail)
        if code == "ERR_NGROK_108":
            return NgrokSessionLimit(
                "Another ngrok agent is already online with this account (ERR_NGROK_108), and free accounts "
                f"allow one at a time. Stop it: close its tunnel in the other notebook (or stop that "
                f"notebook's runtime), or disconnect the session at {AGENTS_URL}; then run this again.",
                code=code, detail=detail)
        if isinstance(exc, PyngrokNgrokHTTPError) or opening:
            status = getattr(exc, "status_code", None)
            what = f" (HTTP {status})" if status else ""
            return TunnelError(f"ngrok refused to open the tunnel{what}: {detail}", code=code, detail=detail)
        if code:
            return TunnelError(f"ngrok could not start ({code}): {detail}", code=code, detail=detail)
        logs = getattr(exc, "ngrok_logs", None) or []
        tail = "; ".join(self.redact(_clean_ngrok_text(log.line)) for log in logs[-3:])
        more = f" Its last lines: {tail}" if tail else ""
        return TunnelError(f"The ngrok agent could not start: {detail}.{more}", detail=detail)


# -- probes and the Colab proxy ------------------------------------------------------------------------
def health_through(public_url: str, timeout: float = 10.0, *, basic_auth=None) -> int | None:
    """HTTP status of GET <public_url>/health through the tunnel, or None when nothing answers.

    Sends `ngrok-skip-browser-warning: 1`: on free ngrok accounts a request that looks like it comes
    from a browser gets ngrok's "You are about to visit..." warning page (ERR_NGROK_6024, status 200)
    instead of the server's answer. API clients (curl, the openai package, requests) are not shown that
    page; browsers are, until the visitor clicks through, and any request that carries this header (any
    value) skips it."""
    from vllm_magics.status.probes import health_status

    headers = {SKIP_WARNING_HEADER[0]: SKIP_WARNING_HEADER[1], "User-Agent": "vllm_magics"}
    cred = _basic_auth_credential(basic_auth)
    if cred is not None:
        import base64

        headers["Authorization"] = "Basic " + base64.b64encode(f"{cred[0]}:{cred[1]}".encode()).decode()
    return health_status(public_url.rstrip("/"), timeout, headers=headers)


def colab_proxy_url(port: int, timeout: float = 30.0) -> ColabProxy:
    """Colab's own proxy to `port`, the no-account alternative to ngrok: asks the notebook's page for
    `google.colab.kernel.proxyPort(PORT)`, a URL that works only for this user, in this browser, while the
    notebook is open. When the page does not answer, shows Colab's link instead
    (`serve_kernel_port_as_window`), and the URL is None."""
    try:
        from google.colab import output  # type: ignore[import-not-found]
    except ImportError:
        raise NotOnColab("Colab's proxy exists only on Google Colab; here, share the server with ngrok.") from None
    port = int(port)
    url = None
    try:
        url = output.eval_js(f"google.colab.kernel.proxyPort({port})", timeout_sec=timeout)
    except Exception:  # noqa: BLE001 - no page attached, or it did not answer in time
        url = None
    if url:
        return ColabProxy(url=str(url), port=port)
    output.serve_kernel_port_as_window(port, path="/docs", anchor_text=f"Open port {port} through Colab")
    return ColabProxy(url=None, port=port, link_shown=True)


# -- what the card shows --------------------------------------------------------------------------------
def curl_example(tunnel: Tunnel, api_key: str | None, model: str = "MODEL") -> str:
    """A curl command against the tunnel, the key masked (mask_secret): a reader must paste the real one."""
    lines = [f"curl {tunnel.openai_base_url}/chat/completions \\"]
    if api_key:
        lines.append(f'  -H "Authorization: Bearer {mask_secret(api_key)}" \\')
    elif tunnel.basic_auth:
        lines.append("  -u USER:PASSWORD \\")
    lines.append('  -H "Content-Type: application/json" \\')
    body = {"model": model, "messages": [{"role": "user", "content": "Hello!"}]}
    lines.append(f"  -d '{json.dumps(body)}'")
    return "\n".join(lines)


def python_example(tunnel: Tunnel, api_key: str | None, model: str = "MODEL") -> str:
    """The `openai` package against the tunnel, the key masked."""
    key = mask_secret(api_key) if api_key else "EMPTY"
    return "\n".join([
        "from openai import OpenAI",
        "",
        f'client = OpenAI(base_url="{tunnel.openai_base_url}", api_key="{key}")',
        "reply = client.chat.completions.create(",
        f'    model="{model}", messages=[{{"role": "user", "content": "Hello!"}}])',
        "print(reply.choices[0].message.content)",
    ])


@dataclass
class TunnelCard:
    """What the magic shows once a tunnel is open (plain data; text() for terminals, html() for notebooks)."""

    headline: str
    public_url: str
    openai_base_url: str
    upstream: str
    api_key_masked: str
    basic_auth: bool
    curl: str
    python: str
    notes: list[str] = field(default_factory=list)

    def text(self) -> str:
        lines = [self.headline, f"  public URL:  {self.public_url}", f"  OpenAI base: {self.openai_base_url}",
                 f"  forwards to: {self.upstream}", f"  API key:     {self.api_key_masked}",
                 "", "curl:", self.curl, "", "Python:", self.python]
        lines += ["", *[f"note: {n}" for n in self.notes]] if self.notes else []
        return "\n".join(lines)

    def html(self) -> str:
        from vllm_magics.notebook.views.render import render

        return render("tunnel_card.html.j2", c=self)

    def _repr_mimebundle_(self, include=None, exclude=None):
        return {"text/plain": self.text(), "text/html": self.html()}


def tunnel_card(tunnel: Tunnel, api_key: str | None, model: str = "MODEL") -> TunnelCard:
    notes = [KEY_SCOPE_NOTE]
    if not api_key:
        notes.insert(0, "This server has no API key: anyone with the link can use it.")
    if tunnel.basic_auth:
        notes.append(BASIC_AUTH_NOTE)
    notes.append("The link works while this runtime runs; %ngrok_down closes it.")
    shown_key = mask_secret(api_key) if api_key else "(none)"
    return TunnelCard(
        headline=f"Shared port {tunnel.port} at {tunnel.public_url}", public_url=tunnel.public_url,
        openai_base_url=tunnel.openai_base_url, upstream=tunnel.upstream or f"http://127.0.0.1:{tunnel.port}",
        api_key_masked=shown_key, basic_auth=tunnel.basic_auth, curl=curl_example(tunnel, api_key, model),
        python=python_example(tunnel, api_key, model), notes=notes)
