"""%vllm_status: one look (or a watch) at what the server is doing."""
from __future__ import annotations

import time

from IPython.core.error import UsageError
from IPython.core.magic import line_magic, magics_class
from vllm_magics.notebook.args import argument, magic_arguments

from vllm_magics.notebook.base import MagicsBase, _parse, at_the_edge


@magics_class
class StatusMagics(MagicsBase):
    """The magic that reports on the server."""

    # -- %vllm_status ------------------------------------------------------------------------
    @magic_arguments()
    @argument("name", nargs="?", default=None, help="One named server (default: every server this kernel manages)")
    @argument("--url", default=None, help="Another server (default: the managed one)")
    @argument("--api-key-env", default=None, metavar="NAME", help="Environment variable holding the key for --url")
    @argument("--json", action="store_true", help="Return the figures as a dict (keys: vllm_magics.status.collect)")
    @argument("--watch", nargs="?", type=float, const=2.0, default=None, metavar="SECONDS",
              help="Refresh every SECONDS (default 2) until interrupted or --count times, with plots")
    @argument("--count", type=int, default=None, help="With --watch: stop after this many refreshes")
    @argument("-n", "--lines", type=int, default=15, help="Log lines to include (default 15)")
    @argument("--no-widgets", action="store_true", help="With --watch: plain display updates, no ipywidgets")
    @line_magic
    @at_the_edge("%vllm_status")
    def vllm_status(self, line=""):
        """What the server is doing: process, health, model and LoRA adapters, GPU, KV cache, requests,
        tokens/s, tunnel, log. With several servers (%vllm_serve --name): a card for each, or one by NAME."""
        args = _parse(self.vllm_status, line)
        if args.name is not None and args.url:
            raise UsageError("give a server's name or --url, not both")
        if args.watch is not None and args.watch <= 0:
            raise UsageError("--watch takes a positive number of seconds")
        if args.count is not None and args.count < 1:
            raise UsageError("--count must be at least 1")
        if args.name is None and not (args.url or self.url) and len(self.servers) > 1:
            if args.watch is not None and not args.json:
                raise UsageError(f"--watch follows one server: name it, e.g. %vllm_status {next(iter(self.servers))} "
                                 "--watch")
            return self._status_of_all(args)
        sample = self._status_sampler(args, args.name)
        if args.watch is not None and not args.json:
            return self._watch_status(sample, args)  # Ctrl-C is the normal end of a watch
        try:
            status = sample()
        except KeyboardInterrupt:
            raise UsageError("interrupted: no status (the server was slow to answer)") from None
        if args.json:
            return status
        from vllm_magics.notebook.views.status_card import StatusCard

        return self._show(StatusCard(status))

    def _status_of_all(self, args):
        """Every managed server: {name: status} with --json, else a card for each."""
        statuses = {}
        for name in list(self.servers):
            try:
                statuses[name] = self._status_sampler(args, name)()
            except KeyboardInterrupt:
                raise UsageError(f"interrupted: no status (server {name} was slow to answer)") from None
        if args.json:
            return statuses
        from vllm_magics.notebook.views.status_card import StatusCard

        for status in statuses.values():
            self._show(StatusCard(status))

    def _status_sampler(self, args, name=None):
        from vllm_magics.server import gpu
        from vllm_magics.status.collect import Unreachable, collect_status

        if name is not None:
            server = self._server_named(name)
            base, key = server.base_url, server.api_key
        else:
            base, key, server = self._target(args)
        tunnel_url = None
        if self.tunnels is not None:
            open_ = self.tunnels.list()
            if server is not None and len(self.servers) > 1:  # the tunnel to this server, if any
                open_ = [t for t in open_ if t.upstream.endswith(f":{server.plan.port}")]
            tunnel_url = open_[0].public_url if open_ else None

        def sample():
            try:
                status, snap = collect_status(base, key, server=server, previous=self._last_metrics.get(base),
                                              tunnel_url=tunnel_url, query_gpus=gpu.query_gpus,
                                              log_lines=max(args.lines, 0))
            except Unreachable as exc:
                raise UsageError(str(exc)) from None
            if snap is not None:
                self._last_metrics[base] = snap
            if name is not None or len(self.servers) > 1:
                status["name"] = name or next((n for n, s in self.servers.items() if s is server), None)
            return status

        return sample

    def _watch_status(self, sample, args):
        from vllm_magics.notebook.views.status_card import StatusCard

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
