"""%vllm_serve, %vllm_stop, %vllm_logs: start, stop and read the managed server."""
from __future__ import annotations

import re
import time

from IPython.core.error import UsageError
from IPython.core.magic import line_magic, magics_class
from vllm_magics.notebook.args import argument, magic_arguments
from traitlets import Bool, Float, Integer, List, Unicode

from vllm_magics.notebook.base import DEFAULT_NAME, _parse, _split_passthrough, at_the_edge
from vllm_magics.notebook.serve_start import ServeStart

_FOLLOW_DEFAULT_S = 60.0


@magics_class
class ServeMagics(ServeStart):
    """Settings and magics that start and stop the servers (one, or several by --name)."""

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
    @argument("--name", default=None, help="Start another server beside the first, called NAME (its own port, "
              "key and log; %%ask --model NAME asks it)")
    @argument("--lora", action="append", default=None, metavar="NAME=PATH_OR_REPO", help="Serve a LoRA adapter "
              "beside the model (repeat for several); %%ask --model NAME asks it")
    @line_magic
    @at_the_edge("%vllm_serve")
    def vllm_serve(self, line=""):
        """Start `vllm serve MODEL` in the background and wait until it answers.

        Flags this magic does not own go to vLLM in the order given, with or without `--` (the model
        comes first). The old `--flag true|false` spelling of vLLM's on/off flags becomes `--flag` /
        `--no-flag` (said on the card). Example, the seed notebook's command as typed:

            %vllm_serve deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B --trust-remote-code --dtype half --max-model-len 16384 --enable-chunked-prefill false --tensor-parallel-size 1

        Several models at once: `--name NAME` starts another server beside the first (the next free port,
        its own key and log, a share of the GPU that lets them all fit); `--lora NAME=PATH` serves an adapter
        beside the model. `%%ask --model NAME` or `%%ask --compare A,B` asks them.
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
        from vllm_magics.server.sharing import share_in_argv

        host = args.host or self.host
        named = args.name is not None
        name = self._check_name(args.name) if named else DEFAULT_NAME  # a plain %vllm_serve is the default's
        hint = "" if name == DEFAULT_NAME else f" --name {name}"
        index = list(self.servers).index(name) if name in self.servers else None
        current = self.servers.get(name)
        running = current is not None and current.is_alive()
        if running and not args.restart:
            who = "vLLM server" if name == DEFAULT_NAME else f"server {name}"
            return self._show(self._card(current, f"A {who} is already running", notes=[
                f"%vllm_serve MODEL{hint} --restart replaces it; %vllm_stop{hint and ' ' + name} stops it."]))

        notes = []
        gpus = gpu_mod.query_gpus()
        share, told = (self._gpu_share(gpus, args.gpu_memory_utilization or share_in_argv(extra), name, notes)
                       if named else (None, None))

        def plan_on(port):
            try:
                return plan_serve(
                    args.model, host=host, port=port, dtype=args.dtype, max_model_len=args.max_model_len,
                    gpu_memory_utilization=args.gpu_memory_utilization or share,
                    api_key=False if args.no_api_key else args.api_key, extra_args=extra,
                    gpus=gpus, vllm_command=list(self.vllm_command), lora=args.lora)
            except ValueError as exc:
                raise UsageError(str(exc)) from None

        plan = plan_on(args.port or self.port)  # the whole line is checked before anything is stopped
        if running and not args.dry_run:
            current.stop()
            self._close_tunnels_to(current.plan.port)
            self._put(name, None)
        adopted, differs = (self._adoptable(plan) if named and args.port is None and not args.restart
                            else (None, None))
        notes += [differs] if differs else []
        if adopted is not None:
            port = adopted.plan.port
            if args.dry_run:
                notes.append(f"Would adopt the server for {args.model} on port {port} as {name}.")
                adopted = None
            else:
                adopted.take_over()
                notes.append(f"vllm_magics started it before on port {port}; this kernel manages it now as {name}.")
        elif named and args.port is None:
            port = self._next_port(host, self.port, name)  # beside the others: the next port nobody holds
            if port is None:
                raise UsageError(f"no free port from {self.port} on: pass --port")
        else:
            port = args.port or self._first_unheld(self.port, name)
            if args.port is not None:
                self._check_port_is_not_held(port, name)
            try:
                port, adopted = self._choose_port(host, port, args, notes, plan, name)
            except ValueError as exc:  # a --host that is no address
                raise UsageError(str(exc)) from None
        if adopted is not None and not args.dry_run:
            self._put(name, adopted, index)
            return self._show(self._card(adopted, "Adopted the vLLM server already running on this port" +
                                         (f" as {name}" if named else ""), notes=notes))
        if port != plan.port:
            plan = plan_on(port)
        if told:
            from vllm_magics.server.plan import ChosenDefault

            plan.defaults.insert(0, ChosenDefault(*told))
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
        previous = self.servers.get(name)
        self._put(name, server, index)
        ready, progress_display = self._start_and_wait(name, server, timeout, notes, previous)
        headline = "vLLM is ready" + (f": server {name}" if named else "") + (
            " (detached: it outlives this kernel)" if args.detach else "")
        card = self._card(server, headline, ready.seconds, notes)
        if progress_display is not None:
            progress_display.update(card)  # the live progress turns into the card: one output
        else:
            self._show(card)

    # -- %vllm_stop --------------------------------------------------------------------------
    @magic_arguments()
    @argument("name", nargs="?", default=None, help="The server to stop (default: the first running one)")
    @argument("--all", action="store_true", help="Stop every server this kernel manages")
    @argument("--now", action="store_true", help="SIGKILL at once instead of a graceful stop")
    @line_magic
    @at_the_edge("%vllm_stop")
    def vllm_stop(self, line=""):
        """Stop a managed vLLM server (NAME, the first one, or --all): SIGTERM to its process group, then
        SIGKILL what is left."""
        args = _parse(self.vllm_stop, line)
        if args.all and args.name:
            raise UsageError("give a server's name or --all, not both")
        if args.all:
            if not self.servers:
                print("No vLLM server is managed by this kernel.")
            for name, server in list(self.servers.items()):
                self._stop_one(server, args.now, f"server {name}")
            return
        if args.name is not None:
            name, server = args.name, self._server_named(args.name)
        else:
            name, server = self._default_entry()
        if server is None:
            print("No vLLM server is managed by this kernel.")
            return
        self._stop_one(server, args.now, "vLLM server" if args.name is None and name == DEFAULT_NAME
                       else f"server {name}")

    def _stop_one(self, server, now: bool, what: str) -> None:
        t0 = time.monotonic()
        pid = server.pid
        step = server.stop(now=now)
        left = server.proc.members() if server.proc else []
        code = server.exit_code()
        msg = f"Stopped the {what} (pid {pid}): {step.value} in {time.monotonic() - t0:.1f} s"
        if code is not None:
            msg += f", exit code {code}"
        print(msg + ("." if not left else f"; still alive: {left}"))
        print(f"Its log stays at {server.log_path}")
        if not any(s.plan.port == server.plan.port and s.is_alive() for s in self.servers.values()):
            self._close_tunnels_to(server.plan.port)

    # -- %vllm_logs --------------------------------------------------------------------------
    @magic_arguments()
    @argument("name", nargs="?", default=None, help="The server whose log to show (default: the first running one)")
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
        server = self._server_named(args.name) if args.name is not None else self.server
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
