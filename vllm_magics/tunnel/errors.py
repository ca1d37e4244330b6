"""The tunnel's errors, and ngrok's own failures said in plain words.

TunnelError (the base) and NgrokTokenMissing live in tunnel/token.py, so that finding a token needs
nothing else; NotOnColab lives in tunnel/colab.py. Every message here is one paragraph a student can act
on: what happened, ngrok's code, what to do, where (a dashboard link).
"""
from __future__ import annotations

from typing import Callable

from vllm_magics.tunnel.agent import AgentFailure
from vllm_magics.tunnel.token import DASHBOARD_TOKEN_URL, TunnelError
from vllm_magics.errors import NgrokAuthError, NgrokSessionLimit, NgrokNotInstalled
from vllm_magics.errors import NgrokStartTimeout, AgentConfigUnwritable, InsecureShareRefused  # noqa: F401 (re-exported: defined in errors.py)

AGENTS_URL = "https://dashboard.ngrok.com/agents"


def translate(failure: AgentFailure, *, redact: Callable[[str], str], token_source: str | None = None,
              token_masked: str | None = None, opening: bool = False) -> TunnelError:
    """A plain-words TunnelError for what the agent said. Its texts are redacted already; `redact` runs
    once more, for secrets learnt since. `opening`: the failure came while creating an endpoint."""
    code = failure.code
    detail = redact(failure.text)
    source = f" (from {token_source})" if token_source else ""
    if failure.kind in ("install", "unsupported"):
        return NgrokNotInstalled(f"The ngrok agent could not be installed: {detail}", detail=detail)
    if code == "ERR_NGROK_4018":
        return NgrokAuthError(
            f"ngrok refused to start: the authtoken{source} is missing or invalid (ERR_NGROK_4018). Copy it "
            f"again from {DASHBOARD_TOKEN_URL} (sign up free at dashboard.ngrok.com if you have no account) "
            "and store it as the Colab secret NGROK_AUTHTOKEN (key icon in the left bar, Notebook access on).",
            code=code, detail=detail)
    if code == "ERR_NGROK_105":
        shown = f" ({token_masked})" if token_masked else ""
        return NgrokAuthError(
            f"ngrok says the authtoken{source}{shown} does not look like an ngrok authtoken (ERR_NGROK_105). "
            f"Copy only the token itself from {DASHBOARD_TOKEN_URL}: no `ngrok config add-authtoken` "
            "in front of it, no quotes, no spaces.", code=code, detail=detail)
    if code == "ERR_NGROK_107":
        return NgrokAuthError(
            f"ngrok says the authtoken{source} is invalid: it was reset or revoked (ERR_NGROK_107). Copy "
            f"the current one from {DASHBOARD_TOKEN_URL}.", code=code, detail=detail)
    if code == "ERR_NGROK_108":
        return NgrokSessionLimit(
            "Another ngrok agent is already online with this account (ERR_NGROK_108), and free accounts "
            f"allow one at a time. Stop it: close its tunnel in the other notebook (or stop that "
            f"notebook's runtime), or disconnect the session at {AGENTS_URL}; then run this again.",
            code=code, detail=detail)
    if failure.kind == "http" or opening:
        what = f" (HTTP {failure.status})" if failure.status else ""
        return TunnelError(f"ngrok refused to open the tunnel{what}: {detail}", code=code, detail=detail)
    if code:
        return TunnelError(f"ngrok could not start ({code}): {detail}", code=code, detail=detail)
    tail = "; ".join(redact(line) for line in failure.last_lines)
    more = f" Its last lines: {tail}" if tail else ""
    return TunnelError(f"The ngrok agent could not start: {detail}.{more}", detail=detail)
