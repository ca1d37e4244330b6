"""Colab specifics of the tunnel: where the ngrok token comes from (Colab Secrets, with every error of
`google.colab.userdata.get` said in one line), Colab's own port proxy, and %ngrok_up on Colab.
The Colab modules are stand-ins (tests/standins/fake_colab.py, each behaviour cited)."""
from __future__ import annotations

import pickle
import sys

import pytest

from standins import fake_colab
import test_tunnel_secrets
import tunnel_standin
from test_tunnel_secrets import TOKEN

# Fixtures (pytest finds them by name in this module).
upstream, verbose_shell = tunnel_standin.upstream, test_tunnel_secrets.verbose_shell
from vllm_magics.redact import Secret
from vllm_magics.tunnel.colab import NotOnColab, colab_proxy_url
from vllm_magics.tunnel.token import NgrokTokenMissing, find_authtoken, find_token


@pytest.fixture(autouse=True)
def _not_on_colab(monkeypatch):
    monkeypatch.delenv("NGROK_AUTHTOKEN", raising=False)
    monkeypatch.setitem(sys.modules, "google.colab", None)  # not on Colab unless a test says so


def _no_prompt(text):
    raise AssertionError("must not prompt")


# -- where the token comes from -------------------------------------------------------------------------
def test_token_order_colab_secret_first(monkeypatch):
    ud = fake_colab.userdata(monkeypatch, {"NGROK_AUTHTOKEN": f" {TOKEN}\n", "NGROK_TOKEN": "other"})
    monkeypatch.setenv("NGROK_AUTHTOKEN", "from-env")
    assert find_authtoken(interactive=True, prompt=_no_prompt) == (TOKEN, "Colab secret NGROK_AUTHTOKEN")
    assert ud.asked == ["NGROK_AUTHTOKEN"]


def test_token_order_second_secret_name_then_env(monkeypatch):
    fake_colab.userdata(monkeypatch, {"NGROK_TOKEN": TOKEN})
    monkeypatch.setenv("NGROK_AUTHTOKEN", "from-env")
    assert find_authtoken(interactive=False) == (TOKEN, "Colab secret NGROK_TOKEN")
    fake_colab.userdata(monkeypatch, {})
    assert find_authtoken(interactive=True, prompt=_no_prompt) == ("from-env", "environment variable NGROK_AUTHTOKEN")


def test_token_env_when_not_on_colab(monkeypatch):
    monkeypatch.setenv("NGROK_AUTHTOKEN", TOKEN)
    assert find_authtoken(interactive=False) == (TOKEN, "environment variable NGROK_AUTHTOKEN")


def test_token_prompt_only_when_interactive(monkeypatch):
    monkeypatch.setattr("getpass.getpass", lambda text: f"  {TOKEN} ")
    assert find_authtoken(interactive=True) == (TOKEN, "typed in")
    with pytest.raises(NgrokTokenMissing):
        find_authtoken(interactive=False)
    with pytest.raises(NgrokTokenMissing):
        find_authtoken(interactive=True, prompt=lambda text: "")


def test_token_missing_says_how_to_add_it(monkeypatch):
    fake_colab.userdata(monkeypatch, {})
    with pytest.raises(NgrokTokenMissing) as info:
        find_authtoken(interactive=False)
    msg = str(info.value)
    for words in ("key icon", "NGROK_AUTHTOKEN", "Notebook access", "environment variable",
                  "dashboard.ngrok.com/get-started/your-authtoken"):
        assert words in msg
    assert info.value.denied == ()


def test_token_secret_without_notebook_access(monkeypatch):
    fake_colab.userdata(monkeypatch, {"NGROK_AUTHTOKEN": None})  # exists; this notebook may not read it
    with pytest.raises(NgrokTokenMissing) as info:
        find_authtoken(interactive=False)
    assert "no access" in str(info.value) and "Notebook access" in str(info.value)
    assert info.value.denied == ("NGROK_AUTHTOKEN",)
    prompts = []
    token, source = find_authtoken(interactive=True, prompt=lambda text: prompts.append(text) or TOKEN)
    assert (token, source) == (TOKEN, "typed in") and "no access" in prompts[0]


def test_secrets_that_time_out_say_why_in_one_line_and_are_asked_once(monkeypatch):
    """Outside Colab's own page (an editor's Colab extension) userdata.get times out after 10 s: one
    line that says so, no second 10 s wait for the other name, and the environment still works."""
    ud = fake_colab.userdata(monkeypatch, {"NGROK_AUTHTOKEN": fake_colab.NO_ANSWER,
                                           "NGROK_TOKEN": fake_colab.NO_ANSWER})
    with pytest.raises(NgrokTokenMissing) as info:
        find_authtoken(interactive=False)
    msg = str(info.value)
    assert "Colab Secrets did not answer" in msg and "own page" in msg and "NGROK_AUTHTOKEN" in msg
    assert "\n" not in msg and "Traceback" not in msg
    assert ud.asked == ["NGROK_AUTHTOKEN"]
    prompts = []
    assert find_authtoken(interactive=True, prompt=lambda t: prompts.append(t) or TOKEN)[1] == "typed in"
    assert "did not answer" in prompts[0]
    monkeypatch.setenv("NGROK_AUTHTOKEN", TOKEN)
    assert find_authtoken(interactive=False) == (TOKEN, "environment variable NGROK_AUTHTOKEN")


