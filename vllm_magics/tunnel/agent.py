"""The ngrok agent through pyngrok: the only module that imports pyngrok or touches its private state
(`process._current_processes`, made a dict that remembers each start (_StartedAgents);
`installer._config_cache`, `ngrok._current_tunnels`).

TunnelManager (tunnel/manager.py) decides; an agent object does. Its interface is the seam the manager's
tests replace with an in-process stand-in:

    agent.running() / adopt_running() / pid / api_url
    agent.install(timeout)                  the binary, downloaded when missing
    agent.write_config(token, settings)     the agent config file (mode 0600, 0700 folder)
    agent.begin_start() -> AgentStart       spawned_pid(), wait(t), finish(), abort(), last_words()
    agent.connect(name, upstream, options)  -> public URL;  agent.disconnect(public_url)
    agent.stop()

Every failure leaves as an AgentFailure whose texts are already redacted and which carries no pyngrok
exception (ngrok's ERR_NGROK_105 echoes the whole token, so pyngrok's exceptions may hold it).
"""
from __future__ import annotations

import atexit
import math
import os
import sys
import re
import subprocess
import threading
from pathlib import Path
from typing import Callable

from vllm_magics.files import private_dir
from vllm_magics.redact import Secret

PYNGROK_LOGGERS = ("pyngrok", "pyngrok.process", "pyngrok.process.ngrok", "pyngrok.ngrok", "pyngrok.installer",
                   "pyngrok.conf", "pyngrok.agent", "pyngrok.log")


class AgentFailure(Exception):
    """A fact about what the agent (or pyngrok) said, redacted. `kind`: "install" (the download failed),
    "unsupported" (pyngrok cannot install for this platform), "start" (the agent exited or refused),
    "http" (the agent API answered an error), "timeout" (see AgentStart). `code`: ngrok's ERR_NGROK_*."""

    def __init__(self, kind: str, text: str, *, code: str | None = None, status: int | None = None,
                 last_lines: tuple[str, ...] = ()):
        super().__init__(text)
        self.kind = kind
        self.text = text
        self.code = code
        self.status = status
        self.last_lines = last_lines


def clean_ngrok_text(text: str) -> str:
    """ngrok's logfmt `err` values carry \\n and \\r\\n escapes: make them readable, on one line."""
    text = text.replace("\\r", " ").replace("\\n", " ").replace("\r", " ").replace("\n", " ")
    return re.sub(r"\s+", " ", text).strip().rstrip(".")


def _failure_from(exc: BaseException, kind: str, redact: Callable[[str], str]) -> AgentFailure:
    """An AgentFailure with the facts of a pyngrok exception (which is then dropped by the caller)."""
    raw = str(exc)
    ngrok_error = getattr(exc, "ngrok_error", None) or ""
    body = getattr(exc, "body", None) or ""
    code = getattr(exc, "ngrok_error_code", None)
    if code is None:
        m = re.search(r"ERR_NGROK_\d+", " ".join((raw, ngrok_error, body)))
        code = m.group(0) if m else None
    logs = getattr(exc, "ngrok_logs", None) or []
    last = tuple(redact(clean_ngrok_text(log.line)) for log in logs[-3:])
    return AgentFailure(kind, redact(clean_ngrok_text(ngrok_error or body or raw)), code=code,
                        status=getattr(exc, "status_code", None), last_lines=last)


def _may_have_left_its_error_unread(exc: BaseException) -> bool:
    """pyngrok (process._start_process) stops reading the agent's output as soon as the agent has exited,
    with lines maybe still in the pipe: an agent that prints its error (ERR_NGROK_105, 108, ...) and exits
    at once can leave "The ngrok process was unable to start" and no error (seen on a loaded machine)."""
    from pyngrok.exception import PyngrokNgrokError

    return isinstance(exc, PyngrokNgrokError) and not exc.ngrok_error


