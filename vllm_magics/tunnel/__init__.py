"""Sharing a server: an ngrok tunnel, or Colab's own proxy (plain Python: no IPython, no display).

    manager.py   TunnelManager: the decisions (refusals, the start deadline, the tunnels); Tunnel
    agent.py     PyngrokAgent: the only code that touches pyngrok (the seam the manager's tests replace)
    errors.py    the tunnel's errors, and ngrok's ERR_NGROK_* codes said in plain words
    token.py     where the ngrok token comes from (Colab Secrets, the environment, a hidden prompt)
    colab.py     Colab's port proxy (proxyPort, the iframe; the deprecated window link as a fallback)
    watchdog.py  stops the agent when the kernel is killed (`python -m vllm_magics.tunnel.watchdog`)
"""
