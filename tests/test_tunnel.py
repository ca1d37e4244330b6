"""The tunnel end to end: TunnelManager and PyngrokAgent (vllm_magics.tunnel) with pyngrok 9.1's real code
driving the stand-in agent process (tests/tunnel_standin.py): opening, reaching, streaming, closing, the
token kept secret, inspection off. (Failures: test_tunnel_failures.py; the manager's decisions alone,
in-process: test_tunnel_manager.py.)
"""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import requests
import yaml

from helpers import free_port, wait_until
from standins import fake_colab
from vllm_magics.server.process import pid_alive
from vllm_magics.tunnel.manager import InsecureShareRefused, TunnelError, TunnelManager, health_through
from vllm_magics.tunnel.token import NgrokTokenMissing

import tunnel_standin
from tunnel_standin import API_KEY, PASSWORD, TOKEN, _agent_pids, _api_requests, _assert_secret_free

# Fixtures (pytest finds them by name in this module).
_clean_pyngrok = tunnel_standin._clean_pyngrok
record, ngrok_bin, make_manager = tunnel_standin.record, tunnel_standin.ngrok_bin, tunnel_standin.make_manager
log_records, upstream = tunnel_standin.log_records, tunnel_standin.upstream


# -- opening, reaching, streaming -----------------------------------------------------------------------
def test_open_reaches_upstream_and_streams_sse(make_manager, upstream):
    m = make_manager()
    t = m.open(upstream.port, api_key=API_KEY, authtoken=TOKEN, token_source="test")
    assert t.public_url.startswith("http://127.0.0.1:") and t.port == upstream.port
    assert t.openai_base_url == t.public_url + "/v1"
    assert t.upstream == f"http://127.0.0.1:{upstream.port}" and not t.basic_auth

    assert requests.get(t.public_url + "/health", timeout=30).status_code == 200
    assert requests.get(t.openai_base_url + "/models", timeout=30).status_code == 401
    r = requests.get(t.openai_base_url + "/models", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30)
    assert r.json()["data"][0]["id"] == "m"
    r = requests.post(t.public_url + "/echo", data=b'{"x": 1}', timeout=30)
    assert r.json() == {"method": "POST", "body": '{"x": 1}'}
    assert health_through(t.public_url, timeout=30) == 200

    # SSE: the first event arrives while the upstream still holds the second back.
    with requests.get(t.public_url + "/sse", stream=True, timeout=30) as resp:
        it = resp.iter_content(chunk_size=None)
        got = b""
        while b"data: 1" not in got:
            got += next(it)
        assert b"data: 2" not in got
        upstream.second.set()
        got += b"".join(it)
    assert got.endswith(b"data: 2\n\ndata: [DONE]\n\n")


def test_list_close_close_all_and_stop(make_manager, upstream, record):
    m = make_manager()
    t1 = m.open(upstream.port, api_key=API_KEY, authtoken=TOKEN)
    t2 = m.open(upstream.port, api_key=API_KEY)  # the agent is running: no token needed again
    t3 = m.open(upstream.port, api_key=API_KEY)
    assert [t.public_url for t in m.list()] == [t1.public_url, t2.public_url, t3.public_url]
    assert len(_agent_pids(record)) == 1

    assert m.close(t1.public_url) is True
    assert [t.name for t in m.list()] == [t2.name, t3.name]
    with pytest.raises(requests.ConnectionError):
        requests.get(t1.public_url + "/health", timeout=2)
    assert m.close("https://nothing.example") is False
    assert m.close(t2.name) is True  # by name works too
    assert m.close_all() == 1 and m.list() == []
    assert [r["method"] for r in _api_requests(record)] == ["POST"] * 3 + ["DELETE"] * 3

    pid = m.agent_pid
    assert pid and m.is_running()
    m.stop()
    assert not m.is_running() and m.agent_pid is None and m.list() == []
    assert wait_until(lambda: not pid_alive(pid), 60)
    m.stop()  # twice is fine


def test_a_second_manager_uses_the_running_agent_and_leaves_it(make_manager, upstream, ngrok_bin, tmp_path):
    first = make_manager()
    first.open(upstream.port, api_key=API_KEY, authtoken=TOKEN)
    second = make_manager(config_path=tmp_path / "other" / "agent.yml")
    t = second.open(upstream.port, api_key=API_KEY)  # no token: pyngrok runs one agent per binary
    assert second.agent_pid == first.agent_pid
    second.stop()
    assert first.is_running() and len(first.list()) == 1
    with pytest.raises(requests.ConnectionError):
        requests.get(t.public_url, timeout=2)