def _error_said_after_pyngrok_stopped_reading(np_) -> BaseException | None:
    """The rest of an exited agent's output (the pipe then holds all it will say), read through pyngrok's
    own line parser: the exception pyngrok would have raised had it read on, or None."""
    from pyngrok.exception import PyngrokNgrokError

    if np_.startup_error is not None or np_.proc.poll() is None or np_.proc.stdout is None:
        return None
    for line in _remaining_lines(np_.proc.stdout):
        np_._log_startup_line(line)
    if np_.startup_error is None:
        return None
    return PyngrokNgrokError(f"The ngrok process errored on start: {np_.startup_error}.", np_.logs,
                             np_.startup_error)


def _remaining_lines(stream, max_lines: int = 200, wait: float = 1.0) -> list[str]:
    """The lines left in an exited agent's output, read for at most `wait` seconds: a child of the agent
    could hold the pipe open, and nothing here may hang (the reader is then left behind, a daemon)."""
    lines: list[str] = []

    def read():
        try:
            for _ in range(max_lines):
                line = stream.readline(65536)
                if not line:
                    return
                lines.append(line)
        except (OSError, ValueError):  # closed meanwhile
            return

    reader = threading.Thread(target=read, name="vllm-magics-ngrok-last-lines", daemon=True)
    reader.start()
    reader.join(wait)
    return list(lines)


def _private_folder(folder: Path) -> None:
    """The folder that holds the token file. private_dir makes missing folders 0700 and refuses a link,
    a file, or another user's folder; an existing folder is never chmodded (it may be shared on purpose),
    so one that others may write to is refused here: another user could swap the file or plant a link."""
    existed = os.path.lexists(folder)
    private_dir(folder)
    mode = os.stat(folder).st_mode
    if existed and mode & 0o022:
        raise PermissionError(f"other users may write to the folder {folder} (mode {oct(mode & 0o7777)})")


def _forget_parent_agents() -> None:
    """In a forked child: pyngrok registers `atexit.register(_terminate_process, proc)` for each agent it
    starts, and atexit handlers carry over os.fork, so a child that exits normally would terminate the
    parent's agent. (Its own later agents register afresh.)"""
    process = sys.modules.get("pyngrok.process")
    if process is not None:
        atexit.unregister(process._terminate_process)


_fork_hook = []  # [True] once registered: os.register_at_fork cannot unregister, so once per process


def _install_fork_hook() -> None:
    if not _fork_hook and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_forget_parent_agents)
        _fork_hook.append(True)


class _StartedAgents(dict):
    """pyngrok's `process._current_processes`, with a memory: `started[path]` is the NgrokProcess that
    pyngrok's last start put in for that binary, kept after pyngrok drops it. An agent that exits during
    its start is dropped (kill_process) before a poll from another thread may have seen it, and with it
    went the pipe that still held the agent's error (seen on a loaded machine). pyngrok reads and writes
    it as the plain dict it was."""

    def __init__(self, current=()):
        super().__init__(current)
        self.started: dict = {}

    def __setitem__(self, path, ngrok_process):
        super().__setitem__(path, ngrok_process)
        self.started[path] = ngrok_process


def _started_agents() -> _StartedAgents:
    """pyngrok's table of agents, made a _StartedAgents once (under pyngrok's lock, which every start and
    stop holds while it uses the table)."""
    from pyngrok import process

    with process._current_processes_lock:
        if not isinstance(process._current_processes, _StartedAgents):
            process._current_processes = _StartedAgents(process._current_processes)
        return process._current_processes


