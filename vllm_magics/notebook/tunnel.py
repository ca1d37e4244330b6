"""%ngrok_up and %ngrok_down: share the server through ngrok (or Colab's proxy)."""
from __future__ import annotations

from IPython.core.error import UsageError
from IPython.core.magic import line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments
from traitlets import Float, Unicode

from vllm_magics.notebook.base import MagicsBase, _parse, served_model_name_or_default


@magics_class
class TunnelMagics(MagicsBase):
    """Settings and magics that share the server."""

    ngrok_path = Unicode("", help="The ngrok agent binary (default: pyngrok's, downloaded on first use)."
                         ).tag(config=True)
    ngrok_config_path = Unicode("", help="Where the agent config (with the token, mode 0600) is written "
                                "(default: <runtime_dir>/ngrok/agent.yml).").tag(config=True)
    ngrok_startup_timeout = Float(20.0, help="Seconds the ngrok agent may take to come up.").tag(config=True)

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
        from vllm_magics.tunnel.manager import TunnelError

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
        from vllm_magics.tunnel.manager import health_through, tunnel_card

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
        from vllm_magics.tunnel.token import HOW_TO_ADD, NgrokTokenMissing, find_authtoken

        try:
            return find_authtoken(interactive=True)
        except (EOFError, OSError, NotImplementedError) as exc:
            # getpass with nobody to type (nbclient, a script; Jupyter raises StdinNotImplementedError).
            raise NgrokTokenMissing(f"no ngrok token found, and nobody to type one ({exc.__class__.__name__}). "
                                    + HOW_TO_ADD) from None

    def _tunnel_manager(self, region=None):
        if self.tunnels is None or (region and self.tunnels.config.region != region):
            from pathlib import Path

            from vllm_magics.tunnel.manager import TunnelManager

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
        from vllm_magics.tunnel.manager import TunnelError, colab_proxy_url

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
