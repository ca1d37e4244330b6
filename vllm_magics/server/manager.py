"""The server manager: one `vllm serve` process group and its lifecycle (no IPython, no display).

Modelled on jupyter_client's KernelManager: start, wait_ready, is_alive, stop (graceful, then
forced); plus start_and_wait (lowers our own --max-model-len default once when vLLM says it does not
fit), and find / take_over, for a server this package started earlier (from this process or another).

    from vllm_magics.server.plan import plan_serve
    from vllm_magics.server.manager import VllmServer
    server = VllmServer(plan_serve("Qwen/Qwen2.5-0.5B-Instruct"))
    server.start_and_wait(timeout=600)
    ...; server.stop()

Errors carry facts (exit code, log path, log tail, diagnoses); saying which command to type next is the
caller's business.
"""
from __future__ import annotations

import os
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from vllm_magics.errors import ServerAlreadyRunning, ServerStartError, ServerTimeout, VllmNotInstalled
from vllm_magics.files import private_dir, read_json, write_json_private
from vllm_magics.server import process
from vllm_magics.server.logfile import LogFollower, tail_lines, tail_text
from vllm_magics.server.plan import ServePlan
from vllm_magics.server.ports import port_holders, port_listening
from vllm_magics.server.progress import StartupProgress
from vllm_magics.server.vllm_log import rotated_path, suggested_max_model_len
from vllm_magics.status.probes import health_status

DEFAULT_LOG_BYTES = 20_000_000
READY_POLL_S = 0.1  # detection delay is at most this plus one /health round trip

OnProgress = Callable[[StartupProgress, "list[str]"], None]


