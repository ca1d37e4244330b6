"""vllm_magics: IPython magics to start, watch, share and talk to a vLLM server.

    %load_ext vllm_magics
    %vllm_serve Qwen/Qwen2.5-0.5B-Instruct

Loading imports only IPython pieces that are already in memory; vLLM, requests, jinja2 and pyngrok
are imported when a magic needs them.
"""
from __future__ import annotations

__version__ = "0.1.0"


def load_ipython_extension(ipython):
    from vllm_magics.notebook.magics import load

    load(ipython)


def unload_ipython_extension(ipython):
    from vllm_magics.notebook.magics import unload

    unload(ipython)


def _magics():
    """The extension's VllmMagics in the running IPython, or None (a script without IPython: None)."""
    try:
        from vllm_magics.notebook.magics import running_instance
    except ImportError:  # no IPython installed
        return None
    return running_instance()


def current_server(name=None):
    """The server the extension manages in this IPython session (a `VllmServer`), or None; with `name`,
    the server started by `%vllm_serve MODEL --name NAME` (None when there is no such server)."""
    magics = _magics()
    if magics is None:
        return None
    return magics.server if name is None else magics.servers.get(name)


def current_tunnel():
    """The first tunnel %ngrok_up opened in this IPython session (`.public_url`, `.openai_base_url`), or None."""
    magics = _magics()
    tunnels = magics.tunnels.list() if magics is not None and magics.tunnels is not None else []
    return tunnels[0] if tunnels else None


def client(name=None, **kwargs):
    """An `openai.OpenAI` client for a managed server (base URL and API key filled in): the first one, or
    the one started by `%vllm_serve MODEL --name NAME`.

    Needs the `openai` package (pip install openai); extra keyword arguments go to `openai.OpenAI`.
    """
    server = current_server(name)
    if server is None:
        magics = _magics()
        if name is not None and magics is not None and magics.servers:
            # LookupError, not KeyError: KeyError's message is shown as a quoted repr.
            raise LookupError(f"no server named {name!r}; this session's servers: {', '.join(magics.servers)}")
        raise RuntimeError("no managed server: start one with %vllm_serve MODEL first")
    try:
        import openai
    except ImportError:
        raise ImportError("vllm_magics.client() needs the openai package: pip install openai") from None
    kwargs.setdefault("base_url", f"{server.base_url}/v1")
    kwargs.setdefault("api_key", server.api_key or "EMPTY")  # vLLM without --api-key accepts any
    return openai.OpenAI(**kwargs)
