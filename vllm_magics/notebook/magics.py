"""VllmMagics: the extension's magics, one configurable class (`%config VllmMagics`).

The magics are written in groups (serve_magics, ask_magics, status_magics, tunnel_magics); this class
joins them and owns the state they share: the managed server, conversations, tunnels.
"""
from __future__ import annotations

import atexit

from IPython.core.magic import magics_class

from vllm_magics.notebook.ask import AskMagics
from vllm_magics.notebook.base import _parse, _split_passthrough  # noqa: F401 (used by tests and examples)
from vllm_magics.notebook.serve import ServeMagics
from vllm_magics.notebook.status import StatusMagics
from vllm_magics.notebook.tunnel import TunnelMagics

_GROUPS = (ServeMagics, AskMagics, StatusMagics, TunnelMagics)


@magics_class
class VllmMagics(ServeMagics, AskMagics, StatusMagics, TunnelMagics):
    """Start, watch, share and talk to a vLLM server from IPython. Settings: %config VllmMagics."""

    def __init__(self, shell=None, **kwargs):
        super().__init__(shell=shell, **kwargs)
        self.server = None  # vllm_magics.server.VllmServer
        self._conversations = None  # vllm_magics.ask.Conversations, made on first %%ask
        self._vllm_urls: dict[str, bool] = {}  # base URL -> is it a vLLM server
        self._last_metrics: dict = {}  # base URL -> MetricsSnapshot (tokens/s needs two samples)
        self.tunnels = None  # vllm_magics.tunnel.TunnelManager, made by %ngrok_up
        atexit.register(self._stop_at_exit)


# IPython's @magics_class gives each class only the magics defined in its own body: join the groups'.
VllmMagics.magics = {kind: {name: meth for group in _GROUPS for name, meth in group.magics[kind].items()}
                     for kind in ("line", "cell")}


def describe_running(magics: VllmMagics) -> str | None:
    server = magics._current()
    if server is None:
        return None
    how = "it keeps running after this kernel exits (--detach)" if server.detach else \
        "it keeps running until you stop it or this kernel exits"
    return (f"The vLLM server for {server.plan.model} (pid {server.pid}, {server.base_url}) is still running: "
            f"{how}. %load_ext vllm_magics and %vllm_serve {server.plan.model} adopt it again.")


