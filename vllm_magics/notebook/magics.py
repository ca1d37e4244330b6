"""VllmMagics: the extension's magics, one configurable class (`%config VllmMagics`).

The magics are written in groups (serve, ask, history, status, tunnel, doctor); this class joins them. The state they
share (the managed server, conversations, tunnels) is set up by `MagicsBase.__init__`.
"""
from __future__ import annotations

import atexit

from IPython.core.magic import magics_class

from vllm_magics.notebook.ask import AskMagics
from vllm_magics.notebook.doctor import DoctorMagics
from vllm_magics.notebook.history import HistoryMagics
from vllm_magics.notebook.serve import ServeMagics
from vllm_magics.notebook.serve_start import adopt_command
from vllm_magics.notebook.status import StatusMagics
from vllm_magics.notebook.tunnel import TunnelMagics

_GROUPS = (ServeMagics, AskMagics, HistoryMagics, StatusMagics, TunnelMagics, DoctorMagics)


@magics_class
class VllmMagics(ServeMagics, AskMagics, HistoryMagics, StatusMagics, TunnelMagics, DoctorMagics):
    """Start, watch, share and talk to a vLLM server from IPython. Settings: %config VllmMagics."""

    def __init__(self, shell=None, **kwargs):
        super().__init__(shell=shell, **kwargs)
        # One registration per instance, removed again by `close()` (%unload_ext): a reloaded
        # extension must not leave the old instance's handler behind.
        atexit.register(self._stop_at_exit)

    def close(self) -> None:
        """The extension is unloaded: the at-exit stop goes with it (the server keeps running)."""
        atexit.unregister(self._stop_at_exit)
        db = self.__dict__.pop("_history_db", None)
        if db is not None:
            db.close()

    @classmethod
    def magic_names(cls) -> dict[str, tuple[str, ...]]:
        """{"line": (...), "cell": (...)}: what this class registers, for unloading."""
        return {kind: tuple(table) for kind, table in cls.magics.items()}


# IPython's @magics_class gives each class only the magics defined in its own body: join the groups'.
VllmMagics.magics = {kind: {name: meth for group in _GROUPS for name, meth in group.magics[kind].items()}
                     for kind in ("line", "cell")}


def load(ipython) -> VllmMagics:
    """%load_ext: register the magics and the rich views of what they return."""
    from vllm_magics.notebook.views.answer_view import register_answer_formatters
    from vllm_magics.notebook.views.compare import register_compare_formatters

    magics = VllmMagics(shell=ipython)
    ipython.register_magics(magics)
    ipython._vllm_magics = magics  # the one instance, so unload can find it
    register_answer_formatters(ipython)
    register_compare_formatters(ipython)
    return magics


def unload(ipython) -> None:
    """%unload_ext: remove what load added; a running server keeps running (and is said to)."""
    from vllm_magics.notebook.views.answer_view import unregister_answer_formatters
    from vllm_magics.notebook.views.compare import unregister_compare_formatters

    magics = getattr(ipython, "_vllm_magics", None)
    table = ipython.magics_manager.magics
    for kind, names in VllmMagics.magic_names().items():
        for name in names:
            table[kind].pop(name, None)
    ipython.magics_manager.registry.pop("VllmMagics", None)
    unregister_answer_formatters(ipython)
    unregister_compare_formatters(ipython)
    if magics is None:
        return
    magics.close()
    if magics in ipython.configurables:
        ipython.configurables.remove(magics)
    del ipython._vllm_magics
    note = describe_running(magics)
    if note:
        print(note)


def running_instance() -> VllmMagics | None:
    """The instance %load_ext made in the running IPython, if any."""
    from IPython import get_ipython

    ip = get_ipython()
    return getattr(ip, "_vllm_magics", None) if ip is not None else None


def describe_running(magics: VllmMagics) -> str | None:
    """What keeps running after %unload_ext, one line per server, with the command that adopts it."""
    lines = []
    for name, server in magics._running_servers().items():
        how = "it keeps running after this kernel exits (--detach)" if server.detach else \
            "it keeps running until you stop it or this kernel exits"
        again = adopt_command(name, server.plan)
        lines.append(f"The vLLM server for {server.plan.model} (pid {server.pid}, {server.base_url}) is still "
                     f"running: {how}. %load_ext vllm_magics and {again} adopt it again.")
    return "\n".join(lines) or None


