"""The card %ngrok_up shows once a tunnel is open: addresses, the key (masked), curl and Python examples,
and what the user should know. Plain data in, text and HTML out."""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from vllm_magics.notebook.views.render import _Bundle, render
from vllm_magics.redact import mask_secret

KEY_SCOPE_NOTE = (
    "vLLM's API key guards only the /v1 routes: /health, /metrics, /tokenize, /detokenize, /version and /docs "
    "answer anyone who has the link.")
BASIC_AUTH_NOTE = (
    "Basic auth is for browsers only: ngrok's basic auth and the OpenAI clients both use the Authorization "
    "header, so a client cannot send both the password and the API key.")
# Colab's FAQ (research.google.com/colaboratory/faq.html) lists among what managed runtimes do not allow
# "file hosting, media serving, or other web service offerings not related to interactive compute with
# Colab" and "connecting to remote proxies"; notebooks running tunnels have been disconnected
# (TheLastBen/fast-stable-diffusion#2704, ngrok/ngrok-python#100).
COLAB_FAQ_NOTE = ("Colab's FAQ does not allow web services unrelated to interactive compute, nor connecting "
                  "to remote proxies, and notebooks that run tunnels have been disconnected: share for your "
                  "own interactive work, and close it when done.")


def curl_example(openai_base_url: str, api_key: str | None, basic_auth: bool = False, model: str = "MODEL") -> str:
    """A curl command against the tunnel, the key masked (mask_secret): a reader must paste the real one."""
    lines = [f"curl {openai_base_url}/chat/completions \\"]
    if api_key:
        lines.append(f'  -H "Authorization: Bearer {mask_secret(api_key)}" \\')
    elif basic_auth:
        lines.append("  -u USER:PASSWORD \\")
    lines.append('  -H "Content-Type: application/json" \\')
    body = {"model": model, "messages": [{"role": "user", "content": "Hello!"}]}
    lines.append(f"  -d '{json.dumps(body)}'")
    return "\n".join(lines)


def python_example(openai_base_url: str, api_key: str | None, model: str = "MODEL") -> str:
    """The `openai` package against the tunnel, the key masked."""
    key = mask_secret(api_key) if api_key else "EMPTY"
    return "\n".join([
        "from openai import OpenAI",
        "",
        f'client = OpenAI(base_url="{openai_base_url}", api_key="{key}")',
        "reply = client.chat.completions.create(",
        f'    model="{model}", messages=[{{"role": "user", "content": "Hello!"}}])',
        "print(reply.choices[0].message.content)",
    ])


@dataclass
class TunnelCard(_Bundle):
    """What %ngrok_up shows once a tunnel is open."""

    headline: str
    public_url: str
    openai_base_url: str
    upstream: str
    api_key_shown: str  # masked unless the user asked for it (--show-key)
    has_key: bool
    basic_auth: bool
    curl: str
    python: str
    notes: list[str] = field(default_factory=list)

    @property
    def linkable(self) -> bool:
        """Only a web address becomes a link (the URL comes from the agent binary, not from us)."""
        return self.public_url.startswith(("https://", "http://"))

    def text(self) -> str:
        lines = [self.headline, f"  public URL:  {self.public_url}", f"  OpenAI base: {self.openai_base_url}",
                 f"  forwards to: {self.upstream}", f"  API key:     {self.api_key_shown}",
                 "", "curl:", self.curl, "", "Python:", self.python]
        lines += ["", *[f"note: {n}" for n in self.notes]] if self.notes else []
        return "\n".join(lines)

    def html(self) -> str:
        return render("tunnel_card.html.j2", c=self)


def tunnel_card(tunnel, api_key: str | None, model: str = "MODEL", *, health: int | None | str = "",
                basic_auth: tuple[str, str] | None = None, token_source: str | None = None,
                show_key: bool = False, on_colab: bool = False) -> TunnelCard:
    """The card for `tunnel` (public_url, openai_base_url, port, upstream, basic_auth). `health`: the status
    of /health through the tunnel (None: no answer; "" when not checked). `basic_auth`: the generated
    browser credentials, shown. `token_source`: where the ngrok token came from."""
    notes = []
    if health != "":
        notes.append(f"/health through the tunnel: {health}" + (
            " (ok)" if health == 200 else " - the tunnel is open but the server did not answer through it"))
    if basic_auth is not None:
        notes.append(f"Browsers will ask for user {basic_auth[0]} / password {basic_auth[1]}.")
    if not api_key:
        notes.append("This server has no API key: anyone with the link can use it.")
    notes.append(KEY_SCOPE_NOTE)
    if tunnel.basic_auth:
        notes.append(BASIC_AUTH_NOTE)
    notes.append("The link works while this runtime runs; %ngrok_down closes it.")
    if on_colab:
        notes.append(COLAB_FAQ_NOTE)
    if token_source:
        notes.append(f"token from {token_source}; request inspection is off.")
    shown_key = (api_key if show_key else mask_secret(api_key)) if api_key else "(none)"
    return TunnelCard(
        headline=f"Shared port {tunnel.port} at {tunnel.public_url}", public_url=tunnel.public_url,
        openai_base_url=tunnel.openai_base_url, upstream=tunnel.upstream or f"http://127.0.0.1:{tunnel.port}",
        api_key_shown=shown_key, has_key=bool(api_key), basic_auth=tunnel.basic_auth,
        curl=curl_example(tunnel.openai_base_url, api_key, tunnel.basic_auth, model),
        python=python_example(tunnel.openai_base_url, api_key, model), notes=notes)
