"""The magics: parse arguments, call the plain modules, display what they return.

Only IPython and traitlets are imported at module level (already loaded in any IPython), so
`%load_ext vllm_magics` stays instant; everything else is imported when a magic runs.
"""
from __future__ import annotations

import atexit
import json
import os
import time

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments
from traitlets import Bool, Float, Integer, List, Unicode

_FOLLOW_DEFAULT_S = 60.0


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


@magics_class
class VllmMagics(Magics):
    """Start, watch and stop a vLLM server from IPython. Settings: %config VllmMagics."""

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
    runtime_dir = Unicode("", help="Where logs and server state live (default: $VLLM_MAGICS_HOME or "
                          "~/.cache/vllm_magics).").tag(config=True)
    max_log_bytes = Integer(20_000_000, help="The server log is rotated past this size.").tag(config=True)
    progress_updates_per_second = Float(4.0, help="How often the startup display refreshes.").tag(config=True)
    # Defaults for %%ask (each can be given per cell too).
    url = Unicode("", help="%%ask sends to this OpenAI-compatible server instead of the managed one, "
                  "e.g. http://127.0.0.1:8000/v1").tag(config=True)
    api_key_env = Unicode("", help="Environment variable holding the API key for `url`.").tag(config=True)
    model = Unicode("", help="Model for %%ask (default: the first one the server lists).").tag(config=True)
    system = Unicode("", help="System prompt for %%ask.").tag(config=True)
    temperature = Float(None, allow_none=True, help="Sampling temperature for %%ask.").tag(config=True)
    top_p = Float(None, allow_none=True, help="top_p for %%ask.").tag(config=True)
    max_tokens = Integer(None, allow_none=True, help="max_tokens for %%ask.").tag(config=True)
    seed = Integer(None, allow_none=True, help="Sampling seed for %%ask.").tag(config=True)
    concurrency = Integer(16, help="Requests in flight at once for %%ask --each.").tag(config=True)
    request_timeout = Float(600.0, help="Seconds %%ask waits for the server to send something.").tag(config=True)
    hide_reasoning = Bool(False, help="Leave the reasoning block out of %%ask's display.").tag(config=True)
    stream_updates_per_second = Float(15.0, help="How often a streaming answer is redrawn.").tag(config=True)
    # %ngrok_up
    ngrok_path = Unicode("", help="The ngrok agent binary (default: pyngrok's, downloaded on first use)."
                         ).tag(config=True)
    ngrok_config_path = Unicode("", help="Where the agent config (with the token, mode 0600) is written "
                                "(default: <runtime_dir>/ngrok/agent.yml).").tag(config=True)
    ngrok_startup_timeout = Float(20.0, help="Seconds the ngrok agent may take to come up.").tag(config=True)

    def __init__(self, shell=None, **kwargs):
        super().__init__(shell=shell, **kwargs)
        self.server = None  # vllm_magics.server.VllmServer
        self._conversations = None  # vllm_magics.ask.Conversations, made on first %%ask
        self._vllm_urls: dict[str, bool] = {}  # base URL -> is it a vLLM server
        self._last_metrics: dict = {}  # base URL -> MetricsSnapshot (tokens/s needs two samples)
        self.tunnels = None  # vllm_magics.tunnel.TunnelManager, made by %ngrok_up
        atexit.register(self._stop_at_exit)

    # -- helpers -----------------------------------------------------------------------------
    def _runtime_dir(self):
        from vllm_magics.server import default_runtime_dir

        return self.runtime_dir or default_runtime_dir()

    def _in_notebook(self) -> bool:
        # Terminal IPython and plain InteractiveShell print lines; kernels get live display updates.
        return self.shell is not None and getattr(self.shell, "kernel", None) is not None

    def _stop_at_exit(self):
        server = self.server
        if server is not None and not server.detach and server.is_alive():
            server.stop()

    def _current(self):
        if self.server is not None and self.server.is_alive():
            return self.server
        return None

    def _card(self, server, headline, ready_seconds=None, notes=()):
        from vllm_magics.display import ServerCard
        from vllm_magics.plan import mask_secret

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
    def vllm_serve(self, line=""):
        """Start `vllm serve MODEL` in the background and wait until it answers.

        Anything after `--` goes to vLLM unchanged. Example:

            %vllm_serve deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B -- --reasoning-parser deepseek_r1
        """
        head, extra = _split_passthrough(line)
        args = self.vllm_serve.parser.parse_args(head)
        if not args.model:
            raise UsageError("which model? e.g. %vllm_serve Qwen/Qwen2.5-0.5B-Instruct (see %vllm_serve?)")
        if args.api_key and args.no_api_key:
            raise UsageError("--api-key and --no-api-key contradict each other: choose one")
        from vllm_magics import gpu as gpu_mod
        from vllm_magics.plan import plan_serve
        from vllm_magics.ports import next_free_port, port_holder, port_is_free
        from vllm_magics.server import VllmServer

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
        if not port_is_free(host, port) and not args.dry_run:
            adopted = VllmServer.adopt(self._runtime_dir(), port)
            if adopted is not None and not args.restart and adopted.plan.model == args.model:
                self.server = adopted
                return self._show(self._card(adopted, "Adopted the vLLM server already running on this port",
                                             notes=["Started by vllm_magics in an earlier kernel."]))
            if adopted is not None and args.restart:
                adopted.stop()
            elif adopted is not None:
                raise UsageError(f"port {port} already serves {adopted.plan.model} (started by vllm_magics, "
                                 f"pid {adopted.pid}): add --restart to replace it with {args.model}")
            if not port_is_free(host, port):
                holder = port_holder(port)
                who = holder.describe() if holder else "another process"
                if args.strict_port or self.strict_port:
                    raise UsageError(f"port {port} is taken by {who}: stop it, or choose another "
                                     "--port (or drop --strict-port to use the next free one)")
                new_port = next_free_port(host, port + 1)
                if new_port is None:
                    raise UsageError(f"port {port} is taken by {who} and no free port follows it")
                notes.append(f"Port {port} is taken by {who}; using port {new_port} instead.")
                port = new_port

        try:
            plan = plan_serve(
                args.model, host=host, port=port, dtype=args.dtype, max_model_len=args.max_model_len,
                gpu_memory_utilization=args.gpu_memory_utilization,
                api_key=False if args.no_api_key else args.api_key, extra_args=extra,
                gpus=gpu_mod.query_gpus(), vllm_command=list(self.vllm_command))
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        if args.dry_run:
            from vllm_magics.display import StartupView

            view = StartupView(plan.model, plan.command_line(), plan.defaults, "Dry run: nothing started",
                               notes=notes)
            return self._show(view)

        timeout = args.timeout or self.startup_timeout
        server = VllmServer(plan, self._runtime_dir(), detach=args.detach,
                            shutdown_wait=self.shutdown_wait_time, max_log_bytes=self.max_log_bytes)
        ready = self._start_and_wait(server, timeout, notes)
        self.server = server
        headline = "vLLM is ready" + (" (detached: it outlives this kernel)" if args.detach else "")
        self._show(self._card(server, headline, ready.seconds, notes))

    def _start_and_wait(self, server, timeout, notes):
        """Start, show progress, and lower our own --max-model-len default once if vLLM says it
        does not fit."""
        from vllm_magics.errors import ServerStartError, ServerTimeout, VllmMagicsError
        from vllm_magics.plan import suggested_max_model_len

        while True:
            try:
                server.start()
            except VllmMagicsError as exc:
                raise UsageError(str(exc)) from None
            try:
                return self._wait_with_progress(server, timeout, notes)
            except KeyboardInterrupt:
                server.stop()
                raise UsageError("interrupted: the server was stopped before it was ready "
                                 f"(its log: {server.log_path})") from None
            except ServerTimeout as exc:
                self._show_failure(exc)
                raise UsageError(str(exc)) from None
            except ServerStartError as exc:
                server.stop()
                suggested = None
                if server.plan.default_max_model_len:
                    from pathlib import Path

                    suggested = suggested_max_model_len(Path(server.log_path).read_text(errors="replace"))
                if suggested and suggested < server.plan.default_max_model_len:
                    notes.append(f"--max-model-len {server.plan.default_max_model_len} did not fit; vLLM "
                                 f"suggests {suggested}: restarting with --max-model-len {suggested}.")
                    server.plan = server.plan.with_max_model_len(suggested)
                    continue
                self._show_failure(exc)
                first = exc.diagnoses[0].summary if exc.diagnoses else "see the log lines above"
                raise UsageError(f"{exc} — {first}") from None

    def _wait_with_progress(self, server, timeout, notes):
        from vllm_magics.display import StartupView

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

        try:
            return server.wait_ready(timeout, on_progress)
        finally:
            if handle is not None:
                handle.update(view)

    def _show_failure(self, exc):
        from vllm_magics.display import FailureReport

        self._show(FailureReport(headline=str(exc), exit_code=exc.exit_code,
                                 log_path=str(exc.log_path) if exc.log_path else None,
                                 diagnoses=exc.diagnoses, log_tail=exc.log_tail))

    def _show(self, obj):
        if self._in_notebook():
            from IPython.display import display

            display(obj)
        else:
            print(obj.text(), flush=True)

    # -- %vllm_stop --------------------------------------------------------------------------
    @magic_arguments()
    @argument("--now", action="store_true", help="SIGKILL at once instead of a graceful stop")
    @line_magic
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
    def vllm_logs(self, line=""):
        """Show the server's log (it is a file on disk; the path is printed first)."""
        args = _parse(self.vllm_logs, line)
        if args.lines < 0:
            raise UsageError("-n must be 0 or more")
        server = self.server
        if server is None:
            raise UsageError("no server has been started in this kernel: %vllm_serve MODEL starts one")
        from vllm_magics import process
        from vllm_magics.server import LogFollower

        print(f"==> {server.log_path} ({server.state}) <==")
        for ln in process.tail_lines(server.log_path, args.lines):
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


    # -- %%ask -------------------------------------------------------------------------------
    @magic_arguments()
    @argument("--model", default=None, help="Model name (default: the first the server lists)")
    @argument("--system", default=None, help="System prompt")
    @argument("--temperature", type=float, default=None, help="Sampling temperature")
    @argument("--top-p", type=float, default=None, help="Nucleus sampling top_p")
    @argument("--max-tokens", type=int, default=None, help="Most tokens to generate")
    @argument("--seed", type=int, default=None, help="Sampling seed")
    @argument("--stop", action="append", default=None, help="Stop string (repeat for several)")
    @argument("--params", default=None, metavar="JSON|VAR", help='Extra request fields: a JSON object, e.g. '
              '\'{"top_k": 20}\', or the name of a dict variable')
    @argument("--no-stream", action="store_true", help="Wait for the whole answer instead of streaming")
    @argument("--hide-reasoning", action="store_true", help="Do not show the reasoning block")
    @argument("--out", default=None, metavar="VAR", help="Also store the Answer in this variable")
    @argument("--url", default=None, help="Any OpenAI-compatible server, e.g. http://host:8000/v1")
    @argument("--api-key-env", default=None, metavar="NAME", help="Environment variable holding the key for --url")
    @argument("-c", "--continue", dest="cont", action="store_true", help="Continue the last conversation")
    @argument("--thread", default=None, metavar="NAME", help="Continue (or start) a named conversation")
    @argument("--no-template", action="store_true", help="Send the cell as written (no {{ }} templating)")
    @argument("--each", default=None, metavar="NAME", help="Ask once per item of the iterable NAME ({{ item }})")
    @argument("--concurrency", type=int, default=None, help="Requests in flight at once with --each")
    @argument("--timeout", type=float, default=None, help="Seconds to wait for the server to send something")
    @cell_magic
    def ask(self, line="", cell=""):
        """Send the cell to the model and show the answer as it streams, reasoning apart.

        The cell is a jinja2 template over your variables ({{ text }}, {% for %}); code in
        backticks or fences is sent as written. Example:

            %%ask --temperature 0
            What is the capital of {{ country }}?
        """
        from vllm_magics import ask as ask_mod

        args = _parse(self.ask, line)
        if not (cell or "").strip():
            raise UsageError("%%ask needs a prompt in the cell body, e.g.\n%%ask\nWhat is vLLM?")
        if args.each and (args.cont or args.thread):
            raise UsageError("--each sends independent prompts: it cannot continue a conversation")
        params = self._request_params(args)
        client = self._ask_client(args)
        if self._is_vllm(client):
            params.setdefault("return_token_ids", True)  # exact reasoning token counts
        model = args.model or self.model or self._managed_model(client)
        system = args.system if args.system is not None else (self.system or None)
        ns = self.shell.user_ns if self.shell is not None else {}
        if self._conversations is None:
            self._conversations = ask_mod.Conversations()
        convs = self._conversations

        if args.each:
            return self._ask_each(args, cell, ns, params, client, model, system)
        try:
            prompt = cell.strip("\n") if args.no_template else ask_mod.render_prompt(cell.strip("\n"), ns)
        except ask_mod.TemplateError as exc:
            raise UsageError(str(exc)) from None
        thread = args.thread or (convs.last or convs.DEFAULT if args.cont else None)
        history = convs.history(thread) if thread else []
        messages = ask_mod.build_messages(prompt, system, history)
        from vllm_magics.display import LiveAnswer

        live = LiveAnswer(self._in_notebook(), hide_reasoning=args.hide_reasoning or self.hide_reasoning,
                          updates_per_second=self.stream_updates_per_second)
        answer = None
        try:
            answer = ask_mod.ask(client, messages, params, model=model, stream=not args.no_stream,
                                 on_update=live.update, answer=live.answer)
        except KeyboardInterrupt:
            answer = live.answer
            live.finish(answer)
            self._store_answer(answer, args.out)
            raise UsageError("interrupted: the partial answer stays above (and in _ask)") from None
        except ask_mod.AskError as exc:
            if exc.answer is not None and (exc.answer.text or exc.answer.reasoning):
                live.finish(exc.answer)
                self._store_answer(exc.answer, args.out)
            raise UsageError(str(exc)) from None
        live.finish(answer)
        convs.record(thread or convs.DEFAULT, prompt, answer)
        self._store_answer(answer, args.out)

    def _request_params(self, args) -> dict:
        params = {}
        for key, given, default in (("temperature", args.temperature, self.temperature),
                                    ("top_p", args.top_p, self.top_p),
                                    ("max_tokens", args.max_tokens, self.max_tokens),
                                    ("seed", args.seed, self.seed)):
            value = given if given is not None else default
            if value is not None:
                params[key] = value
        if args.stop:
            params["stop"] = args.stop
        if args.params:
            ns = self.shell.user_ns if self.shell is not None else {}
            if args.params.isidentifier() and isinstance(ns.get(args.params), dict):
                extra = ns[args.params]  # a dict variable: no quoting trouble with JSON on the line
            else:
                try:
                    extra = json.loads(args.params)
                except ValueError as exc:
                    raise UsageError(f"--params must be a JSON object or the name of a dict variable: {exc}"
                                     ) from None
            if not isinstance(extra, dict):
                raise UsageError("--params must be a JSON object, e.g. '{\"top_k\": 20}'")
            params.update(extra)
        if args.max_tokens is not None and args.max_tokens < 1:
            raise UsageError("--max-tokens must be at least 1")
        return params

    def _ask_client(self, args):
        from vllm_magics.chat import ChatClient

        timeout = args.timeout or self.request_timeout
        url = args.url or self.url
        key_env = args.api_key_env or self.api_key_env
        key = None
        if key_env:
            key = os.environ.get(key_env)
            if not key:
                raise UsageError(f"the environment variable {key_env} is not set (it should hold the API key)")
        if url:
            server = self._current()
            if key is None and server is not None and url.rstrip("/").removesuffix("/v1") == server.base_url:
                key = server.api_key
            return ChatClient(url, key, timeout=timeout)
        server = self.server
        if server is None:
            raise UsageError("no server: start one with %vllm_serve MODEL, or pass --url")
        if not server.is_alive():
            raise UsageError(f"the vLLM server has exited (code {server.exit_code()}): %vllm_logs shows why, "
                             "%vllm_serve starts it again")
        return ChatClient(server.base_url, key or server.api_key, timeout=timeout)

    def _managed_model(self, client) -> str | None:
        """The managed server's model name (known: no /v1/models round trip per question)."""
        server = self.server
        if server is not None and client.base_url == server.base_url:
            from vllm_magics.plan import served_model_name

            return served_model_name(server.plan)
        return None

    def _is_vllm(self, client) -> bool:
        """Whether the server is vLLM (it then accepts vLLM-only request fields). Asked once per URL."""
        server = self.server
        if server is not None and client.base_url == server.base_url:
            return True
        cache = self._vllm_urls
        if client.base_url not in cache:
            from vllm_magics.health import get_json

            try:
                status, body = get_json(client.base_url, "/version", timeout=2.0)
                cache[client.base_url] = status == 200 and isinstance(body, dict) and "version" in body
            except OSError:
                cache[client.base_url] = False
        return cache[client.base_url]

    def _store_answer(self, answer, out):
        if self.shell is None:
            return
        self.shell.user_ns["_ask"] = answer
        if out:
            if not out.isidentifier():
                raise UsageError(f"--out needs a variable name, not {out!r}")
            self.shell.user_ns[out] = answer

    def _ask_each(self, args, cell, ns, params, client, model, system):
        from vllm_magics import ask as ask_mod
        from vllm_magics.chat import ChatClient
        from vllm_magics.display import BatchProgress

        if args.each not in ns:
            raise UsageError(f"--each {args.each}: there is no variable named {args.each}")
        items = ns[args.each]
        if isinstance(items, (str, bytes)) or not hasattr(items, "__iter__"):
            raise UsageError(f"--each {args.each}: it must be a list or other iterable of items, "
                             f"not {type(items).__name__}")
        items = list(items.itertuples(index=False) if hasattr(items, "itertuples") else items)
        prompts = []
        for item in items:
            try:
                text = cell.strip("\n") if args.no_template else ask_mod.render_prompt(
                    cell.strip("\n"), {**ns, "item": item})
            except ask_mod.TemplateError as exc:
                raise UsageError(str(exc)) from None
            prompts.append(text)
        messages = [ask_mod.build_messages(p, system) for p in prompts]
        concurrency = args.concurrency or self.concurrency
        if concurrency < 1:
            raise UsageError("--concurrency must be at least 1")
        progress = BatchProgress(len(prompts), self._in_notebook())
        base, key, timeout = client.base_url, client.session.headers.get("Authorization"), client.timeout

        def factory():
            c = ChatClient(base, None, timeout=timeout)
            if key:
                c.session.headers["Authorization"] = key
            return c

        try:
            model = model or client.default_model()
            results = ask_mod.ask_many(factory, messages, params, model=model, concurrency=concurrency,
                                       prompts=prompts, on_progress=progress.update)
        except KeyboardInterrupt:
            raise UsageError("interrupted: the batch was stopped (requests in flight were aborted)") from None
        except ask_mod.AskError as exc:
            raise UsageError(str(exc)) from None
        except Exception as exc:
            from vllm_magics.chat import NoServer, ServerError

            if isinstance(exc, (NoServer, ServerError)):
                raise UsageError(ask_mod.explain(exc, client)) from None
            raise
        progress.finish(results)
        self._store_answer(results, args.out)
        self._show(results) if self._in_notebook() else print(repr(results))

    @magic_arguments()
    @argument("thread", nargs="?", default=None, help="The conversation to forget (default: all)")
    @line_magic
    def ask_reset(self, line=""):
        """Forget %%ask conversations (all, or the named one)."""
        args = _parse(self.ask_reset, line)
        if self._conversations is None:
            print("No conversation to forget.")
            return
        n = self._conversations.reset(args.thread)
        print(f"Forgot {n} conversation{'s' if n != 1 else ''}." if n else f"No conversation named {args.thread}.")


    # -- %vllm_status ------------------------------------------------------------------------
    @magic_arguments()
    @argument("--url", default=None, help="Another server (default: the managed one)")
    @argument("--api-key-env", default=None, metavar="NAME", help="Environment variable holding the key for --url")
    @argument("--json", action="store_true", help="Return the figures as a dict (keys: vllm_magics.status)")
    @argument("--watch", nargs="?", type=float, const=2.0, default=None, metavar="SECONDS",
              help="Refresh every SECONDS (default 2) until interrupted or --count times, with plots")
    @argument("--count", type=int, default=None, help="With --watch: stop after this many refreshes")
    @argument("-n", "--lines", type=int, default=15, help="Log lines to include (default 15)")
    @argument("--no-widgets", action="store_true", help="With --watch: plain display updates, no ipywidgets")
    @line_magic
    def vllm_status(self, line=""):
        """What the server is doing: process, health, model, GPU, KV cache, requests, tokens/s, tunnel, log."""
        args = _parse(self.vllm_status, line)
        if args.watch is not None and args.watch <= 0:
            raise UsageError("--watch takes a positive number of seconds")
        if args.count is not None and args.count < 1:
            raise UsageError("--count must be at least 1")
        sample = self._status_sampler(args)
        if args.json:
            return sample()
        from vllm_magics.display import StatusCard

        if args.watch is None:
            return self._show(StatusCard(sample()))
        self._watch_status(sample, args)

    def _status_sampler(self, args):
        from vllm_magics import gpu
        from vllm_magics.status import Unreachable, collect_status

        server, key = None, None
        url = args.url or self.url
        if url:
            key_env = args.api_key_env or self.api_key_env
            key = os.environ.get(key_env) if key_env else None
            if self.server is not None and url.rstrip("/").removesuffix("/v1") == self.server.base_url:
                server, key = self.server, key or self.server.api_key
        else:
            server = self.server
            if server is None:
                raise UsageError("no server: start one with %vllm_serve MODEL, or pass --url")
            url, key = server.base_url, server.api_key
        tunnel_url = None
        if self.tunnels is not None:
            open_ = self.tunnels.list()
            tunnel_url = open_[0].public_url if open_ else None

        def sample():
            base = url.rstrip("/").removesuffix("/v1")
            try:
                status, snap = collect_status(base, key, server=server, previous=self._last_metrics.get(base),
                                              tunnel_url=tunnel_url, query_gpus=gpu.query_gpus,
                                              log_lines=max(args.lines, 0))
            except Unreachable as exc:
                raise UsageError(str(exc)) from None
            if snap is not None:
                self._last_metrics[base] = snap
            return status

        return sample

    def _watch_status(self, sample, args):
        from vllm_magics.display import StatusCard

        history, handle, widget = [], None, None
        notebook = self._in_notebook()
        if notebook and not args.no_widgets and "google.colab" not in __import__("sys").modules:
            try:  # a widget updates in place without new output messages; Colab's widget support is shaky
                import ipywidgets

                widget = ipywidgets.HTML()
            except ImportError:
                widget = None
        n = 0
        try:
            while args.count is None or n < args.count:
                status = sample()
                m = status.get("metrics") or {}
                history.append((time.monotonic(), m.get("generation_tokens_per_s"), m.get("kv_cache_usage")))
                card = StatusCard(status, history[-120:])
                if widget is not None:
                    widget.value = card.html()
                    if n == 0:
                        from IPython.display import display

                        display(widget)
                elif notebook:
                    from IPython.display import display

                    if handle is None:
                        handle = display(card, display_id=True)
                    else:
                        handle.update(card)
                else:
                    print(card.text() + "\n", flush=True)
                n += 1
                if args.count is not None and n >= args.count:
                    break
                time.sleep(args.watch)
        except KeyboardInterrupt:
            pass  # stopping a watch is the normal way to end it


    # -- %ngrok_up / %ngrok_down -------------------------------------------------------------
    @magic_arguments()
    @argument("--port", type=int, default=None, help="Local port to share (default: the managed server's)")
    @argument("--domain", default=None, help="A reserved ngrok domain, e.g. my-name.ngrok.app")
    @argument("--region", default=None, help="ngrok region: us, eu, ap, au, sa, jp, in")
    @argument("--basic-auth", action="store_true", help="Also ask browsers for a generated user/password "
              "(browser use only: OpenAI clients send their key in the same Authorization header)")
    @argument("--insecure", action="store_true", help="Share a server that has no API key")
    @argument("--list", action="store_true", help="Show the open tunnels")
    @argument("--colab", action="store_true", help="Use Colab's own proxy (no ngrok account; this user only, "
              "while the notebook is open)")
    @argument("--show-key", action="store_true", help="Show the server's API key in full on the card")
    @line_magic
    def ngrok_up(self, line=""):
        """Share the server through an ngrok HTTPS tunnel: public URL, OpenAI base URL, examples.

        The ngrok token comes from Colab Secrets (NGROK_AUTHTOKEN), the NGROK_AUTHTOKEN environment
        variable, or a hidden prompt; never from this line (it would be saved in the notebook).
        """
        from vllm_magics.tunnel import TunnelError

        args = _parse(self.ngrok_up, line)
        if args.list:
            return self._show_tunnels()
        server = self._current()
        port = args.port or (server.plan.port if server is not None else None)
        if port is None:
            raise UsageError("no server to share: start one with %vllm_serve MODEL, or pass --port")
        ours = server is not None and server.plan.port == port
        if not ours and not args.insecure:
            raise UsageError(f"port {port} is not the server this kernel manages, so vllm_magics cannot tell "
                             "whether it checks an API key: add --insecure to share it anyway")
        api_key = server.api_key if ours else None
        model = served_model_name_or_default(server if ours else None)
        if args.colab:
            return self._colab_share(port)
        basic = None
        if args.basic_auth:  # generated, shown on the card: nothing secret is typed on the line
            import secrets as _secrets

            basic = ("vllm", _secrets.token_urlsafe(12))
        try:
            tunnels = self._tunnel_manager(args.region)
            token, source = self._ngrok_token()
            tunnel = tunnels.open(port, api_key=api_key, insecure=args.insecure, authtoken=token,
                                  token_source=source, basic_auth=basic, domain=args.domain)
        except TunnelError as exc:
            raise UsageError(str(exc)) from None
        from vllm_magics.tunnel import health_through, tunnel_card

        card = tunnel_card(tunnel, api_key, model)
        status = health_through(tunnel.public_url, timeout=10, basic_auth=basic)
        card.notes.insert(0, f"/health through the tunnel: {status}" + (" (ok)" if status == 200 else
                          " - the tunnel is open but the server did not answer through it"))
        if basic is not None:
            card.notes.insert(1, f"Browsers will ask for user {basic[0]} / password {basic[1]}.")
        if args.show_key and api_key:
            card.api_key_masked = api_key
        card.notes.append(f"token from {tunnels.token_source or source}; request inspection is off.")
        self._show(card)

    def _ngrok_token(self):
        from vllm_magics.ngrok_token import HOW_TO_ADD, NgrokTokenMissing, find_authtoken

        try:
            return find_authtoken(interactive=True)
        except (EOFError, OSError, NotImplementedError) as exc:
            # getpass with nobody to type (nbclient, a script; Jupyter raises StdinNotImplementedError).
            raise NgrokTokenMissing(f"no ngrok token found, and nobody to type one ({exc.__class__.__name__}). "
                                    + HOW_TO_ADD) from None

    def _tunnel_manager(self, region=None):
        if self.tunnels is None or (region and self.tunnels.config.region != region):
            from pathlib import Path

            from vllm_magics.tunnel import TunnelManager

            if self.tunnels is not None:
                self.tunnels.stop()
            config_path = self.ngrok_config_path or str(Path(self._runtime_dir()) / "ngrok" / "agent.yml")
            self.tunnels = TunnelManager(ngrok_path=self.ngrok_path or None, config_path=config_path,
                                         startup_timeout=self.ngrok_startup_timeout, region=region)
        return self.tunnels

    def _show_tunnels(self):
        tunnels = self.tunnels.list() if self.tunnels is not None else []
        if not tunnels:
            print("No tunnel is open. %ngrok_up opens one.")
            return
        for t in tunnels:
            print(f"{t.public_url} -> {t.upstream} (OpenAI base URL {t.openai_base_url}; "
                  f"open {t.age():.0f} s{'; basic auth' if t.basic_auth else ''})")

    def _colab_share(self, port):
        from vllm_magics.tunnel import TunnelError, colab_proxy_url

        try:
            proxy = colab_proxy_url(port)
        except TunnelError as exc:
            raise UsageError(str(exc)) from None
        if proxy.url:
            print(f"Colab proxy: {proxy.url}  (OpenAI base URL {proxy.openai_base_url})")
        print(proxy.note)

    @magic_arguments()
    @argument("url", nargs="?", default=None, help="The tunnel to close (public URL or name)")
    @argument("--all", action="store_true", help="Close every tunnel and stop the ngrok agent")
    @line_magic
    def ngrok_down(self, line=""):
        """Close a tunnel (the only one, the given one, or --all)."""
        args = _parse(self.ngrok_down, line)
        tunnels = self.tunnels.list() if self.tunnels is not None else []
        if args.all:
            n = len(tunnels)
            if self.tunnels is not None:
                self.tunnels.stop()
            print(f"Closed {n} tunnel{'s' if n != 1 else ''}; the ngrok agent is stopped.")
            return
        if not tunnels:
            print("No tunnel is open.")
            return
        if args.url is None:
            if len(tunnels) > 1:
                raise UsageError("several tunnels are open: name one (%ngrok_up --list) or use --all")
            args.url = tunnels[0].public_url
        if not self.tunnels.close(args.url):
            raise UsageError(f"no open tunnel is {args.url} (%ngrok_up --list shows them)")
        print(f"Closed {args.url}.")


def served_model_name_or_default(server) -> str:
    if server is None:
        return "MODEL"
    from vllm_magics.plan import served_model_name

    return served_model_name(server.plan)


def describe_running(magics: VllmMagics) -> str | None:
    server = magics._current()
    if server is None:
        return None
    how = "it keeps running after this kernel exits (--detach)" if server.detach else \
        "it keeps running until you stop it or this kernel exits"
    return (f"The vLLM server for {server.plan.model} (pid {server.pid}, {server.base_url}) is still running: "
            f"{how}. %load_ext vllm_magics and %vllm_serve {server.plan.model} adopt it again.")


