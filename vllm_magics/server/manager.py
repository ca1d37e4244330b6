"""The server manager: one `vllm serve` process group and its lifecycle (no IPython, no display).

Modelled on jupyter_client's KernelManager: start, wait_ready, is_alive, stop (graceful, then
forced), restart; plus adopt, for a server this package started from an earlier kernel.

    from vllm_magics.server.plan import plan_serve
    from vllm_magics.server.manager import VllmServer
    server = VllmServer(plan_serve("Qwen/Qwen2.5-0.5B-Instruct"))
    server.start(); server.wait_ready(timeout=600)
    ...; server.stop()
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from vllm_magics.files import private_dir, read_json, write_json_private
from vllm_magics.server import process
from vllm_magics.errors import ServerAlreadyRunning, ServerStartError, ServerTimeout, VllmNotInstalled
from vllm_magics.status.probes import health_status
from vllm_magics.server.plan import ServePlan
from vllm_magics.server.progress import StartupProgress

DEFAULT_LOG_BYTES = 20_000_000
READY_POLL_S = 0.1  # detection delay is at most this plus one /health round trip


def default_runtime_dir() -> Path:
    """Where logs and state live: $VLLM_MAGICS_HOME, else ~/.cache/vllm_magics."""
    root = os.environ.get("VLLM_MAGICS_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "vllm_magics")
    return Path(root)


@dataclass
class ReadyInfo:
    seconds: float
    base_url: str


class VllmServer:
    """One managed `vllm serve`. States: new -> starting -> ready -> exited (or stopped)."""

    def __init__(self, plan: ServePlan, runtime_dir: Path | None = None, *, detach: bool = False,
                 shutdown_wait: float = 10.0, max_log_bytes: int = DEFAULT_LOG_BYTES):
        self.plan = plan
        self.detach = detach
        self.shutdown_wait = shutdown_wait
        self.max_log_bytes = max_log_bytes
        self.runtime_dir = Path(runtime_dir or default_runtime_dir())
        self.dir = self.runtime_dir / "servers" / str(plan.port)
        self.proc: process.SupervisedProcess | None = None
        self.started_at: float | None = None
        self.ready_at: float | None = None
        self.adopted = False
        self.last_stop: process.StopStep | None = None
        self.tmp_dir: Path | None = None

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

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        if self.proc is not None and self.is_alive():
            raise ServerAlreadyRunning(f"this server is already running (pid {self.pid})")
        exe = self.plan.argv[0]
        if shutil.which(exe) is None and not os.path.exists(exe):
            raise VllmNotInstalled(
                f"`{exe}` was not found. Install vLLM first: pip install \"vllm_magics[vllm]\" "
                "(on Colab: !pip install vllm), then run %vllm_serve again.")
        private_dir(self.dir)
        # A private TMPDIR: vLLM leaves ZeroMQ socket files behind there (removed on stop). Short,
        # under the system temp folder: a ZeroMQ ipc path longer than 107 bytes fails to bind.
        self.tmp_dir = Path(tempfile.mkdtemp(prefix="vllm-magics-"))
        for old in (self.log_path, Path(str(self.log_path) + ".1")):
            old.unlink(missing_ok=True)
        env = dict(os.environ)
        env.update(self.plan.env)
        env["TMPDIR"] = str(self.tmp_dir)
        self.proc = process.launch_supervised(
            self.plan.argv, env=env, log_path=self.log_path, state_path=self.dir / "state.json",
            max_log_bytes=self.max_log_bytes, detach=self.detach, cleanup=self.tmp_dir)
        self.started_at = time.time()
        self.ready_at = None
        self.adopted = False
        self._save_manifest()

    def _save_manifest(self) -> None:
        # Lets a later kernel adopt this server (it needs the key to talk to it): owner-only file.
        write_json_private(self.dir / "server.json", {
            "model": self.plan.model, "host": self.plan.host, "port": self.plan.port,
            "argv": self.plan.argv, "env": self.plan.env, "api_key": self.plan.api_key,
            "supervisor_pid": self.proc.supervisor_pid, "started_at": self.started_at,
            "ready_at": self.ready_at, "detach": self.detach, "tmp_dir": str(self.tmp_dir),
        })

    def is_alive(self) -> bool:
        return self.proc is not None and self.proc.is_alive()

    def exit_code(self) -> int | None:
        return self.proc.exit_code() if self.proc else None

    def is_ready(self, timeout: float = 1.0) -> bool:
        return self.is_alive() and health_status(self.base_url, timeout) == 200

    @property
    def state(self) -> str:
        if self.proc is None:
            return "new"
        if not self.is_alive():
            return "stopped" if self.last_stop else "exited"
        return "ready" if self.ready_at else "starting"

    def wait_ready(self, timeout: float = 900.0,
                   on_progress: Callable[[StartupProgress, list[str]], None] | None = None) -> ReadyInfo:
        """Block until /health answers 200. Raises ServerStartError (with diagnosis) as the
        process exits, ServerTimeout after `timeout` s (the server is left running)."""
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
            status = health_status(self.base_url, timeout=0.5)
            if status == 200 and self.is_alive():
                self.ready_at = time.time()
                self._save_manifest()
                progress.feed("Application startup complete.")
                if on_progress:
                    on_progress(progress, reader.read_new_lines())
                return ReadyInfo(time.monotonic() - t0, self.base_url)
            if time.monotonic() > deadline:
                raise self._start_error(
                    f"vLLM was not ready after {timeout:.0f} s (last phase: {progress.label}); it is still "
                    "running: %vllm_logs shows what it is doing, %vllm_stop stops it", cls=ServerTimeout)
            time.sleep(READY_POLL_S)

    def _wait_log_complete(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end and not self.proc.state().get("log_complete"):
            if not process.pid_alive(self.proc.supervisor_pid):
                return
            time.sleep(0.02)

    def _start_error(self, message: str, cls=ServerStartError) -> ServerStartError:
        from vllm_magics.server.diagnose import diagnose

        tail = "\n".join(process.tail_lines(self.log_path, 400))
        code = self.exit_code()
        if code == 0:
            message += " (exit code 0 does not mean success here: the engine stopped)"
        return cls(message, exit_code=code, log_path=self.log_path,
                   log_tail="\n".join(tail.splitlines()[-25:]), diagnoses=diagnose(tail, code))

    def stop(self, now: bool = False) -> process.StopStep:
        """SIGTERM to the whole group, wait `shutdown_wait` s, then SIGKILL what is left.
        Returns how far it had to go. Stopped means no process left in the group."""
        if self.proc is None:
            return process.StopStep.ALREADY_GONE
        step = self.proc.terminate(grace=0.0 if now else self.shutdown_wait)
        self.last_stop = step
        if self.tmp_dir is not None:
            shutil.rmtree(self.tmp_dir, ignore_errors=True)
        return step

    def restart(self, timeout: float = 900.0, on_progress=None) -> ReadyInfo:
        self.stop()
        self.start()
        return self.wait_ready(timeout, on_progress)

    def uptime(self) -> float | None:
        return time.time() - self.started_at if self.started_at and self.is_alive() else None

    def log_tail(self, n: int = 20) -> list[str]:
        return process.tail_lines(self.log_path, n)

    # -- adoption -----------------------------------------------------------------------------
    @classmethod
    def adopt(cls, runtime_dir: Path | None, port: int) -> "VllmServer | None":
        """The server this package started on `port` from another kernel, if it still runs."""
        runtime_dir = Path(runtime_dir or default_runtime_dir())
        d = runtime_dir / "servers" / str(port)
        manifest = read_json(d / "server.json")
        sup = manifest.get("supervisor_pid")
        if not sup or not process.pid_alive(sup):
            return None
        plan = ServePlan(manifest["model"], manifest["host"], manifest["port"], manifest["argv"],
                         manifest.get("env", {}), manifest.get("api_key"))
        server = cls(plan, runtime_dir, detach=manifest.get("detach", False))
        server.proc = process.SupervisedProcess(None, sup, d / "state.json", d / "server.log")
        if not server.is_alive():
            return None
        server.started_at = manifest.get("started_at")
        server.ready_at = manifest.get("ready_at")
        server.tmp_dir = Path(manifest["tmp_dir"]) if manifest.get("tmp_dir") else None
        server.adopted = True
        return server


class LogFollower:
    """Reads the lines appended to a log since the last call (follows rotation to a new file)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.offset = 0
        self.partial = b""
        self.inode = None

    def skip_to_end(self) -> None:
        try:
            st = os.stat(self.path)
        except OSError:
            return
        self.inode, self.offset, self.partial = st.st_ino, st.st_size, b""

    def read_new_lines(self, max_bytes: int = 1_000_000) -> list[str]:
        try:
            st = os.stat(self.path)
        except OSError:
            return []
        if self.inode is not None and (st.st_ino != self.inode or st.st_size < self.offset):
            self.offset, self.partial = 0, b""  # rotated
        self.inode = st.st_ino
        if st.st_size <= self.offset:
            return []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read(max_bytes)
        self.offset += len(data)
        data = self.partial + data
        *complete, self.partial = data.split(b"\n")
        return [line.decode(errors="replace") for line in complete]
