"""Colab's own proxy to a kernel port: the no-account alternative to ngrok (no IPython, no display here).

The notebook layer imports `google.colab.output` and hands it in; this module decides what to ask of it,
following googlecolab/colabtools google/colab/output/_util.py:
- `google.colab.kernel.proxyPort(PORT)` (asked through `eval_js`) gives a URL that works only for this
  user, while the notebook is open;
- `serve_kernel_port_as_iframe(port, path)` shows the port inside the output (it shows nothing when the
  page does not allow kernel access);
- `serve_kernel_port_as_window` is DEPRECATED ("Browser security updates have broken this feature"): used
  only when the iframe function is missing (an older Colab).
"""
from __future__ import annotations

from dataclasses import dataclass

from vllm_magics.errors import NotOnColab


@dataclass
class ColabProxy:
    """Colab's own proxy to a kernel port: no account needed, but the URL works only for you (your Google
    login, in this browser) while the notebook is open; not for other people, nor for clients elsewhere.
    `shown`: what Colab was asked to display ("iframe", "window" link, or "" for nothing)."""

    url: str | None
    port: int
    shown: str = ""
    note: str = ("works only for you, in this browser, while this notebook is open: "
                 "to share with others or call it from elsewhere, use ngrok")

    @property
    def link_shown(self) -> bool:
        """The deprecated new-window link was shown (this Colab has no iframe function)."""
        return self.shown == "window"

    @property
    def openai_base_url(self) -> str | None:
        return self.url.rstrip("/") + "/v1" if self.url else None


def colab_proxy_url(port: int, output, timeout: float = 30.0, *, path: str = "/docs") -> ColabProxy:
    """Colab's proxy to `port`. `output`: the `google.colab.output` module (None outside Colab: NotOnColab).
    Asks the page for the proxy URL, and shows `path` (vLLM's API docs) in an iframe; the deprecated
    window link only when this Colab has no iframe function."""
    if output is None:
        raise NotOnColab("Colab's proxy exists only on Google Colab; here, share the server with ngrok.")
    port = int(port)
    try:
        url = output.eval_js(f"google.colab.kernel.proxyPort({port})", timeout_sec=timeout)
    except Exception:  # noqa: BLE001 - no page attached, or it did not answer in time
        url = None
    shown = ""
    iframe = getattr(output, "serve_kernel_port_as_iframe", None)
    if iframe is not None:
        try:
            iframe(port, path=path, height="500")
            shown = "iframe"
        except Exception:  # noqa: BLE001 - an older or changed signature: the link below instead
            shown = ""
    if not shown:
        output.serve_kernel_port_as_window(port, path=path, anchor_text=f"Open port {port} through Colab")
        shown = "window"
    return ColabProxy(url=str(url) if url else None, port=port, shown=shown)