# -- the token stays secret -----------------------------------------------------------------------------
def test_token_is_on_no_argv_in_no_log_and_in_a_private_file(make_manager, upstream, record, log_records,
                                                             monkeypatch, capfd):
    # pyngrok copies $NGROK_AUTHTOKEN into PyngrokConfig.auth_token and would pass `--authtoken TOKEN`.
    monkeypatch.setenv("NGROK_AUTHTOKEN", TOKEN)
    m = make_manager()
    assert m.agent.config.auth_token is None
    t = m.open(upstream.port, api_key=API_KEY, basic_auth=("student", PASSWORD))  # token found in the env
    assert m.token_source == "environment variable NGROK_AUTHTOKEN"

    argv = Path(f"/proc/{m.agent_pid}/cmdline").read_bytes().split(b"\0")
    assert TOKEN.encode() not in b" ".join(argv) and b"--authtoken" not in argv
    assert argv[argv.index(b"--config") + 1] == str(m.config_path).encode()
    assert [TOKEN not in " ".join(json.loads(p.read_text())["argv"]) for p in record.glob("pid-*.json")] == [True]

    st, dst = os.stat(m.config_path), os.stat(m.config_path.parent)
    assert stat.S_IMODE(st.st_mode) == 0o600 and stat.S_IMODE(dst.st_mode) == 0o700
    agent_conf = yaml.safe_load(m.config_path.read_text())
    assert agent_conf["version"] == "3" and agent_conf["agent"]["authtoken"] == TOKEN

    assert health_through(t.public_url, basic_auth=("student", PASSWORD)) == 200
    m.close_all()
    names = {r.name for r in log_records}
    assert {"pyngrok.process", "pyngrok.process.ngrok", "pyngrok.ngrok"} <= names
    # pyngrok logs the POST body at DEBUG: the basic-auth password is in it, masked.
    assert any("student:" in r.getMessage() for r in log_records)
    out, err = capfd.readouterr()
    _assert_secret_free(TOKEN, log_records, out, err)
    _assert_secret_free(PASSWORD, log_records, out, err)


def test_inspection_is_off(make_manager, upstream, record):
    m = make_manager()
    t = m.open(upstream.port, api_key=API_KEY, authtoken=TOKEN)
    (post,) = [r for r in _api_requests(record) if r["method"] == "POST"]
    assert post["body"]["inspect"] is False
    assert post["body"]["upstream"] == {"url": f"http://127.0.0.1:{upstream.port}"}
    assert yaml.safe_load(m.config_path.read_text())["agent"]["inspect_db_size"] == -1
    detail = requests.get(f"{m.api_url}/api/endpoints/{t.name}", timeout=30).json()
    assert detail["inspect"] is False

    r = requests.get(t.openai_base_url + "/models", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30)
    assert r.status_code == 200
    captured = requests.get(f"{m.api_url}/api/requests/http", timeout=30).json()
    assert captured["requests"] == []


def test_the_standin_keeps_headers_when_inspection_is_on(ngrok_bin, tmp_path, upstream):
    """Why inspection must be off: with pyngrok's defaults the agent keeps every request, Authorization
    header included, for anyone on the machine to read without auth."""
    from pyngrok import ngrok
    from pyngrok.conf import PyngrokConfig

    conf_path = tmp_path / "plain.yml"
    conf_path.write_text(yaml.safe_dump({"version": "3", "agent": {
        "authtoken": TOKEN, "web_addr": f"127.0.0.1:{free_port()}"}}))
    cfg = PyngrokConfig(ngrok_path=str(ngrok_bin), config_path=str(conf_path))
    t = ngrok.connect(str(upstream.port), pyngrok_config=cfg)
    requests.get(t.public_url + "/v1/models", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30)
    api = ngrok.get_ngrok_process(cfg).api_url
    (req,) = requests.get(f"{api}/api/requests/http", timeout=30).json()["requests"]
    assert req["request"]["headers"]["Authorization"] == [f"Bearer {API_KEY}"]


