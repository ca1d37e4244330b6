"""%ngrok_up and %ngrok_down: share the server through ngrok (or Colab's proxy)."""
from __future__ import annotations

from IPython.core.error import UsageError
from IPython.core.magic import line_magic, magics_class
from vllm_magics.notebook.args import argument, magic_arguments
from traitlets import Float, Unicode

from vllm_magics.notebook.base import MagicsBase, _parse, served_model_name_or_default


def _hint(exc) -> str:
    """What to type, for the library errors a magic can fix (the library itself names no magic)."""
    from vllm_magics.tunnel import errors

    if isinstance(exc, errors.InsecureShareRefused):
        return (" %vllm_serve MODEL --restart starts it again with a key (a random one unless --no-api-key); "
                "%ngrok_up --insecure shares it without one.")
    if isinstance(exc, errors.AgentConfigUnwritable):
        return " Set another: %config VllmMagics.ngrok_config_path = '/a/private/folder/agent.yml'"
    if isinstance(exc, errors.NgrokNotInstalled):
        return " In a notebook: %config VllmMagics.ngrok_path = '/path/to/ngrok'"
    if isinstance(exc, errors.NgrokStartTimeout):
        return " To allow a slower start: %config VllmMagics.ngrok_startup_timeout = 60"
    return ""


def _colab_output():
    """google.colab.output on Colab, else None."""
    try:
        from google.colab import output  # type: ignore[import-not-found]
    except ImportError:
        return None
    return output


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
    @argument("--server", default=None, metavar="NAME", help="The named server to share (default: the first one)")
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
        return self._at_the_edge("%ngrok_up", self._ngrok_up, line)

    def _at_the_edge(self, magic: str, body, line: str):
        """Run a tunnel magic so that whatever goes wrong is one UsageError line with every secret
        redacted: a raw traceback (with `%xmode Verbose`, its frames' local variables) could show the
        ngrok token or the API key. The error is raised outside the except block, so it carries no chained
        exception and no frame of the failed call."""
        from vllm_magics.redact import SecretRedactor
        from vllm_magics.tunnel.token import TunnelError

        redactor = SecretRedactor()
        failure = None
        try:
            return body(line, redactor)
        except UsageError as exc:
            failure = self._one_line(str(exc), redactor)
        except TunnelError as exc:
            failure = self._one_line(str(exc), redactor) + _hint(exc)
        except KeyboardInterrupt:
            failure = (f"{magic} was interrupted (an agent it was starting is stopped; %ngrok_up --list shows "
                       "the tunnels).")
        except Exception as exc:  # noqa: BLE001 - the edge: nothing raw reaches the notebook
            failure = f"{magic} failed: {exc.__class__.__name__}: " + self._one_line(str(exc), redactor)
        raise UsageError(failure)

    def _one_line(self, text: str, redactor) -> str:
        for server in self.servers.values():  # every managed server's key, whichever was being shared
            redactor.add(server.api_key)
        if self.tunnels is not None:
            text = self.tunnels.redact(text)
        return " ".join(redactor.redact(text).split())

    def _ngrok_up(self, line, redactor):
        args = _parse(self.ngrok_up, line)
        if args.list:
            return self._show_tunnels()
        if args.server is not None and args.port is not None:
            raise UsageError("give --server NAME or --port, not both")
        server = self._current()
        if args.server is not None:
            server = self._server_named(args.server)
            if not server.is_alive():
                raise UsageError(f"server {args.server} is not running: %vllm_status {args.server} says why")
        elif args.port is not None:  # a managed server's port is that server (its key guards the tunnel)
            server = next((s for s in self.servers.values() if s.plan.port == args.port and s.is_alive()), None)
        port = args.port or (server.plan.port if server is not None else None)
        if port is None:
            raise UsageError("no server to share: start one with %vllm_serve MODEL, or pass --port")
        ours = server is not None and server.plan.port == port
        if not ours and not args.insecure:
            raise UsageError(f"port {port} is not the server this kernel manages, so vllm_magics cannot tell "
                             "whether it checks an API key: add --insecure to share it anyway")
        if ours:
            redactor.add(server.api_key)
        model = served_model_name_or_default(server if ours else None)
        if args.colab:
            return self._colab_share(port)
        basic = None
        if args.basic_auth:  # generated, shown on the card: nothing secret is typed on the line
            import secrets as _secrets

            basic = ("vllm", _secrets.token_urlsafe(12))
        tunnels = self._tunnel_manager(args.region)
        token, source = self._ngrok_token()  # a Secret: a traceback's locals show it masked
        redactor.add(token)
        tunnel = tunnels.open(port, api_key=server.api_key if ours else None, insecure=args.insecure,
                              authtoken=token, token_source=source, basic_auth=basic, domain=args.domain)
        del token
        from vllm_magics.notebook.views.tunnel_card import tunnel_card
        from vllm_magics.tunnel.manager import health_through

        status = health_through(tunnel.public_url, timeout=10, basic_auth=basic)
        self._show(tunnel_card(tunnel, server.api_key if ours else None, model, health=status, basic_auth=basic,
                               token_source=tunnels.token_source or source, show_key=args.show_key,
                               on_colab=_colab_output() is not None))

    def _ngrok_token(self):
        from vllm_magics.tunnel.token import HOW_TO_ADD, NgrokTokenMissing, find_token

        try:
            return find_token(interactive=True)
        except (EOFError, OSError, NotImplementedError) as exc:
            # getpass with nobody to type (nbclient, a script; Jupyter raises StdinNotImplementedError).
            failure = NgrokTokenMissing(f"no ngrok token found, and nobody to type one ({exc.__class__.__name__}). "
                                        + HOW_TO_ADD)
        raise failure

    def _tunnel_manager(self, region=None):
        """The session's TunnelManager, made anew when the settings changed (a new region always; a new
        agent path, config path or timeout once no agent runs: open tunnels are not closed behind a
        %config)."""
        from pathlib import Path

        config_path = Path(self.ngrok_config_path or Path(self._runtime_dir()) / "ngrok" / "agent.yml").expanduser()
        t = self.tunnels
        if t is not None and not (region and t.region != region):
            same = (t.config_path == config_path and t.startup_timeout == self.ngrok_startup_timeout
                    and (not self.ngrok_path or t.ngrok_path == self.ngrok_path))
            if same or t.is_running():
                return t
        from vllm_magics.tunnel.manager import TunnelManager

        if t is not None:
            t.stop()
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
        from vllm_magics.tunnel.colab import colab_proxy_url

        proxy = colab_proxy_url(port, _colab_output())
        if proxy.url:
            print(f"Colab proxy: {proxy.url}  (OpenAI base URL {proxy.openai_base_url})")
        if proxy.shown == "iframe":
            print(f"The server's API docs (/docs) are shown below, through Colab's proxy to port {port}.")
        print(proxy.note)

    @magic_arguments()
    @argument("url", nargs="?", default=None, help="The tunnel to close (public URL or name)")
    @argument("--all", action="store_true", help="Close every tunnel and stop the ngrok agent")
    @line_magic
    def ngrok_down(self, line=""):
        """Close a tunnel (the only one, the given one, or --all)."""
        return self._at_the_edge("%ngrok_down", self._ngrok_down, line)

    def _ngrok_down(self, line, redactor):
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
