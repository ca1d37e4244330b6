"""Where the ngrok authtoken comes from (no IPython, no display).

Order: Colab Secrets (`NGROK_AUTHTOKEN`, then `NGROK_TOKEN`), the `NGROK_AUTHTOKEN` environment
variable, then a hidden prompt (`getpass`) when a person is there to type. Never a magic's argument:
what is typed on a magic line is saved in the notebook and its history.

    token, source = find_token(interactive=True)   # a Secret (masked repr); source: "Colab secret NGROK_AUTHTOKEN", ...
"""
from __future__ import annotations

import getpass as _getpass
import os
from typing import Callable, Mapping

from vllm_magics.errors import NgrokTokenMissing
from vllm_magics.errors import TunnelError  # noqa: F401 (re-exported: defined in errors.py)
from vllm_magics.redact import Secret

SECRET_NAMES = ("NGROK_AUTHTOKEN", "NGROK_TOKEN")
ENV_NAME = "NGROK_AUTHTOKEN"
DASHBOARD_TOKEN_URL = "https://dashboard.ngrok.com/get-started/your-authtoken"

HOW_TO_ADD = (
    f"Get your token at {DASHBOARD_TOKEN_URL} (a free account is enough). On Colab: click the key icon "
    "(Secrets) in the left bar, add a secret named NGROK_AUTHTOKEN with the token as its value, and switch "
    "on \"Notebook access\" for it. Elsewhere: set the environment variable NGROK_AUTHTOKEN before starting "
    "Jupyter. Do not type the token on a magic line: it would be saved in the notebook.")
HOW_TO_ADD_SHORT = f"Get your token at {DASHBOARD_TOKEN_URL} (a free account is enough)."


def _colab_userdata():
    try:
        from google.colab import userdata  # type: ignore[import-not-found]
    except ImportError:
        return None
    return userdata


class _ColabAnswer:
    """What Colab Secrets said for each name asked: the token and its name, or why there is none."""

    def __init__(self):
        self.token: Secret | None = None
        self.name: str | None = None
        self.denied: list[str] = []
        self.problem: str | None = None  # one line when Colab Secrets could not answer at all


def _from_colab(userdata) -> _ColabAnswer:
    """Ask Colab Secrets for each name. `userdata.get` (googlecolab/colabtools google/colab/userdata.py)
    raises SecretNotFoundError (no such secret), NotebookAccessError (it exists; this notebook may not read
    it), TimeoutException after 10 s without an answer ("Secrets can only be fetched when running from the
    Colab UI": an editor's Colab extension, a script, an export) and ValueError for a name it refuses."""
    not_found = getattr(userdata, "SecretNotFoundError", ())
    no_access = getattr(userdata, "NotebookAccessError", ())
    timed_out = getattr(userdata, "TimeoutException", ())
    answer = _ColabAnswer()
    for name in SECRET_NAMES:
        try:
            value = Secret(str(userdata.get(name) or "").strip())
        except no_access:  # type: ignore[misc]
            answer.denied.append(name)
            continue
        except not_found:  # type: ignore[misc]
            continue
        except timed_out:  # type: ignore[misc]
            # The next name would wait 10 s more for the same silence.
            answer.problem = ("Colab Secrets did not answer: Colab gives secrets only to notebooks run from its "
                              "own page in the browser (not from an editor's Colab extension, a script or an "
                              f"export). Set the environment variable {ENV_NAME} instead.")
            break
        except ValueError as exc:
            answer.problem = f"Colab Secrets refused the name {name}: {_one_line(exc)}."
            continue
        except Exception as exc:  # noqa: BLE001 - Colab's messaging may fail in ways not listed above
            answer.problem = f"Colab Secrets failed ({exc.__class__.__name__}: {_one_line(exc)})."
            break
        if value:
            answer.token, answer.name = value, name
            return answer
    return answer


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or exc.__class__.__name__


def _denied_text(denied) -> str:
    names = " and ".join(denied)
    return (f"The Colab secret {names} exists, but this notebook has no access to it: open the key icon "
            "(Secrets) in the left bar and switch on \"Notebook access\" for it, then run this again.")


def find_token(interactive: bool, *, environ: Mapping[str, str] | None = None,
               prompt: Callable[[str], str] | None = None) -> tuple[Secret, str]:
    """The ngrok authtoken (a Secret: its repr is masked) and where it came from: "Colab secret
    NGROK_AUTHTOKEN", "Colab secret NGROK_TOKEN", "environment variable NGROK_AUTHTOKEN" or "typed in".

    `interactive`: a person can answer a hidden prompt (getpass) when nothing else has a token.
    Raises NgrokTokenMissing with how to add one (and, when a Colab secret exists but this notebook may
    not read it, or Colab Secrets could not answer, says so in one line)."""
    colab = _ColabAnswer()
    userdata = _colab_userdata()
    if userdata is not None:
        colab = _from_colab(userdata)
        if colab.token:
            return colab.token, f"Colab secret {colab.name}"
    # Not bound to a local: a traceback with locals would print the whole environment (other keys too).
    value = Secret(((os.environ if environ is None else environ).get(ENV_NAME) or "").strip())
    if value:
        return value, f"environment variable {ENV_NAME}"
    why = _denied_text(colab.denied) if colab.denied else colab.problem
    if interactive:
        ask = prompt or _getpass.getpass
        text = "ngrok authtoken (hidden; not saved in the notebook): "
        if why:
            text = why + " Or paste the " + text
        try:
            value = Secret((ask(text) or "").strip())
        except (EOFError, OSError):  # no stdin after all (a kernel that does not allow input)
            value = Secret("")
        if value:
            return value, "typed in"
    if colab.denied:
        raise NgrokTokenMissing(_denied_text(colab.denied) + f" (Or set the environment variable {ENV_NAME}.)",
                                tuple(colab.denied))
    if colab.problem:
        raise NgrokTokenMissing(f"No ngrok authtoken found. {colab.problem} {HOW_TO_ADD_SHORT}")
    raise NgrokTokenMissing("No ngrok authtoken found. " + HOW_TO_ADD)


def find_authtoken(interactive: bool, *, environ: Mapping[str, str] | None = None,
                   prompt: Callable[[str], str] | None = None) -> tuple[str, str]:
    """find_token(), the token as plain text (for scripts that pass it on themselves)."""
    token, source = find_token(interactive, environ=environ, prompt=prompt)
    return token.reveal(), source