def test_the_old_auth_option_is_refused_basic_auth_is_a_traffic_policy(make_manager, upstream, record):
    from pyngrok import ngrok
    from pyngrok.exception import PyngrokNgrokHTTPError

    m = make_manager()
    m.start(TOKEN)
    # pyngrok 9 still accepts auth= and renames it basic_auth=, which /api/endpoints does not know.
    with pytest.raises(PyngrokNgrokHTTPError) as info:
        ngrok.connect(str(upstream.port), pyngrok_config=m.agent.config, auth="student:" + PASSWORD)
    assert info.value.status_code == 400 and "basic_auth" in info.value.body

    t = m.open(upstream.port, api_key=API_KEY, basic_auth="student:" + PASSWORD)
    assert t.basic_auth
    policy = json.loads(_api_requests(record)[-1]["body"]["traffic_policy"])
    assert policy["on_http_request"][0]["actions"][0] == {
        "type": "basic-auth", "config": {"credentials": [f"student:{PASSWORD}"]}}
    assert requests.get(t.public_url + "/health", timeout=30).status_code == 401
    assert health_through(t.public_url) == 401
    assert health_through(t.public_url, basic_auth=("student", PASSWORD)) == 200
    # The API key rides in the same header: a client cannot send both (browser use only).
    r = requests.get(t.openai_base_url + "/models", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30)
    assert r.status_code == 401

    with pytest.raises(TunnelError, match="8 to 128"):
        m.open(upstream.port, api_key=API_KEY, basic_auth=("student", "short"))


def test_a_basic_auth_password_with_quotes_is_in_no_log_record_however_escaped(make_manager, upstream,
                                                                                  log_records):
    # pyngrok's DEBUG lines show the traffic policy escaped: a repr of its JSON ("Creating tunnel with
    # options", "Making POST request") and JSON of its JSON (the agent's "Response 201").
    password = 'pa"ss\\word-0123456789'
    m = make_manager()
    m.open(upstream.port, api_key=API_KEY, authtoken=TOKEN, basic_auth=("student", password))
    said = [r.getMessage() for r in log_records]
    assert any("basic-auth" in line for line in said)  # the lines that carried it are there
    assert not [line for line in said if "word-0123456789" in line]


def test_browser_warning_page_and_the_skip_header(make_manager, upstream):
    m = make_manager()
    t = m.open(upstream.port, api_key=API_KEY, authtoken=TOKEN)
    browser = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64)"}
    before = len(upstream.seen)
    r = requests.get(t.public_url + "/health", headers=browser, timeout=30)
    assert "ERR_NGROK_6024" in r.text and len(upstream.seen) == before
    r = requests.get(t.public_url + "/health", headers={**browser, "ngrok-skip-browser-warning": "1"}, timeout=30)
    assert r.status_code == 200 and len(upstream.seen) == before + 1
    assert upstream.seen[-1]["headers"]["ngrok-skip-browser-warning"] == "1"
    assert health_through(f"http://127.0.0.1:{free_port()}", timeout=1) is None


# -- refusing to expose a server without a key ----------------------------------------------------------
def test_refuses_a_server_without_api_key_unless_insecure(make_manager, upstream, record):
    m = make_manager()
    with pytest.raises(InsecureShareRefused) as info:
        m.open(upstream.port, api_key=None, authtoken=TOKEN)
    assert "no API key" in str(info.value) and "insecure=True" in str(info.value)  # "--restart": the magic's
    assert not m.is_running() and _agent_pids(record) == []

    t = m.open(upstream.port, api_key=None, insecure=True, authtoken=TOKEN)
    assert requests.get(t.public_url + "/health", timeout=30).status_code == 200


# -- the token from Colab Secrets ---------------------------------------------------------------------
def test_manager_finds_the_token_itself(make_manager, upstream, monkeypatch):
    fake_colab.userdata(monkeypatch, {"NGROK_AUTHTOKEN": TOKEN})
    m = make_manager()
    m.open(upstream.port, api_key=API_KEY)
    assert m.token_source == "Colab secret NGROK_AUTHTOKEN"
    m2 = TunnelManager(ngrok_path=m.ngrok_path + "-other", config_path=m.config_path)
    fake_colab.userdata(monkeypatch, {})
    with pytest.raises(NgrokTokenMissing):
        m2.open(upstream.port, api_key=API_KEY)