class AgentStart:
    """pyngrok's process.get_process() in a thread: it blocks in readline() while the agent prints nothing,
    so pyngrok's own startup_timeout never fires then. The caller owns the deadline (and Ctrl-C)."""

    def __init__(self, agent: "PyngrokAgent"):
        from pyngrok import process

        self._agent = agent
        self._box: dict = {}
        self._aborted = threading.Event()
        self._starts = _started_agents()
        self._starts.started.pop(agent.path, None)  # an agent of before, not this start's

        def run():
            try:
                self._box["process"] = ready = process.get_process(agent.config)
                if self._aborted.is_set():  # abort() may have looked before this was set
                    ready.proc.kill()
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                self._box["failure"] = _failure_from(exc, "start", agent.redact)
                self._box["error_unread"] = _may_have_left_its_error_unread(exc)

        self._thread = threading.Thread(target=run, name="vllm-magics-ngrok-start", daemon=True)
        try:
            self._thread.start()
        except BaseException:  # Ctrl-C while the thread starts (Thread.start waits for it): no agent may
            self.abort()  # come up with nobody left to stop it
            raise

    def _spawned(self):
        from pyngrok import process

        np_ = process._current_processes.get(self._agent.path)
        return np_ if np_ is not None and np_.proc.poll() is None else None

    def spawned_pid(self) -> int | None:
        """The agent's pid once pyngrok has started it (it may not be ready yet)."""
        np_ = self._spawned()
        return np_.proc.pid if np_ is not None else None

    def wait(self, timeout: float) -> bool:
        """True when pyngrok has finished (ready or failed)."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def finish(self) -> None:
        """After wait() is True: the agent is ready, or AgentFailure."""
        failure = self._box.get("failure")
        this_start = self._starts.started.pop(self._agent.path, None)  # its pipe goes with it, once read
        if failure is not None and self._box.get("error_unread") and this_start is not None:
            said_late = _error_said_after_pyngrok_stopped_reading(this_start)
            failure = _failure_from(said_late, "start", self._agent.redact) if said_late else failure
        if failure is not None:
            raise failure
        self._agent._process = self._box["process"]
        self._agent.owned = True

    def last_words(self) -> tuple[str, str]:
        """(its startup error, its last lines joined), redacted: what to say when it never became ready."""
        np_ = self._spawned()
        if np_ is None:
            return "", ""
        redact = self._agent.redact
        said = "; ".join(redact(clean_ngrok_text(log.line)) for log in np_.logs[-3:])
        error = redact(clean_ngrok_text(np_.startup_error)) if np_.startup_error else ""
        return error, said

    def abort(self) -> None:
        self._aborted.set()
        np_ = self._spawned()
        if np_ is not None:
            np_.proc.kill()  # pyngrok's readline() then returns "" and it cleans up its own state
        self._thread.join(5.0)
        ready = self._box.get("process")  # not yet spawned above, and ready since
        if ready is not None and ready.proc.poll() is None:
            ready.proc.kill()
        self._starts.started.pop(self._agent.path, None)


class PyngrokAgent:
    """One ngrok agent binary driven through pyngrok (which runs at most one agent per binary path)."""

    def __init__(self, ngrok_path: str | os.PathLike | None, config_path: str | os.PathLike, *,
                 startup_timeout: float, request_timeout: float = 4.0, region: str | None = None,
                 redact: Callable[[str], str] = str):
        from pyngrok import conf
        from pyngrok.conf import PyngrokConfig

        self.path = str(ngrok_path or os.environ.get("PYNGROK_NGROK_PATH") or conf.DEFAULT_NGROK_PATH)
        self.config_path = Path(config_path)
        self.redact = redact
        self.region = region
        self.owned = False  # True when this object started the agent (and so stops it)
        self._process = None  # pyngrok's NgrokProcess while running
        self.config = PyngrokConfig(
            ngrok_path=self.path, config_path=str(self.config_path),
            # pyngrok's own limit (checked only between the agent's lines) is set past the manager's,
            # which always applies first and says the same thing whether or not the agent printed anything.
            startup_timeout=int(math.ceil(startup_timeout)) + 5, request_timeout=request_timeout,
            monitor_thread=True,  # someone must keep reading the agent's stdout, or a full pipe blocks it
            start_new_session=True,  # a Ctrl-C in a terminal IPython must not kill the agent
            region=region,  # passed as `--region` (no secret in it)
        )
        # PyngrokConfig copies $NGROK_AUTHTOKEN (and $NGROK_API_KEY) into these, and pyngrok then passes
        # `--authtoken TOKEN` on the agent's command line, where `ps` shows it: the token goes in the file.
        self.config.auth_token = None
        self.config.api_key = None

    # -- state ----------------------------------------------------------------------------------------
    def running(self) -> bool:
        from pyngrok import process

        return self._process is not None and process.is_process_running(self.path)

    def adopt_running(self) -> bool:
        """Use an agent of this binary that is already running in this process (an earlier manager, or the
        user's own pyngrok calls); it stays theirs. False when there is none."""
        from pyngrok import process

        if not process.is_process_running(self.path):
            return False
        self._process = process._current_processes[self.path]
        self.owned = False
        return True

    @property
    def pid(self) -> int | None:
        p = self._process
        return p.proc.pid if p is not None and p.proc.poll() is None else None

    @property
    def api_url(self) -> str | None:
        return self._process.api_url if self.running() else None

    # -- setup ----------------------------------------------------------------------------------------
    def install(self, timeout: float) -> None:
        """Download the binary when it is missing (what ngrok.connect() would do, with our timeout)."""
        from pyngrok import installer
        from pyngrok.exception import PyngrokError, PyngrokNgrokInstallError

        if os.path.exists(self.path):
            return
        failure = None
        try:
            installer.install_ngrok(self.path, ngrok_version="3", timeout=timeout)
        except PyngrokNgrokInstallError as exc:
            failure = AgentFailure("install", self.redact(str(exc)))
        except PyngrokError as exc:  # e.g. a platform ngrok does not build for
            failure = AgentFailure("unsupported", self.redact(str(exc)))
        if failure is not None:
            raise failure  # outside the except block: no pyngrok __context__

    def write_config(self, token: Secret, settings: dict) -> None:
        """The agent config file: `settings` under `agent`, plus the token, written 0600 in a private
        folder and read by the agent through `--config`. The token is revealed only inside the write.
        Raises OSError (with the folder's problem in words) when the folder is not fit for a secret."""
        import yaml

        _private_folder(self.config_path.parent)
        tmp = self.config_path.with_name(self.config_path.name + f".{os.getpid()}.tmp")
        if os.path.lexists(tmp):
            os.unlink(tmp)  # a leftover of a crash (or a planted link): never written through
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(yaml.safe_dump({"version": "3", "agent": {"authtoken": token.reveal(), **settings}},
                                   default_flow_style=False))
        os.replace(tmp, self.config_path)
        self.forget_cached_config()

    def forget_cached_config(self) -> None:
        # pyngrok's installer caches parsed config files (token included) in a module-level dict.
        try:
            from pyngrok import installer

            installer._config_cache.pop(str(self.config_path), None)
        except (ImportError, AttributeError):
            pass

    def begin_start(self) -> AgentStart:
        _install_fork_hook()  # before pyngrok registers its atexit handler for this agent
        return AgentStart(self)

    # -- endpoints ------------------------------------------------------------------------------------
    def connect(self, name: str, upstream: str, options: dict) -> str:
        """Create an http endpoint; its public URL (no trailing slash)."""
        from pyngrok import ngrok
        from pyngrok.exception import PyngrokError

        failure = None
        try:
            t = ngrok.connect(upstream, "http", name=name, pyngrok_config=self.config, **options)
        except PyngrokError as exc:
            failure = _failure_from(exc, "http", self.redact)
        if failure is not None:
            raise failure
        self.forget_cached_config()
        return str(t.public_url).rstrip("/")

    def disconnect(self, public_url: str) -> None:
        from pyngrok import ngrok
        from pyngrok.exception import PyngrokError

        failure = None
        try:
            ngrok.disconnect(public_url, pyngrok_config=self.config)
        except PyngrokError as exc:
            failure = _failure_from(exc, "http", self.redact)
        if failure is not None:
            raise failure

    def stop(self) -> None:
        """Stop the agent this object started (an adopted one is only let go)."""
        from pyngrok import ngrok, process

        if self.owned and self._process is not None:
            proc = self._process.proc
            if proc.poll() is None:
                proc.terminate()  # lets the agent end its session with ngrok cleanly
                try:
                    proc.wait(3.0)
                except subprocess.TimeoutExpired:
                    pass
            process.kill_process(self.path)  # SIGKILL if still there; pyngrok forgets the process
            for url in [u for u, t in ngrok._current_tunnels.items() if t.pyngrok_config is self.config]:
                ngrok._current_tunnels.pop(url, None)
        self._process = None
        self.owned = False