def default_runtime_dir() -> Path:
    """Where logs and state live: $VLLM_MAGICS_HOME, else ~/.cache/vllm_magics."""
    root = os.environ.get("VLLM_MAGICS_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "vllm_magics")
    return Path(root)


def _this_process() -> tuple[int, int | None]:
    return os.getpid(), process.start_ticks(os.getpid())


@dataclass
class ReadyInfo:
    seconds: float


class VllmServer:
    """One managed `vllm serve`. States: new -> starting -> ready -> exited (or stopped).

    Its owner is the process that started or took it over (a notebook's kernel), recorded by pid and
    start time in server.json: `owner()` tells this process, another live one, or one that is gone."""

    def __init__(self, plan: ServePlan, runtime_dir: Path | None = None, *, detach: bool = False,
                 shutdown_wait: float = 10.0, max_log_bytes: int = DEFAULT_LOG_BYTES):
        self.plan = plan
        self.detach = detach
        self.shutdown_wait = shutdown_wait
        self.max_log_bytes = max_log_bytes
        self.runtime_dir = Path(runtime_dir or default_runtime_dir()).absolute()
        self.dir = self.runtime_dir / "servers" / str(plan.port)
        self.proc: process.SupervisedProcess | None = None
        self.started_at: float | None = None
        self.ready_at: float | None = None
        self.adopted = False
        self.last_stop: process.StopStep | None = None
        self.tmp_dir: Path | None = None
        self.owner_pid, self.owner_start = _this_process()

    # -- paths and identity -------------------------------------------------------------------
    @property
    def log_path(self) -> Path:
        return self.dir / "server.log"

    @property
    def base_url(self) -> str:
        return self.plan.base_url

    @property
    def api_key(self) -> str | None:
        return self.plan.api_key

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def pgid(self) -> int | None:
        return self.proc.pgid if self.proc else None

    def owner(self) -> str:
        """Who owns the server now: "this process", "another process" (alive), or "gone"."""
        if (self.owner_pid, self.owner_start) == _this_process():
            return "this process"
        if process.pid_alive(self.owner_pid) and process.start_ticks(self.owner_pid) == self.owner_start:
            return "another process"
        return "gone"

    def foreign_listeners(self) -> list:
        """The processes listening on the server's port that are not in its process group: a squatter, or
        whoever holds the port of a server that is gone. [] when only the server listens, or nobody."""
        known = (self.pid,) if self.proc is not None and self.proc.command_is_ours() else ()
        return [h for h in port_holders(self.plan.port, known)
                if h.pid is None or process.process_group(h.pid) != self.pgid]

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        if self.proc is not None and self.is_alive():
            raise ServerAlreadyRunning(f"this server is already running (pid {self.pid})")
        exe = self.plan.argv[0]
        if shutil.which(exe) is None and not os.path.exists(exe):
            raise VllmNotInstalled(f"`{exe}` was not found: vLLM is not installed "
                                   "(pip install \"vllm_magics[vllm]\"; on Colab: !pip install vllm)")
        private_dir(self.dir)
        # A private TMPDIR: vLLM leaves ZeroMQ socket files behind there (removed on stop). Short,
        # under the system temp folder: a ZeroMQ ipc path longer than 107 bytes fails to bind.
        self.tmp_dir = Path(tempfile.mkdtemp(prefix="vllm-magics-"))
        for old in (self.log_path, rotated_path(self.log_path)):
            old.unlink(missing_ok=True)
        env = dict(os.environ)
        env.update(self.plan.env)
        env["TMPDIR"] = str(self.tmp_dir)
        # torch.compile's kernel cache lives under the temp folder by default: keep it where a bare `vllm serve`
        # has it, or every start (a restart, the lowered --max-model-len retry, the next session's server)
        # compiles its kernels again in a folder that stop() deletes (seen in our test suite: a CPU server
        # compiled 150 MB of C++ kernels into its private folder while it answered).
        env.setdefault("TORCHINDUCTOR_CACHE_DIR", inductor_cache_dir())
        self.proc = process.launch_supervised(
            self.plan.argv, env=env, log_path=self.log_path, state_path=self.dir / "state.json",
            max_log_bytes=self.max_log_bytes, detach=self.detach, cleanup=self.tmp_dir)
        self.started_at = time.time()
        self.ready_at = None
        self.adopted = False
        self.owner_pid, self.owner_start = _this_process()
        self._save_manifest()

    def _save_manifest(self) -> None:
        # Lets a later kernel adopt this server (it needs the key to talk to it): owner-only file.
        write_json_private(self.dir / "server.json", {
            "model": self.plan.model, "host": self.plan.host, "port": self.plan.port,
            "argv": self.plan.argv, "env": self.plan.record_env(), "api_key": self.plan.api_key,
            "supervisor_pid": self.proc.supervisor_pid, "supervisor_start": self.proc.supervisor_start,
            "owner_pid": self.owner_pid, "owner_start": self.owner_start,
            "started_at": self.started_at, "ready_at": self.ready_at, "detach": self.detach,
            "tmp_dir": str(self.tmp_dir),
        })

    def is_alive(self) -> bool:
        return self.proc is not None and self.proc.is_alive()

    def exit_code(self) -> int | None:
        return self.proc.exit_code() if self.proc else None

    @property
    def state(self) -> str:
        if self.proc is None:
            return "new"
        if not self.is_alive():
            return "stopped" if self.last_stop else "exited"
        return "ready" if self.ready_at else "starting"

    def wait_ready(self, timeout: float = 900.0, on_progress: OnProgress | None = None) -> ReadyInfo:
        """Block until /health answers 200 from a process of this server's group. Raises
        ServerStartError (with diagnosis) as the process exits or when another process holds the port,
        ServerTimeout after `timeout` s (the server is left running)."""
        if self.proc is None:
            raise ServerStartError("the server was never started")
        progress = StartupProgress()
        reader = LogFollower(self.log_path)
        t0 = time.monotonic()
        deadline = t0 + timeout
        while True:
            lines = reader.read_new_lines()
            if any(progress.feed(line) for line in lines) or lines:
                if on_progress:
                    on_progress(progress, lines)
            if not self.is_alive():
                # Let the supervisor copy the last lines (the traceback) before reading them.
                self._wait_log_complete(1.0)
                lines = reader.read_new_lines()
                if on_progress and lines:
                    on_progress(progress, lines)
                raise self._start_error(f"vLLM exited with code {self.exit_code()} before it was ready")
            if health_status(self.base_url, timeout=0.5) == 200 and self._answered_by_us():
                self.ready_at = time.time()
                self._save_manifest()
                progress.feed("Application startup complete.")
                if on_progress:
                    on_progress(progress, reader.read_new_lines())
                return ReadyInfo(time.monotonic() - t0)
            if time.monotonic() > deadline:
                raise self._start_error(
                    f"vLLM was not ready after {timeout:.0f} s (last phase: {progress.label}); it is still "
                    "running", cls=ServerTimeout)
            time.sleep(READY_POLL_S)

    def _answered_by_us(self) -> bool:
        """A /health 200 counts only when the server's own group listens on the port: between the free-port
        check and vLLM's bind (seconds of imports later) another process may have taken it."""
        if not self.is_alive():
            return False
        foreign = self.foreign_listeners()
        if foreign:
            raise self._start_error(f"port {self.plan.port} was taken by {foreign[0].describe()} while vLLM "
                                    "was starting: that process answers there, not this server")
        return port_listening(self.plan.port)  # no one: the listener just went away; ask again

    def _wait_log_complete(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end and not self.proc.state().get("log_complete"):
            if not self.proc.supervisor_is_ours():
                return
            time.sleep(0.02)

    def _start_error(self, message: str, cls=ServerStartError) -> ServerStartError:
        from vllm_magics.server.diagnose import diagnose

        tail = "\n".join(tail_lines(self.log_path, 400))
        code = self.exit_code()
        if code == 0:
            message += " (exit code 0 does not mean success here: the engine stopped)"
        return cls(message, exit_code=code, log_path=self.log_path,
                   log_tail="\n".join(tail.splitlines()[-25:]), diagnoses=diagnose(tail, code))

    def start_and_wait(self, timeout: float = 900.0, on_progress: OnProgress | None = None, *,
                       on_retry: Callable[[int, int], None] | None = None,
                       lower_max_model_len: bool = True) -> ReadyInfo:
        """start() then wait_ready(). When the start fails because our own --max-model-len default (the
        plan's `default_max_model_len`) does not fit and vLLM said which length would, start again once
        with that length (`on_retry(old, new)` is told first). A second failure is raised as it is."""
        self.start()
        try:
            return self.wait_ready(timeout, on_progress)
        except ServerTimeout:
            raise
        except ServerStartError:
            self.stop()
            smaller = self._fitting_max_model_len() if lower_max_model_len else None
            if smaller is None:
                raise
        old = self.plan.default_max_model_len
        self.plan = self.plan.with_max_model_len(smaller)
        if on_retry is not None:
            on_retry(old, smaller)
        self.start()
        return self.wait_ready(timeout, on_progress)

    def _fitting_max_model_len(self) -> int | None:
        """The shorter context vLLM's log says fits, when --max-model-len was our default; else None."""
        default = self.plan.default_max_model_len
        if not default:
            return None
        suggested = suggested_max_model_len(tail_text(self.log_path, 1_000_000))
        return suggested if suggested and suggested < default else None

    def stop(self, now: bool = False) -> process.StopStep:
        """SIGTERM to the whole group, wait `shutdown_wait` s, then SIGKILL what is left. Returns how far
        it had to go. Stopped means no process left in the group; a group that is no longer this
        server's (its processes gone, their pids reused) is never signalled."""
        if self.proc is None:
            return process.StopStep.ALREADY_GONE
        step = self.proc.terminate(grace=0.0 if now else self.shutdown_wait)
        self.last_stop = step
        if self.tmp_dir is not None:
            shutil.rmtree(self.tmp_dir, ignore_errors=True)
        return step

    def uptime(self) -> float | None:
        return time.time() - self.started_at if self.started_at and self.is_alive() else None

    def log_tail(self, n: int = 20) -> list[str]:
        return tail_lines(self.log_path, n)

    @property
    def log_write_error(self) -> str | None:
        """Why the supervisor could not write the log (e.g. a full disk): output since then is lost."""
        return self.proc.state().get("log_write_error") if self.proc else None

    # -- servers started earlier --------------------------------------------------------------
    @classmethod
    def find(cls, runtime_dir: Path | None, port: int) -> "VllmServer | None":
        """The server this package started on `port` (from this process or another), if it still runs
        and is verifiably the one its state files describe: the supervisor's pid, start time and command
        line, the server's pid and start time, and only its group listening on the port. Anything else
        (old files, reused pids, a squatter on the port) gives None."""
        d = Path(runtime_dir or default_runtime_dir()).absolute() / "servers" / str(port)
        m = read_json(d / "server.json")
        try:
            plan = ServePlan(str(m["model"]), str(m["host"]), int(m["port"]), [str(a) for a in m["argv"]],
                             {str(k): str(v) for k, v in dict(m.get("env") or {}).items()},
                             m.get("api_key") if isinstance(m.get("api_key"), str) else None)
            supervisor = int(m["supervisor_pid"])
        except (KeyError, TypeError, ValueError):
            return None
        server = cls(plan, d.parent.parent, detach=m.get("detach") is True)
        server.proc = process.SupervisedProcess(None, supervisor, d / "state.json", d / "server.log",
                                                m.get("supervisor_start"))
        if not (server.proc.supervisor_is_ours() and server.is_alive()) or server.foreign_listeners():
            return None
        server.started_at = m.get("started_at")
        server.ready_at = m.get("ready_at")
        server.tmp_dir = our_tmp_dir(m.get("tmp_dir"))
        server.owner_pid, server.owner_start = m.get("owner_pid"), m.get("owner_start")
        return server

    def may_take_over(self) -> bool:
        """This process started it (e.g. before the extension was reloaded), or its owner is gone and it
        was detached to outlive it. A server another live process owns is that process's to manage."""
        owner = self.owner()
        return owner == "this process" or (owner == "gone" and self.detach)

    def take_over(self) -> None:
        """Become its owner (recorded, so that other processes leave it alone)."""
        self.adopted = True
        self.owner_pid, self.owner_start = _this_process()
        self._save_manifest()


def inductor_cache_dir() -> str:
    """Where torch.compile (inductor) keeps its kernels for a process of this user with our temp folder:
    torch._inductor.runtime.cache_dir_utils.default_cache_dir, without importing torch."""
    import getpass
    import re

    try:
        user = getpass.getuser()
    except (KeyError, ImportError, OSError):
        user = f"uid_{os.getuid()}"
    return os.path.join(tempfile.gettempdir(), "torchinductor_" + re.sub(r'[\\/:*?"<>|]', "_", user))


def our_tmp_dir(value) -> Path | None:
    """The server's temp folder as server.json names it, if it is one start() could have made: stop()
    deletes it, and the file is untrusted (anyone who can write it could otherwise name any folder).
    Directly in the temp folder, named vllm-magics-*, a real folder (not a symlink) owned by this user."""
    if not isinstance(value, str):
        return None
    path = Path(value)
    if path.parent != Path(tempfile.gettempdir()) or not path.name.startswith("vllm-magics-"):
        return None
    try:
        st = os.lstat(path)
    except (OSError, ValueError):  # ValueError: a NUL in the name
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        return None
    return path
