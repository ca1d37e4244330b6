"""The card %ngrok_up shows (notebook/views/tunnel_card.py): data in, text and HTML out."""
from __future__ import annotations

from vllm_magics.notebook.views.tunnel_card import COLAB_FAQ_NOTE, tunnel_card
from vllm_magics.tunnel.manager import Tunnel

API_KEY = "sk-vllm-test-key-0123456789abcdef"


def test_card_masks_the_key_and_says_what_the_key_guards():
    t = Tunnel(public_url="https://ab12.ngrok-free.app", name="n", port=8000)
    card = tunnel_card(t, API_KEY, model="Qwen/<b>x</b>")
    text, html = card.text(), card.html()
    for s in (text, html):
        assert API_KEY not in s and "sk-…cdef" in s
        assert "https://ab12.ngrok-free.app/v1" in s and "/health" in s and "/metrics" in s
    assert "<b>x</b>" not in html and "&lt;b&gt;x&lt;/b&gt;" in html
    assert 'base_url="https://ab12.ngrok-free.app/v1"' in card.python and "Bearer sk-…cdef" in card.curl

    tb = Tunnel(public_url="https://ab12.ngrok-free.app", name="n", port=8000, basic_auth=True)
    card = tunnel_card(tb, None)
    assert any("no API key" in n for n in card.notes) and any("browsers only" in n for n in card.notes)
    assert "-u USER:PASSWORD" in card.curl and "vm-warn" in card.html()


def test_card_notes_health_credentials_source_and_colab():
    t = Tunnel(public_url="https://ab12.ngrok-free.app", name="n", port=8000, basic_auth=True)
    card = tunnel_card(t, API_KEY, health=200, basic_auth=("vllm", "pw-123456789"), token_source="test")
    assert card.notes[0] == "/health through the tunnel: 200 (ok)"
    assert card.notes[1] == "Browsers will ask for user vllm / password pw-123456789."
    assert card.notes[-1] == "token from test; request inspection is off."
    assert COLAB_FAQ_NOTE not in card.notes and card.api_key_shown == "sk-…cdef"

    card = tunnel_card(t, API_KEY, health=None, on_colab=True, show_key=True)
    assert card.notes[0].startswith("/health through the tunnel: None - the tunnel is open but")
    assert COLAB_FAQ_NOTE in card.notes and COLAB_FAQ_NOTE in card.text() and "remote proxies" in card.html()
    assert card.api_key_shown == API_KEY and API_KEY not in card.curl + card.python  # examples stay masked


def test_only_a_web_address_becomes_a_link():
    t = Tunnel(public_url="javascript:alert(1)", name="n", port=8000)
    html = tunnel_card(t, API_KEY).html()
    assert "href=" not in html and "javascript:alert(1)" in html
    assert 'href="https://x.ngrok-free.app"' in tunnel_card(
        Tunnel(public_url="https://x.ngrok-free.app", name="n", port=1), API_KEY).html()
