"""Where the ngrok authtoken comes from (no IPython, no display).

Order: Colab Secrets (`NGROK_AUTHTOKEN`, then `NGROK_TOKEN`), the `NGROK_AUTHTOKEN` environment
variable, then a hidden prompt (`getpass`) when a person is there to type. Never a magic's argument:
what is typed on a magic line is saved in the notebook and its history.

    token, source = find_authtoken(interactive=True)   # source: "Colab secret NGROK_AUTHTOKEN", ...
"""
from __future__ import annotations

import getpass as _getpass
import os
from typing import Callable, Mapping

from vllm_magics.errors import VllmMagicsError

SECRET_NAMES = ("NGROK_AUTHTOKEN", "NGROK_TOKEN")
ENV_NAME = "NGROK_AUTHTOKEN"
DASHBOARD_TOKEN_URL = "https://dashboard.ngrok.com/get-started/your-authtoken"

HOW_TO_ADD = (
    f"Get your token at {DASHBOARD_TOKEN_URL} (a free account is enough). On Colab: click the key icon "
    "(Secrets) in the left bar, add a secret named NGROK_AUTHTOKEN with the token as its value, and switch "
    "on \"Notebook access\" for it. Elsewhere: set the environment variable NGROK_AUTHTOKEN before starting "
    "Jupyter. Do not type the token on a magic line: it would be saved in the notebook.")


class TunnelError(VllmMagicsError):
    """A tunnel could not be opened or managed (the base of every error of vllm_magics.tunnel.manager, defined here
    so that a missing token is one too). `code` is ngrok's ERR_NGROK_* code when it gave one; `detail` is
    ngrok's own text, redacted."""

    def __init__(self, message: str, *, code: str | None = None, detail: str = ""):
        super().__init__(message)
        self.code = code
        self.detail = detail


class NgrokTokenMissing(TunnelError):
    """No authtoken anywhere. `denied` names Colab secrets that exist but this notebook may not read."""

    def __init__(self, message: str, denied: tuple[str, ...] = ()):
        super().__init__(message)
        self.denied = denied


def _colab_userdata():
    try:
        from google.colab import userdata  # type: ignore[import-not-found]
    except ImportError:
        return None
    return userdata


def _from_colab(userdata) -> tuple[str | None, str | None, list[str]]:
    """(token, secret name, names denied). Colab's `userdata.get` raises SecretNotFoundError when the
    secret does not exist and NotebookAccessError when it exists but this notebook was not given access."""
    not_found = getattr(userdata, "SecretNotFoundError", ())
    no_access = getattr(userdata, "NotebookAccessError", ())
    denied = []
    for name in SECRET_NAMES:
        try:
            value = userdata.get(name)
        except no_access:  # type: ignore[misc]
            denied.append(name)
            continue
        except not_found:  # type: ignore[misc]
            continue
        except Exception:  # noqa: BLE001 - e.g. no browser attached to answer the request: not there
            continue
        if value and str(value).strip():
            return str(value).strip(), name, denied
    return None, None, denied


def _denied_text(denied) -> str:
    names = " and ".join(denied)
    return (f"The Colab secret {names} exists, but this notebook has no access to it: open the key icon "
            "(Secrets) in the left bar and switch on \"Notebook access\" for it, then run this again.")


def find_authtoken(interactive: bool, *, environ: Mapping[str, str] | None = None,
                   prompt: Callable[[str], str] | None = None) -> tuple[str, str]:
    """The ngrok authtoken and where it came from: "Colab secret NGROK_AUTHTOKEN", "Colab secret
    NGROK_TOKEN", "environment variable NGROK_AUTHTOKEN" or "typed in".

    `interactive`: a person can answer a hidden prompt (getpass) when nothing else has a token.
    Raises NgrokTokenMissing with how to add one (and, when a Colab secret exists but this notebook may
    not read it, says so)."""
    environ = os.environ if environ is None else environ
    denied: list[str] = []
    userdata = _colab_userdata()
    if userdata is not None:
        token, name, denied = _from_colab(userdata)
        if token:
            return token, f"Colab secret {name}"
    value = (environ.get(ENV_NAME) or "").strip()
    if value:
        return value, f"environment variable {ENV_NAME}"
    if interactive:
        ask = prompt or _getpass.getpass
        text = "ngrok authtoken (hidden; not saved in the notebook): "
        if denied:
            text = _denied_text(denied) + " Or paste the " + text
        try:
            value = (ask(text) or "").strip()
        except (EOFError, OSError):  # no stdin after all (a kernel that does not allow input)
            value = ""
        if value:
            return value, "typed in"
    if denied:
        raise NgrokTokenMissing(_denied_text(denied) + f" (Or set the environment variable {ENV_NAME}.)",
                                tuple(denied))
    raise NgrokTokenMissing("No ngrok authtoken found. " + HOW_TO_ADD)