def test_other_secrets_errors_are_one_line(monkeypatch):
    ud = fake_colab.userdata(monkeypatch, {})
    real_get = ud.get

    def broken(key):  # a failure Colab's code does not list (a guess at what its messaging could raise)
        raise RuntimeError("messaging channel closed\nsecond line")

    ud.get = broken
    with pytest.raises(NgrokTokenMissing) as info:
        find_authtoken(interactive=False)
    msg = str(info.value)
    assert "\n" not in msg and "Colab Secrets failed (RuntimeError: messaging channel closed second line)" in msg
    # The stand-in refuses names as Colab does (ValueError): our names are fine.
    with pytest.raises(ValueError, match="valid secret name"):
        real_get("")
    with pytest.raises(ValueError, match="whitespace"):
        real_get("NGROK AUTHTOKEN")


def test_find_token_holds_the_token_as_a_secret(monkeypatch):
    fake_colab.userdata(monkeypatch, {"NGROK_AUTHTOKEN": TOKEN})
    token, source = find_token(interactive=False)
    assert isinstance(token, Secret) and token.reveal() == TOKEN and source == "Colab secret NGROK_AUTHTOKEN"
    assert TOKEN not in repr(token) and TOKEN not in str(token) and TOKEN not in f"{token}"
    assert repr((token, source)).count(TOKEN[:3] + "…" + TOKEN[-4:]) == 1
    with pytest.raises(TypeError):
        pickle.dumps(token)  # it would write the value out


# -- Colab's own proxy ----------------------------------------------------------------------------------
def test_colab_proxy_url(monkeypatch, capsys):
    with pytest.raises(NotOnColab):
        colab_proxy_url(8000, None)
    out = fake_colab.output(monkeypatch, url="https://8000-m-s-abc123-a.us-west1-0.prod.colab.dev/")
    p = colab_proxy_url(8000, out, timeout=5)
    assert out.calls[0] == ("eval_js", "google.colab.kernel.proxyPort(8000)", 5)
    assert p.url.endswith("colab.dev/") and p.openai_base_url.endswith("colab.dev/v1")
    assert "only for you" in p.note and "notebook is open" in p.note and not p.link_shown
    # The port's API docs in an iframe: the path Colab still supports.
    assert out.calls[1:] == [("iframe", 8000, "/docs")] and p.shown == "iframe"

    out = fake_colab.output(monkeypatch, fail=True)
    p = colab_proxy_url(8000, out)
    assert p.url is None and not p.link_shown and out.calls[-1] == ("iframe", 8000, "/docs")

    # An older Colab without the iframe function: the deprecated window link, as the fallback only.
    out = fake_colab.output(monkeypatch, fail=True, iframe=False)
    p = colab_proxy_url(8000, out)
    assert p.url is None and p.link_shown and out.calls[-1] == ("window", 8000, "/docs")
    assert "serve_kernel_port_as_iframe" in capsys.readouterr().out  # Colab's own warning


# -- %ngrok_up on Colab ---------------------------------------------------------------------------------
def test_ngrok_up_on_colab_says_what_colabs_faq_says(verbose_shell, monkeypatch, upstream):
    """The card of a tunnel opened on Colab carries one sentence on Colab's FAQ; elsewhere it does not."""
    from vllm_magics.notebook.views.tunnel_card import COLAB_FAQ_NOTE

    shell, printed, _ = verbose_shell
    out, err = printed.run(f"%ngrok_up --port {upstream.port} --insecure")
    assert "/health through the tunnel: 200 (ok)" in out and COLAB_FAQ_NOTE not in out and err == ""
    printed.run("%ngrok_down --all")
    fake_colab.output(monkeypatch, url="https://9-m-s-abc.prod.colab.dev/")  # google.colab is importable now
    out, err = printed.run(f"%ngrok_up --port {upstream.port} --insecure")
    assert COLAB_FAQ_NOTE in out and "remote proxies" in out and err == ""
    assert TOKEN not in printed.everything()


def test_ngrok_up_colab_shows_the_port_in_an_iframe(shell, monkeypatch, capsys):
    out = fake_colab.output(monkeypatch, url="https://9-m-s-abc.prod.colab.dev/")
    shell.run_line_magic("ngrok_up", "--port 9 --insecure --colab")
    printed = capsys.readouterr().out
    assert "Colab proxy: https://9-m-s-abc.prod.colab.dev/" in printed and "(/docs) are shown below" in printed
    assert out.calls[1:] == [("iframe", 9, "/docs")]
