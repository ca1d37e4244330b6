"""vllm_magics: IPython magics to start, watch, share and talk to a vLLM server.

    %load_ext vllm_magics
    %vllm_serve Qwen/Qwen2.5-0.5B-Instruct

Loading imports only IPython pieces that are already in memory; vLLM, requests, jinja2 and pyngrok
are imported when a magic needs them.
"""
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


def current_server():
    """The server the extension manages in this IPython session (a `VllmServer`), or None."""
    magics = _magics()
    return magics.server if magics is not None else None


def current_tunnel():
    """The first tunnel %ngrok_up opened in this IPython session (`.public_url`, `.openai_base_url`), or None."""
    magics = _magics()
    tunnels = magics.tunnels.list() if magics is not None and magics.tunnels is not None else []
    return tunnels[0] if tunnels else None


def client(**kwargs):
    """An `openai.OpenAI` client for the managed server (base URL and API key filled in).

    Needs the `openai` package (pip install openai); extra keyword arguments go to `openai.OpenAI`.
    """
    server = current_server()
    if server is None:
        raise RuntimeError("no managed server: start one with %vllm_serve MODEL first")
    try:
        import openai
    except ImportError:
        raise ImportError("vllm_magics.client() needs the openai package: pip install openai") from None
    kwargs.setdefault("base_url", f"{server.base_url}/v1")
    kwargs.setdefault("api_key", server.api_key or "EMPTY")  # vLLM without --api-key accepts any
    return openai.OpenAI(**kwargs)
