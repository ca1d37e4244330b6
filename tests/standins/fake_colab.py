"""Stand-ins for the two `google.colab` modules the tunnel code meets (Colab itself cannot run here).

Each imitates googlecolab/colabtools as read on GitHub (read_file of the files named), that is
https://github.com/googlecolab/colabtools/blob/main/google/colab/userdata.py, .../google/colab/errors.py,
.../google/colab/output/_util.py (serve_kernel_port_as_*) and .../google/colab/output/_js.py (eval_js):
- `userdata` after google/colab/userdata.py (the version with TimeoutException): get(key) raises
  ValueError('Please enter a valid secret name') for an empty or non-str key and ValueError('Secret name
  cannot contain spaces or whitespace') for one with whitespace; asks the page (blocking_request,
  timeout_sec=10) and raises TimeoutException(key) when no answer comes ("Requesting secret KEY timed out.
  Secrets can only be fetched when running from the Colab UI."), SecretNotFoundError(key) ("Secret KEY does
  not exist.") when it does not exist, NotebookAccessError(key) ("Notebook does not have access to secret
  KEY") when this notebook may not read it, else returns the payload. SecretNotFoundError and
  TimeoutException subclass google.colab.errors.Error (a plain Exception subclass, google/colab/errors.py);
  NotebookAccessError subclasses Exception directly. The 10 s wait is not imitated (a guess that no test
  needs it: the code under test must not ask again after a timeout, which `asked` shows).
- `output` after google/colab/output/_util.py and _js.py: eval_js(script, ignore_result=False,
  timeout_sec=None); serve_kernel_port_as_iframe(port, path='/', width='100%', height='400',
  cache_in_notebook=False); serve_kernel_port_as_window(port, path='/', anchor_text=None,
  skip_warning=False), DEPRECATED, which prints a red warning unless skip_warning. Both serve functions
  only display JavaScript (recorded in `calls` here); what the page then shows is not imitated.
"""
from __future__ import annotations

import re
import sys
import types

NO_ANSWER = object()  # a secrets value: the page never answers (run outside Colab's UI)


def install(monkeypatch, name: str, module: types.ModuleType) -> types.ModuleType:
    """Put `module` where `from google.colab import <name>` finds it (keeping the other stand-in)."""
    colab = sys.modules.get("google.colab")
    if not isinstance(colab, types.ModuleType) or not getattr(colab, "_standin", False):
        colab = types.ModuleType("google.colab")
        colab._standin = True
    setattr(colab, name, module)
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    monkeypatch.setitem(sys.modules, f"google.colab.{name}", module)
    return module


def userdata(monkeypatch, secrets: dict) -> types.ModuleType:
    """`secrets`: name -> value (a str), None (exists, no notebook access) or NO_ANSWER (time-out)."""
    mod = types.ModuleType("google.colab.userdata")

    class Error(Exception):
        """google.colab.errors.Error"""

    class NotebookAccessError(Exception):
        def __init__(self, key):
            super().__init__(f"Notebook does not have access to secret {key}")

    class SecretNotFoundError(Error):
        def __init__(self, key):
            super().__init__(f"Secret {key} does not exist.")

    class TimeoutException(Error):
        def __init__(self, key):
            super().__init__(f"Requesting secret {key} timed out. Secrets can only be fetched when"
                             " running from the Colab UI.")

    asked: list = []

    def get(key):
        asked.append(key)
        if not key or not isinstance(key, str):
            raise ValueError("Please enter a valid secret name")
        if re.search(r"\s", key):
            raise ValueError("Secret name cannot contain spaces or whitespace")
        if secrets.get(key) is NO_ANSWER:
            raise TimeoutException(key)
        if key not in secrets:
            raise SecretNotFoundError(key)
        if secrets[key] is None:
            raise NotebookAccessError(key)
        return secrets[key]

    mod.NotebookAccessError, mod.SecretNotFoundError, mod.TimeoutException = (
        NotebookAccessError, SecretNotFoundError, TimeoutException)
    mod.get, mod.asked = get, asked
    return install(monkeypatch, "userdata", mod)


def output(monkeypatch, url=None, fail: bool = False, iframe: bool = True) -> types.ModuleType:
    """`url`: what the page answers to proxyPort; `fail`: eval_js raises (no page, or no answer in time);
    `iframe=False`: an older Colab without serve_kernel_port_as_iframe.

    What the real eval_js does when the page does not answer: _js.py waits in
    google.colab/_message.py read_reply_from_input(request_id, timeout_sec), which returns None when
    the time is up (that is `url=None` here) and raises MessageError (a google.colab.errors.Error)
    when the page answers with an error. The TimeoutError that `fail` raises stands for that error
    reply; its type is a GUESS (the code under test catches any Exception there).
    The warning printed by serve_kernel_port_as_window is quoted from _util.py."""
    out = types.ModuleType("google.colab.output")
    out.calls = []

    def eval_js(script, ignore_result=False, timeout_sec=None):
        out.calls.append(("eval_js", script, timeout_sec))
        if fail:
            raise TimeoutError("no answer from the page")
        return url

    def serve_kernel_port_as_iframe(port, path="/", width="100%", height="400", cache_in_notebook=False):
        out.calls.append(("iframe", port, path))

    def serve_kernel_port_as_window(port, path="/", anchor_text=None, skip_warning=False):
        if not skip_warning:
            print("\x1b[31mWarning: This function may stop working due to changes in browser security.\n"
                  "Try `serve_kernel_port_as_iframe` instead. \x1b[0m")
        out.calls.append(("window", port, path))

    out.eval_js, out.serve_kernel_port_as_window = eval_js, serve_kernel_port_as_window
    if iframe:
        out.serve_kernel_port_as_iframe = serve_kernel_port_as_iframe
    return install(monkeypatch, "output", out)
