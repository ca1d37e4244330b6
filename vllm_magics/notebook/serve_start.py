"""What %vllm_serve does besides parsing its line: choosing the port (or a server to adopt), the GPU
share of a named server, starting with live progress, and the cards. The magics are in serve.py."""
from __future__ import annotations

import time
from pathlib import Path

from IPython.core.error import UsageError

from vllm_magics.notebook.base import DEFAULT_NAME, MagicsBase


class ServeStart(MagicsBase):
    """Helpers of ServeMagics (no magics here: @magics_class collects a class's own magics only)."""

    def _stop_at_exit(self):
        # atexit handlers carry over os.fork: a forked child that exits must leave its parent's servers be.
        for server in list(self.servers.values()):
            if not server.detach and server.owner() == "this process" and server.is_alive():
                server.stop()

    def _put(self, name: str, server, index: int | None = None) -> None:
        """Register `server` as `name` (None: forget the name), at `index` in the order (default: where the
        name already is, else last). The first server is the default one."""
        items = [(n, s) for n, s in self.servers.items() if n != name]
        if server is not None:
            # A stopped server on the same port goes: it shares the port's state folder (log, pid) with this one.
            items = [(n, s) for n, s in items if s is server or s.plan.port != server.plan.port or s.is_alive()]
            if index is None:
                index = list(self.servers).index(name) if name in self.servers else len(items)
            items.insert(index, (name, server))
        self.servers = dict(items)

    def _gpu_share(self, gpus, requested, name, notes):
        """The --gpu-memory-utilization for a named server (None: no flag), told as (setting, reason); a share
        the user gave is only checked. Every named server expects company: at least 2 share the GPU."""
        from vllm_magics.server.sharing import RunningShare, next_share, share_in_argv

        if not gpus:
            return None, None
        running = [RunningShare(n, share_in_argv(s.plan.argv)) for n, s in self._running_servers().items()
                   if n != name]
        share = next_share(gpus[0], running, requested=requested, expected=max(2, len(running) + 1))
        if not share.chosen:
            if not share.fits:
                notes.append(share.reason)
            return None, None
        if not share.fits:
            raise UsageError(share.reason)
        return share.share, (share.setting, share.reason) if share.share is not None else None

    def _adoptable(self, plan):
        """Our own server still running from before (%unload_ext, a kernel gone with --detach) that no name
        of this session holds, on any port, started as `plan` would start it (same model, served model name
        and adapters): a named server is adopted again wherever it is. (server or None, a note or None)."""
        from vllm_magics.server.manager import VllmServer

        folder = Path(self._runtime_dir()) / "servers"
        held = {s.plan.port for s in self.servers.values()}
        ports = sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.is_dir() else []
        differs = None
        for port in ports:
            if port in held:
                continue
            ours = VllmServer.find(self._runtime_dir(), port)
            if ours is None or ours.plan.model != plan.model or not ours.may_take_over():
                continue
            if same_setup(ours.plan, plan):
                return ours, None
            differs = differs or (f"A server of {plan.model} on port {port} was started with other adapters or "
                                  "served model name: left alone.")
        return None, differs

    def _held_ports(self, name: str) -> set:
        """Ports a new server must not take although they may be free now: another running server's (one
        that timed out may not listen yet) and the ports open tunnels point at (a new server there would be
        public at once)."""
        held = {s.plan.port for n, s in self.servers.items() if n != name and s.is_alive()}
        return held | {t.port for t in (self.tunnels.list() if self.tunnels is not None else [])}

    def _first_unheld(self, start: int, name: str) -> int:
        """The first port from `start` that no other server of ours or tunnel holds (it may be busy: then
        _choose_port adopts our server there or moves on)."""
        held, port = self._held_ports(name), start
        while port in held:
            port += 1
        return port

    def _check_port_is_not_held(self, port: int, name: str) -> None:
        """A --port given is refused when it is another server's (--restart must not stop it) or a tunnel's."""
        holder = next((n for n, s in self.servers.items() if n != name and s.plan.port == port and s.is_alive()),
                      None)
        if holder is not None:
            raise UsageError(f"port {port} is server {holder}'s: choose another --port, or %vllm_stop {holder}")
        tunnel = next((t for t in (self.tunnels.list() if self.tunnels is not None else []) if t.port == port), None)
        if tunnel is not None:
            raise UsageError(f"port {port} is shared by the tunnel {tunnel.public_url}: a server there would be "
                             f"public at once; %ngrok_down {tunnel.public_url} closes it, or choose another --port")

    def _next_port(self, host: str, start: int, name: str, attempts: int = 50):
        """The first port from `start` that is free, held by no server or tunnel of ours, and not the port of
        a live server of ours whose state folder is there (started, not listening yet). None: none of
        `attempts`."""
        from vllm_magics.server.manager import VllmServer
        from vllm_magics.server.ports import port_is_free

        held = self._held_ports(name)
        for port in range(start, min(start + attempts, 65536)):
            if port not in held and port_is_free(host, port) and VllmServer.find(self._runtime_dir(), port) is None:
                return port
        return None

    def _card(self, server, headline, ready_seconds=None, notes=()):
        from vllm_magics.notebook.views.cards import ServerCard
        from vllm_magics.redact import mask_secret

        return ServerCard(headline=headline, model=server.plan.model, base_url=server.base_url,
                          api_key_masked=mask_secret(server.api_key), pid=server.pid,
                          log_path=str(server.log_path), ready_seconds=ready_seconds,
                          defaults=list(server.plan.defaults), notes=list(notes))

    def _choose_port(self, host, port, args, notes, plan, name):
        """(port to use, a server to adopt or None). A busy port (or one where our server is still starting):
        adopt our own server started as `plan` would start it (by this kernel, or detached from one that is
        gone), else say who holds it and move to the next free port (or fail with --strict-port). A dry run
        only reports."""
        from vllm_magics.server.manager import VllmServer
        from vllm_magics.server.ports import port_holder, port_is_free

        ours = VllmServer.find(self._runtime_dir(), port)
        if ours is None and port_is_free(host, port):
            return port, None
        if ours is not None and not ours.may_take_over():
            # Another live kernel manages it (it would stop it under us): leave it alone.
            notes.append(f"Port {port} serves {ours.plan.model} for another notebook's kernel.")
            ours = None
        if ours is not None:
            how = ("this kernel started it" if ours.owner() == "this process" else
                   "it was started with --detach from a kernel that is gone")
            if same_setup(ours.plan, plan) and not args.restart:
                if not args.dry_run:
                    ours.take_over()
                    notes.append(f"vllm_magics started it: {how}; this kernel manages it now.")
                    return port, ours
                notes.append(f"Would adopt the server for {ours.plan.model} on port {port} ({how}).")
                return port, None
            if not args.restart:
                other = " with other adapters or served model name" if ours.plan.model == args.model else ""
                raise UsageError(f"port {port} already serves {ours.plan.model}{other} (started by vllm_magics: "
                                 f"{how}; pid {ours.pid}): add --restart to replace it with {args.model}")
            if args.dry_run:
                notes.append(f"Would stop the server for {ours.plan.model} on port {port}.")
                return port, None
            ours.stop()
            self._close_tunnels_to(port)
            if port_is_free(host, port):
                return port, None
        holder = port_holder(port)
        who = holder.describe() if holder else "another process"
        if args.strict_port or self.strict_port:
            raise UsageError(f"port {port} is taken by {who}: stop it, or choose another "
                             "--port (or drop --strict-port to use the next free one)")
        new_port = self._next_port(host, port + 1, name)
        if new_port is None:
            raise UsageError(f"port {port} is taken by {who} and no free port follows it")
        notes.append(f"Port {port} is taken by {who}; using port {new_port} instead.")
        return new_port, None

    def _start_and_wait(self, name, server, timeout, notes, previous=None):
        """Start and show live progress (the manager lowers our own --max-model-len default once if vLLM
        says it does not fit: shown as a note); failures become one-line UsageErrors with the next step.
        `self.servers[name]` is `server` throughout; back to `previous` when the server is not left running."""
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
                    self._put(name, previous)
            if isinstance(exc, KeyboardInterrupt):
                server.stop()
                raise UsageError("interrupted: the server was stopped before it was ready "
                                 f"(its log: {server.log_path})") from None
            if isinstance(exc, ServerTimeout):
                self._show_failure(exc)
                who = "" if name == DEFAULT_NAME else f" {name}"
                raise UsageError(f"{exc}: %vllm_logs{who} shows what it is doing, %vllm_stop{who} stops it") from None
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


def same_setup(running, plan) -> bool:
    """Would `plan` start the server `running` is (its recorded plan)? The same model, served model name and
    LoRA adapters: what clients ask for by name. Other flags (memory, context) are not compared."""
    from vllm_magics.server.plan import adapter_names, served_model_name

    return (running.model == plan.model and served_model_name(running) == served_model_name(plan)
            and sorted(adapter_names(running)) == sorted(adapter_names(plan)))


def adopt_command(name: str, plan) -> str:
    """The %vllm_serve line that adopts the server started from `plan` again (one `same_setup` accepts)."""
    import shlex

    from vllm_magics.server.lora import lora_modules
    from vllm_magics.server.plan import served_model_name

    words = ["%vllm_serve", shlex.quote(plan.model)] + ([] if name == DEFAULT_NAME else ["--name", name])
    words += [f"--lora {shlex.quote(f'{n}={path}')}" for n, path in lora_modules(plan.argv)]
    served = served_model_name(plan)
    return " ".join(words + ([] if served == plan.model else ["--", "--served-model-name", shlex.quote(served)]))
