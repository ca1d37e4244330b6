"""%vllm_serve, %vllm_stop, %vllm_logs: start, stop and read the managed server."""
from __future__ import annotations

import re
import time

from IPython.core.error import UsageError
from IPython.core.magic import line_magic, magics_class
from vllm_magics.notebook.args import argument, magic_arguments
from traitlets import Bool, Float, Integer, List, Unicode

from vllm_magics.notebook.base import MagicsBase, _parse, _split_passthrough, at_the_edge

_FOLLOW_DEFAULT_S = 60.0


@magics_class
class ServeMagics(MagicsBase):
    """Settings and magics that start and stop the server."""

    host = Unicode("127.0.0.1", help="Address the server binds (127.0.0.1: this machine only; "
                   "use %ngrok_up to share it).").tag(config=True)
    port = Integer(8000, help="First port to try for the server.").tag(config=True)
    strict_port = Bool(False, help="Fail when the port is taken instead of using the next free one."
                       ).tag(config=True)
    startup_timeout = Float(1800.0, help="Seconds to wait for readiness (a first start downloads "
                            "the model: minutes on Colab).").tag(config=True)
    shutdown_wait_time = Float(10.0, help="Seconds between SIGTERM and SIGKILL when stopping.").tag(config=True)
    vllm_command = List(Unicode(), default_value=["vllm"], help="The command that runs vLLM's CLI, "
                        "e.g. ['/path/to/venv/bin/vllm'].").tag(config=True)
    max_log_bytes = Integer(20_000_000, help="The server log is rotated past this size.").tag(config=True)
    progress_updates_per_second = Float(4.0, help="How often the startup display refreshes.").tag(config=True)

    def _stop_at_exit(self):
        server = self.server
        # atexit handlers carry over os.fork: a forked child that exits must leave its parent's server be.
        if server is not None and not server.detach and server.owner() == "this process" and server.is_alive():
            server.stop()

    def _card(self, server, headline, ready_seconds=None, notes=()):
        from vllm_magics.notebook.views.cards import ServerCard
        from vllm_magics.redact import mask_secret

        return ServerCard(headline=headline, model=server.plan.model, base_url=server.base_url,
                          api_key_masked=mask_secret(server.api_key), pid=server.pid,
                          log_path=str(server.log_path), ready_seconds=ready_seconds,
                          defaults=list(server.plan.defaults), notes=list(notes))

    # -- %vllm_serve -------------------------------------------------------------------------
    @magic_arguments()
    @argument("model", nargs="?", help="Hugging Face model id or local folder, e.g. "
              "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B")
    @argument("--port", type=int, default=None, help="Port (default 8000; the next free one if taken)")
    @argument("--host", default=None, help="Address to bind (default 127.0.0.1)")
    @argument("--dtype", default=None, help="auto, half, bfloat16, float32 (default: half on GPUs "
              "below compute capability 8.0 such as the T4)")
    @argument("--max-model-len", default=None, help="Context length (default on a GPU: 16384, lowered "
              "if it does not fit)")
    @argument("--gpu-memory-utilization", type=float, default=None, help="Fraction of GPU memory vLLM may use")
    @argument("--api-key", default=None, help="Use this API key (default: a random one, never printed whole)")
    @argument("--no-api-key", action="store_true", help="Serve without an API key (local use only)")
    @argument("--timeout", type=float, default=None, help="Seconds to wait for readiness")
    @argument("--dry-run", action="store_true", help="Show the command and defaults; start nothing")
    @argument("--detach", action="store_true", help="Keep the server running after this kernel exits")
    @argument("--restart", action="store_true", help="Replace a running server")
    @argument("--strict-port", action="store_true", help="Fail if the port is taken instead of moving on")
    @line_magic
    @at_the_edge("%vllm_serve")
    def vllm_serve(self, line=""):
        """Start `vllm serve MODEL` in the background and wait until it answers.

        Flags this magic does not own go to vLLM in the order given, with or without `--` (the model
        comes first). The old `--flag true|false` spelling of vLLM's on/off flags becomes `--flag` /
        `--no-flag` (said on the card). Example, the seed notebook's command as typed:

            %vllm_serve deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B --trust-remote-code --dtype half --max-model-len 16384 --enable-chunked-prefill false --tensor-parallel-size 1
        """
        head, extra = _split_passthrough(line)
        # The magic's own options are read; the rest (as a person pastes a `vllm serve` line) is vLLM's.
        args, for_vllm = self.vllm_serve.parser.parse_known_args(head)
        extra = for_vllm + extra
        if not args.model:
            raise UsageError("which model? e.g. %vllm_serve Qwen/Qwen2.5-0.5B-Instruct (see %vllm_serve?)")
        if args.api_key and args.no_api_key:
            raise UsageError("--api-key and --no-api-key contradict each other: choose one")
        if args.host is not None and not re.fullmatch(r"[A-Za-z0-9._:%\[\]-]*", args.host):
            raise UsageError(f"--host {args.host!r}: give an address such as 127.0.0.1, 0.0.0.0 or a host name")
        if args.port is not None and not 1 <= args.port <= 65535:
            raise UsageError(f"--port {args.port}: a port is a number from 1 to 65535 (a taken port moves on "
                             "to the next free one by itself)")
        from vllm_magics.server import gpu as gpu_mod
        from vllm_magics.server.plan import plan_serve
        from vllm_magics.server.manager import VllmServer

        host = args.host or self.host
        port = args.port or self.port
        current = self._current()
        if current is not None:
            if not args.restart:
                return self._show(self._card(current, "A vLLM server is already running", notes=[
                    "%vllm_serve MODEL --restart replaces it; %vllm_stop stops it."]))
            if not args.dry_run:
                current.stop()
                self.server = None

        notes = []
        try:
            port, adopted = self._choose_port(host, port, args, notes)
        except ValueError as exc:  # a --host that is no address
            raise UsageError(str(exc)) from None
        if adopted is not None:
            self.server = adopted
            return self._show(self._card(adopted, "Adopted the vLLM server already running on this port",
                                         notes=notes))

        try:
            plan = plan_serve(
                args.model, host=host, port=port, dtype=args.dtype, max_model_len=args.max_model_len,
                gpu_memory_utilization=args.gpu_memory_utilization,
                api_key=False if args.no_api_key else args.api_key, extra_args=extra,
                gpus=gpu_mod.query_gpus(), vllm_command=list(self.vllm_command))
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        notes += plan.notes  # warnings about exposure, the GPU already in use, respelled flags
        if args.dry_run:
            from vllm_magics.notebook.views.cards import StartupView

            view = StartupView(plan.model, plan.command_line(), plan.defaults, "Dry run: nothing started",
                               notes=notes)
            return self._show(view)

        timeout = args.timeout or self.startup_timeout
        server = VllmServer(plan, self._runtime_dir(), detach=args.detach,
                            shutdown_wait=self.shutdown_wait_time, max_log_bytes=self.max_log_bytes)
        # Managed from the start: a server still starting at the timeout keeps running, and the message's
        # %vllm_logs / %vllm_stop must reach it. _start_and_wait gives `previous` back when it stops it.
        previous, self.server = self.server, server
        ready, progress_display = self._start_and_wait(server, timeout, notes, previous)
        headline = "vLLM is ready" + (" (detached: it outlives this kernel)" if args.detach else "")
        card = self._card(server, headline, ready.seconds, notes)
        if progress_display is not None:
            progress_display.update(card)  # the live progress turns into the card: one output
        else:
            self._show(card)

    def _choose_port(self, host, port, args, notes):
        """(port to use, a server to adopt or None). A busy port: adopt our own server of the same model
        (started by this kernel, or detached from one that is gone), else say who holds it and move to
        the next free port (or fail with --strict-port). A dry run only reports."""
        from vllm_magics.server.manager import VllmServer
        from vllm_magics.server.ports import next_free_port, port_holder, port_is_free

        if port_is_free(host, port):
            return port, None
        ours = VllmServer.find(self._runtime_dir(), port)
        if ours is not None and not ours.may_take_over():
            # Another live kernel manages it (it would stop it under us): leave it alone.
            notes.append(f"Port {port} serves {ours.plan.model} for another notebook's kernel.")
            ours = None
        if ours is not None:
            how = ("this kernel started it" if ours.owner() == "this process" else
                   "it was started with --detach from a kernel that is gone")
            if ours.plan.model == args.model and not args.restart:
                if not args.dry_run:
                    ours.take_over()
                    notes.append(f"vllm_magics started it: {how}; this kernel manages it now.")
                    return port, ours
                notes.append(f"Would adopt the server for {ours.plan.model} on port {port} ({how}).")
                return port, None
            if not args.restart:
                raise UsageError(f"port {port} already serves {ours.plan.model} (started by vllm_magics: {how}; "
                                 f"pid {ours.pid}): add --restart to replace it with {args.model}")
            if args.dry_run:
                notes.append(f"Would stop the server for {ours.plan.model} on port {port}.")
                return port, None
            ours.stop()
            if port_is_free(host, port):
                return port, None
        holder = port_holder(port)
        who = holder.describe() if holder else "another process"
        if args.strict_port or self.strict_port:
            raise UsageError(f"port {port} is taken by {who}: stop it, or choose another "
                             "--port (or drop --strict-port to use the next free one)")
        new_port = next_free_port(host, port + 1)
        if new_port is None:
            raise UsageError(f"port {port} is taken by {who} and no free port follows it")
        notes.append(f"Port {port} is taken by {who}; using port {new_port} instead.")
        return new_port, None

    def _start_and_wait(self, server, timeout, notes, previous=None):
        """Start and show live progress (the manager lowers our own --max-model-len default once if vLLM
        says it does not fit: shown as a note); failures become one-line UsageErrors with the next step.
        `self.server` is `server` throughout; back to `previous` when the server is not left running."""
        from vllm_magics.errors import ServerStartError, ServerTimeout, VllmMagicsError, VllmNotInstalled
        from vllm_magics.notebook.views.cards import StartupView

        view = StartupView(server.plan.model, server.plan.command_line(), server.plan.defaults, notes=notes)
        notebook = self._in_notebook()
        handle = None
        if notebook:
            from IPython.display import display

            handle = display(view, display_id=True)
        else:
            print(view.text().rsplit("\n", 1)[0], flush=True)
        last = [0.0, None]
        min_gap = 1.0 / max(self.progress_updates_per_second, 0.1)

        def on_progress(progress, lines):
            view.phase_label, view.fraction, view.detail = progress.label, progress.fraction, progress.detail
            view.recent = (view.recent + [ln for ln in lines if ln.strip()])[-8:]
            if notebook:
                now = time.monotonic()
                if now - last[0] >= min_gap or progress.phase == "ready":
                    last[0] = now
                    handle.update(view)
            elif progress.phase != last[1]:
                last[1] = progress.phase
                print(f"  [{view.elapsed():5.1f}s] {progress.label}: {progress.detail}", flush=True)

        def on_retry(old, new):
            note = f"--max-model-len {old} did not fit; vLLM suggests {new}: restarting with --max-model-len {new}."
            notes.append(note)
            view.command, view.defaults = server.plan.command_line(), server.plan.defaults
            last[1] = None
            if notebook:
                handle.update(view)
            else:
                print(f"  note: {note}", flush=True)

        try:
            return server.start_and_wait(timeout, on_progress, on_retry=on_retry), handle
        except BaseException as exc:
            if handle is not None:
                handle.update(view)  # the last state stays visible above the failure report
            if not isinstance(exc, ServerTimeout):  # a timeout leaves it running (and managed)
                if isinstance(exc, (KeyboardInterrupt, ServerStartError)) or not server.is_alive():
                    self.server = previous
            if isinstance(exc, KeyboardInterrupt):
                server.stop()
                raise UsageError("interrupted: the server was stopped before it was ready "
                                 f"(its log: {server.log_path})") from None
            if isinstance(exc, ServerTimeout):
                self._show_failure(exc)
                raise UsageError(f"{exc}: %vllm_logs shows what it is doing, %vllm_stop stops it") from None
            if isinstance(exc, ServerStartError):
                server.stop()
                self._show_failure(exc)
                first = exc.diagnoses[0].summary if exc.diagnoses else "see the log lines above"
                raise UsageError(f"{exc} — {first}") from None
            if isinstance(exc, VllmNotInstalled):
                from vllm_magics.doctor.checks import doctor_text

                print(doctor_text(model=server.plan.model), flush=True)  # what to install, for this machine
                raise UsageError(f"{exc}; %vllm_install picks the build that fits, then run %vllm_serve again") from None
            if isinstance(exc, (VllmMagicsError, PermissionError)):  # PermissionError: an unsafe runtime folder
                raise UsageError(str(exc)) from None
            raise

    def _show_failure(self, exc):
        from vllm_magics.notebook.views.cards import FailureReport

        self._show(FailureReport(headline=str(exc), exit_code=exc.exit_code,
                                 log_path=str(exc.log_path) if exc.log_path else None,
                                 diagnoses=exc.diagnoses, log_tail=exc.log_tail))

    # -- %vllm_stop --------------------------------------------------------------------------
    @magic_arguments()
    @argument("--now", action="store_true", help="SIGKILL at once instead of a graceful stop")
    @line_magic
    @at_the_edge("%vllm_stop")
    def vllm_stop(self, line=""):
        """Stop the managed vLLM server: SIGTERM to its process group, then SIGKILL what is left."""
        args = _parse(self.vllm_stop, line)
        server = self.server
        if server is None:
            print("No vLLM server is managed by this kernel.")
            return
        t0 = time.monotonic()
        pid = server.pid
        step = server.stop(now=args.now)
        left = server.proc.members() if server.proc else []
        code = server.exit_code()
        msg = f"Stopped the vLLM server (pid {pid}): {step.value} in {time.monotonic() - t0:.1f} s"
        if code is not None:
            msg += f", exit code {code}"
        print(msg + ("." if not left else f"; still alive: {left}"))
        print(f"Its log stays at {server.log_path}")

    # -- %vllm_logs --------------------------------------------------------------------------
    @magic_arguments()
    @argument("-n", "--lines", type=int, default=40, help="How many lines (default 40)")
    @argument("--follow", nargs="?", type=float, const=_FOLLOW_DEFAULT_S, default=None, metavar="SECONDS",
              help=f"Keep printing new lines for SECONDS (default {_FOLLOW_DEFAULT_S:.0f}), until "
                   "interrupted or the server exits")
    @line_magic
    @at_the_edge("%vllm_logs")
    def vllm_logs(self, line=""):
        """Show the server's log (it is a file on disk; the path is printed first)."""
        args = _parse(self.vllm_logs, line)
        if args.lines < 0:
            raise UsageError("-n must be 0 or more")
        server = self.server
        if server is None:
            raise UsageError("no server has been started in this kernel: %vllm_serve MODEL starts one")
        from vllm_magics.server.logfile import LogFollower, tail_lines

        print(f"==> {server.log_path} ({server.state}) <==")
        if server.log_write_error:
            print(f"(the log could not be written, {server.log_write_error}: output since then is lost)")
        for ln in tail_lines(server.log_path, args.lines):
            print(ln)
        if args.follow is None:
            return
        if args.follow <= 0:
            raise UsageError("--follow takes a positive number of seconds")
        follower = LogFollower(server.log_path)
        follower.skip_to_end()  # what was just shown
        end = time.monotonic() + args.follow
        try:
            while time.monotonic() < end:
                for ln in follower.read_new_lines():
                    print(ln, flush=True)
                if not server.is_alive():
                    print(f"-- the server exited (code {server.exit_code()}) --")
                    return
                time.sleep(0.2)
            print(f"-- stopped following after {args.follow:.0f} s --")
        except KeyboardInterrupt:
            print("-- stopped following --")
