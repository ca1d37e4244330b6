"""The tunnel layer (vllm_magics.tunnel.manager, vllm_magics.tunnel.token) against pyngrok 9.1 and a stand-in agent.

The ngrok cloud is out of reach here, so tests/standins/fake_ngrok.py plays the agent: pyngrok starts it
exactly as it starts the real one (argv, logfmt lines on stdout, the /api/endpoints API), and each
endpoint's "public URL" is a local reverse proxy. Everything stays on 127.0.0.1.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import stat
import subprocess
import sys
import textwrap
import threading
import time
import types
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
import yaml

from helpers import free_port, wait_until
from vllm_magics.tunnel.token import NgrokTokenMissing, find_authtoken
from vllm_magics.server.process import pid_alive
from vllm_magics.tunnel.manager import (
    InsecureShareRefused, NgrokAuthError, NgrokNotInstalled, NgrokSessionLimit, NgrokStartTimeout, NotOnColab,
    Tunnel, TunnelError, TunnelManager, colab_proxy_url, health_through, tunnel_card,
)

STANDIN = Path(__file__).parent / "standins" / "fake_ngrok.py"
TOKEN = "2Vt9dTestTokenAbcdefghij_0123456789KLMNOPqrstu"  # shaped like a real one: [A-Za-z0-9_]
API_KEY = "sk-vllm-test-key-0123456789abcdef"
PASSWORD = "correct-horse-battery"


# -- fixtures -------------------------------------------------------------------------------------------
def _reset_pyngrok() -> None:
    """pyngrok keeps module-level state: running agents by binary path, open tunnels by URL, parsed config
    files, and a default config (built at import from the environment)."""
    from pyngrok import conf, installer, ngrok, process

    for np_ in list(process._current_processes.values()):
        if np_.proc.poll() is None:
            np_.proc.kill()
            np_.proc.wait()
    process._current_processes.clear()
    ngrok._current_tunnels.clear()
    installer._config_cache.clear()
    conf.set_default(conf.PyngrokConfig())


@pytest.fixture(autouse=True)
def _clean_pyngrok(monkeypatch):
    for k in ("NGROK_AUTHTOKEN", "NGROK_API_KEY", "PYNGROK_NGROK_PATH", "FAKE_NGROK_MODE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setitem(sys.modules, "google.colab", None)  # not on Colab unless a test says so
    _reset_pyngrok()
    yield
    _reset_pyngrok()


@pytest.fixture
def record(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "record"
    monkeypatch.setenv("FAKE_NGROK_RECORD", str(d))
    return d


@pytest.fixture
def ngrok_bin(tmp_path, record) -> Path:
    """The stand-in, installed as an executable `ngrok` whose #! line names this interpreter."""
    d = tmp_path / "bin"
    d.mkdir()
    path = d / "ngrok"
    body = STANDIN.read_text().split("\n", 1)[1]
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(0o755)
    return path


@pytest.fixture
def make_manager(tmp_path, ngrok_bin):
    made = []

    def make(**kw):
        kw.setdefault("ngrok_path", ngrok_bin)
        kw.setdefault("config_path", tmp_path / "agent-conf" / "agent.yml")
        kw.setdefault("startup_timeout", 8.0)
        kw.setdefault("web_addr", f"127.0.0.1:{free_port()}")
        m = TunnelManager(**kw)
        made.append(m)
        return m

    yield make
    for m in made:
        m.stop()


@pytest.fixture
def log_records():
    """Every record of the pyngrok loggers, DEBUG included."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    lg = logging.getLogger("pyngrok")
    handler, old = Keep(level=logging.DEBUG), lg.level
    lg.addHandler(handler)
    lg.setLevel(logging.DEBUG)
    yield records
    lg.removeHandler(handler)
    lg.setLevel(old)


class Upstream:
    """A stand-in for vLLM's HTTP side: /health, a keyed /v1/models, /echo, and a chunked SSE stream whose
    second event waits until the client has the first (so it proves chunk-by-chunk streaming)."""

    def __init__(self):
        self.seen: list[dict] = []
        self.second = threading.Event()
        up = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _send(self, status, body: bytes, ctype="application/json"):
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _common(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                up.seen.append({"method": self.command, "path": self.path, "headers": dict(self.headers),
                                "body": body.decode()})
                if self.path == "/health":
                    self._send(200, b"", "text/plain")
                elif self.path == "/v1/models":
                    if self.headers.get("Authorization") != f"Bearer {API_KEY}":
                        self._send(401, b'{"error": "Unauthorized"}')
                    else:
                        self._send(200, b'{"object": "list", "data": [{"id": "m"}]}')
                elif self.path == "/echo":
                    self._send(200, json.dumps({"method": self.command, "body": body.decode()}).encode())
                elif self.path == "/sse":
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()

                    def chunk(data: bytes):
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                        self.wfile.flush()

                    chunk(b"data: 1\n\n")
                    up.second.wait(5)
                    chunk(b"data: 2\n\n")
                    chunk(b"data: [DONE]\n\n")
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
                else:
                    self._send(404, b"{}")

            do_GET = do_POST = _common

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.second.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def upstream():
    u = Upstream()
    yield u
    u.close()


def _agent_pids(record: Path) -> list[int]:
    return [json.loads(p.read_text())["pid"] for p in sorted(record.glob("pid-*.json"))]


def _api_requests(record: Path) -> list[dict]:
    path = record / "api-requests.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _assert_secret_free(secret: str, records, *texts) -> None:
    for r in records:
        assert secret not in r.getMessage(), (r.name, r.getMessage())
    for t in texts:
        assert secret not in str(t)


# -- opening, reaching, streaming -----------------------------------------------------------------------
def test_open_reaches_upstream_and_streams_sse(make_manager, upstream):
    m = make_manager()
    t = m.open(upstream.port, api_key=API_KEY, authtoken=TOKEN, token_source="test")
    assert t.public_url.startswith("http://127.0.0.1:") and t.port == upstream.port
    assert t.openai_base_url == t.public_url + "/v1"
    assert t.upstream == f"http://127.0.0.1:{upstream.port}" and not t.basic_auth

    assert requests.get(t.public_url + "/health", timeout=5).status_code == 200
    assert requests.get(t.openai_base_url + "/models", timeout=5).status_code == 401
    r = requests.get(t.openai_base_url + "/models", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=5)
    assert r.json()["data"][0]["id"] == "m"
    r = requests.post(t.public_url + "/echo", data=b'{"x": 1}', timeout=5)
    assert r.json() == {"method": "POST", "body": '{"x": 1}'}
    assert health_through(t.public_url, timeout=5) == 200

    # SSE: the first event arrives while the upstream still holds the second back.
    with requests.get(t.public_url + "/sse", stream=True, timeout=5) as resp:
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
    assert wait_until(lambda: not pid_alive(pid), 3)
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
    assert m.config.auth_token is None
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
    detail = requests.get(f"{m.api_url}/api/endpoints/{t.name}", timeout=5).json()
    assert detail["inspect"] is False

    r = requests.get(t.openai_base_url + "/models", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=5)
    assert r.status_code == 200
    captured = requests.get(f"{m.api_url}/api/requests/http", timeout=5).json()
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
    requests.get(t.public_url + "/v1/models", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=5)
    api = ngrok.get_ngrok_process(cfg).api_url
    (req,) = requests.get(f"{api}/api/requests/http", timeout=5).json()["requests"]
    assert req["request"]["headers"]["Authorization"] == [f"Bearer {API_KEY}"]


def test_the_old_auth_option_is_refused_basic_auth_is_a_traffic_policy(make_manager, upstream, record):
    from pyngrok import ngrok
    from pyngrok.exception import PyngrokNgrokHTTPError

    m = make_manager()
    m.start(TOKEN)
    # pyngrok 9 still accepts auth= and renames it basic_auth=, which /api/endpoints does not know.
    with pytest.raises(PyngrokNgrokHTTPError) as info:
        ngrok.connect(str(upstream.port), pyngrok_config=m.config, auth="student:" + PASSWORD)
    assert info.value.status_code == 400 and "basic_auth" in info.value.body

    t = m.open(upstream.port, api_key=API_KEY, basic_auth="student:" + PASSWORD)
    assert t.basic_auth
    policy = json.loads(_api_requests(record)[-1]["body"]["traffic_policy"])
    assert policy["on_http_request"][0]["actions"][0] == {
        "type": "basic-auth", "config": {"credentials": [f"student:{PASSWORD}"]}}
    assert requests.get(t.public_url + "/health", timeout=5).status_code == 401
    assert health_through(t.public_url) == 401
    assert health_through(t.public_url, basic_auth=("student", PASSWORD)) == 200
    # The API key rides in the same header: a client cannot send both (browser use only).
    r = requests.get(t.openai_base_url + "/models", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=5)
    assert r.status_code == 401

    with pytest.raises(TunnelError, match="8 to 128"):
        m.open(upstream.port, api_key=API_KEY, basic_auth=("student", "short"))


def test_browser_warning_page_and_the_skip_header(make_manager, upstream):
    m = make_manager()
    t = m.open(upstream.port, api_key=API_KEY, authtoken=TOKEN)
    browser = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64)"}
    before = len(upstream.seen)
    r = requests.get(t.public_url + "/health", headers=browser, timeout=5)
    assert "ERR_NGROK_6024" in r.text and len(upstream.seen) == before
    r = requests.get(t.public_url + "/health", headers={**browser, "ngrok-skip-browser-warning": "1"}, timeout=5)
    assert r.status_code == 200 and len(upstream.seen) == before + 1
    assert upstream.seen[-1]["headers"]["ngrok-skip-browser-warning"] == "1"
    assert health_through(f"http://127.0.0.1:{free_port()}", timeout=1) is None


# -- refusing to expose a server without a key ----------------------------------------------------------
def test_refuses_a_server_without_api_key_unless_insecure(make_manager, upstream, record):
    m = make_manager()
    with pytest.raises(InsecureShareRefused) as info:
        m.open(upstream.port, api_key=None, authtoken=TOKEN)
    assert "no API key" in str(info.value) and "--restart" in str(info.value)
    assert not m.is_running() and _agent_pids(record) == []

    t = m.open(upstream.port, api_key=None, insecure=True, authtoken=TOKEN)
    assert requests.get(t.public_url + "/health", timeout=5).status_code == 200


# -- ngrok's errors, in plain words ---------------------------------------------------------------------
@pytest.mark.parametrize("mode,token,cls,code,words", [
    ("4018", TOKEN, NgrokAuthError, "ERR_NGROK_4018", ["missing or invalid", "dashboard.ngrok.com"]),
    # a token pasted with the command in front of it: the agent itself answers 105 and echoes it
    ("ok", f"ngrok config add-authtoken {TOKEN}", NgrokAuthError, "ERR_NGROK_105",
     ["does not look like an ngrok authtoken", "(ngr…rstu)", "no `ngrok config add-authtoken`"]),
    ("105", TOKEN, NgrokAuthError, "ERR_NGROK_105", ["does not look like", "(2Vt…rstu)"]),
    ("108", TOKEN, NgrokSessionLimit, "ERR_NGROK_108", ["free accounts allow one", "dashboard.ngrok.com/agents"]),
])
def test_ngrok_errors_are_plain_and_redacted(make_manager, upstream, record, log_records, monkeypatch, capfd,
                                             mode, token, cls, code, words):
    monkeypatch.setenv("FAKE_NGROK_MODE", mode)
    m = make_manager()
    with pytest.raises(cls) as info:
        m.open(upstream.port, api_key=API_KEY, authtoken=token, token_source="Colab secret NGROK_AUTHTOKEN")
    exc = info.value
    assert exc.code == code and code in exc.detail
    for w in words:
        assert w in str(exc)
    assert "Colab secret NGROK_AUTHTOKEN" in str(exc) or cls is NgrokSessionLimit
    assert exc.__context__ is None and exc.__cause__ is None  # pyngrok's exception (token inside) is gone
    (pid,) = _agent_pids(record)
    assert wait_until(lambda: not pid_alive(pid), 3) and not m.is_running()
    if code == "ERR_NGROK_105":  # the agent did echo it: pyngrok logged that line, redacted
        assert any("Your authtoken:" in r.getMessage() for r in log_records)
    out, err = capfd.readouterr()
    _assert_secret_free(TOKEN, log_records, str(exc), exc.detail, repr(exc.args), out, err)


def test_a_silent_agent_is_stopped_after_the_timeout(make_manager, upstream, record, monkeypatch):
    # pyngrok's own startup_timeout is checked between lines: a binary that prints nothing blocks it forever.
    monkeypatch.setenv("FAKE_NGROK_MODE", "silent")
    m = make_manager(startup_timeout=1.0)
    t0 = time.monotonic()
    with pytest.raises(NgrokStartTimeout) as info:
        m.open(upstream.port, api_key=API_KEY, authtoken=TOKEN)
    assert time.monotonic() - t0 < 4
    assert "not ready after 1 s" in str(info.value) and "--version" in str(info.value)
    (pid,) = _agent_pids(record)
    assert wait_until(lambda: not pid_alive(pid), 3)
    assert not m.is_running() and m._watchdog is None


def test_an_agent_that_cannot_reach_ngrok_is_stopped_with_its_error(make_manager, upstream, record, monkeypatch):
    monkeypatch.setenv("FAKE_NGROK_MODE", "offline")
    m = make_manager(startup_timeout=1.0)
    with pytest.raises(NgrokStartTimeout) as info:
        m.open(upstream.port, api_key=API_KEY, authtoken=TOKEN)
    msg = str(info.value)
    assert 'failed to dial ngrok server with address "connect.ngrok-agent.com:443"' in msg
    assert "may not reach ngrok's servers" in msg and "printed nothing" not in msg
    (pid,) = _agent_pids(record)
    assert wait_until(lambda: not pid_alive(pid), 3) and not m.is_running()


@pytest.mark.parametrize("server", ["refused", "silent"])
def test_download_failure_offline(tmp_path, monkeypatch, server):
    """pyngrok downloads the agent when ngrok_path does not exist (urlopen, 6 s timeout, no retry). Only
    the download URL is changed here, to a local port that refuses, or accepts and never answers (what a
    black-holed network does), so the test takes well under a second."""
    from pyngrok import installer

    if server == "refused":
        url_port, sock = free_port(), None
    else:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)  # the kernel completes the handshake; nobody ever reads or answers
        url_port = sock.getsockname()[1]
    key = f"{installer.get_system()}_{installer.get_arch()}"
    monkeypatch.setitem(installer.PLATFORMS, key, f"http://127.0.0.1:{url_port}/ngrok-v3-stable-linux-amd64.tgz")
    missing = tmp_path / "no-such-dir" / "ngrok"
    m = TunnelManager(ngrok_path=missing, config_path=tmp_path / "c" / "agent.yml", download_timeout=0.5)
    t0 = time.monotonic()
    try:
        with pytest.raises(NgrokNotInstalled) as info:
            m.open(8000, api_key=API_KEY, authtoken=TOKEN)
    finally:
        if sock is not None:
            sock.close()
    assert time.monotonic() - t0 < 3
    msg = str(info.value)
    assert "cannot reach ngrok's download site" in msg and "ngrok_path" in msg and str(missing) in msg
    assert TOKEN not in msg and not missing.exists() and not m.is_running()


# -- the agent does not outlive Python ------------------------------------------------------------------
@pytest.mark.parametrize("ending", ["exit", "sigkill"])
def test_the_agent_dies_with_the_python_process(ngrok_bin, tmp_path, ending):
    script = textwrap.dedent(f"""
        import os, signal, sys
        from vllm_magics.tunnel.manager import TunnelManager
        m = TunnelManager(ngrok_path={str(ngrok_bin)!r}, config_path={str(tmp_path / 'c' / 'agent.yml')!r},
                          web_addr="127.0.0.1:{free_port()}")
        m.start({TOKEN!r})
        print(m.agent_pid, flush=True)
        if {ending!r} == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)  # no atexit: the watchdog must do it
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    pid = int(proc.stdout.split()[0])
    assert wait_until(lambda: not pid_alive(pid), 5), f"the agent {pid} outlived its Python process"


# -- where the token comes from -------------------------------------------------------------------------
def _fake_colab(monkeypatch, secrets: dict):
    """google.colab.userdata as Colab has it (googlecolab/colabtools google/colab/userdata.py): get(key)
    raises SecretNotFoundError when the secret does not exist, NotebookAccessError when it exists but this
    notebook was not given access, else returns the value."""
    mod = types.ModuleType("google.colab.userdata")

    class SecretNotFoundError(Exception):
        def __init__(self, key):
            super().__init__(f"Secret {key} does not exist.")

    class NotebookAccessError(Exception):
        def __init__(self, key):
            super().__init__(f"Notebook does not have access to secret {key}")

    asked = []

    def get(key):
        asked.append(key)
        if key not in secrets:
            raise SecretNotFoundError(key)
        if secrets[key] is None:
            raise NotebookAccessError(key)
        return secrets[key]

    mod.SecretNotFoundError, mod.NotebookAccessError, mod.get, mod.asked = SecretNotFoundError, \
        NotebookAccessError, get, asked
    return _install_colab_module(monkeypatch, "userdata", mod)


def _install_colab_module(monkeypatch, name, module):
    """Put a stand-in `google.colab.<name>` where `from google.colab import <name>` finds it."""
    colab = types.ModuleType("google.colab")
    setattr(colab, name, module)
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    monkeypatch.setitem(sys.modules, f"google.colab.{name}", module)
    return module


def _no_prompt(text):
    raise AssertionError("must not prompt")


def test_token_order_colab_secret_first(monkeypatch):
    ud = _fake_colab(monkeypatch, {"NGROK_AUTHTOKEN": f" {TOKEN}\n", "NGROK_TOKEN": "other"})
    monkeypatch.setenv("NGROK_AUTHTOKEN", "from-env")
    assert find_authtoken(interactive=True, prompt=_no_prompt) == (TOKEN, "Colab secret NGROK_AUTHTOKEN")
    assert ud.asked == ["NGROK_AUTHTOKEN"]


def test_token_order_second_secret_name_then_env(monkeypatch):
    _fake_colab(monkeypatch, {"NGROK_TOKEN": TOKEN})
    monkeypatch.setenv("NGROK_AUTHTOKEN", "from-env")
    assert find_authtoken(interactive=False) == (TOKEN, "Colab secret NGROK_TOKEN")
    _fake_colab(monkeypatch, {})
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
    _fake_colab(monkeypatch, {})
    with pytest.raises(NgrokTokenMissing) as info:
        find_authtoken(interactive=False)
    msg = str(info.value)
    for words in ("key icon", "NGROK_AUTHTOKEN", "Notebook access", "environment variable",
                  "dashboard.ngrok.com/get-started/your-authtoken"):
        assert words in msg
    assert info.value.denied == ()


def test_token_secret_without_notebook_access(monkeypatch):
    _fake_colab(monkeypatch, {"NGROK_AUTHTOKEN": None})  # exists; this notebook may not read it
    with pytest.raises(NgrokTokenMissing) as info:
        find_authtoken(interactive=False)
    assert "no access" in str(info.value) and "Notebook access" in str(info.value)
    assert info.value.denied == ("NGROK_AUTHTOKEN",)
    prompts = []
    token, source = find_authtoken(interactive=True, prompt=lambda text: prompts.append(text) or TOKEN)
    assert (token, source) == (TOKEN, "typed in") and "no access" in prompts[0]


def test_manager_finds_the_token_itself(make_manager, upstream, monkeypatch):
    _fake_colab(monkeypatch, {"NGROK_AUTHTOKEN": TOKEN})
    m = make_manager()
    m.open(upstream.port, api_key=API_KEY)
    assert m.token_source == "Colab secret NGROK_AUTHTOKEN"
    m2 = TunnelManager(ngrok_path=m.ngrok_path + "-other", config_path=m.config_path)
    _fake_colab(monkeypatch, {})
    with pytest.raises(NgrokTokenMissing):
        m2.open(upstream.port, api_key=API_KEY)


# -- Colab's own proxy ----------------------------------------------------------------------------------
def _fake_output(monkeypatch, url=None, fail=False):
    out = types.ModuleType("google.colab.output")
    out.calls = []

    def eval_js(script, ignore_result=False, timeout_sec=None):
        out.calls.append(("eval_js", script, timeout_sec))
        if fail:
            raise TimeoutError("no answer from the page")
        return url

    def serve_kernel_port_as_window(port, path="/", anchor_text=None):
        out.calls.append(("window", port, path))

    out.eval_js, out.serve_kernel_port_as_window = eval_js, serve_kernel_port_as_window
    return _install_colab_module(monkeypatch, "output", out)


def test_colab_proxy_url(monkeypatch):
    with pytest.raises(NotOnColab):
        colab_proxy_url(8000)
    out = _fake_output(monkeypatch, url="https://8000-m-s-abc123-a.us-west1-0.prod.colab.dev/")
    p = colab_proxy_url(8000, timeout=5)
    assert out.calls == [("eval_js", "google.colab.kernel.proxyPort(8000)", 5)]
    assert p.url.endswith("colab.dev/") and p.openai_base_url.endswith("colab.dev/v1")
    assert "only for you" in p.note and "notebook is open" in p.note and not p.link_shown

    out = _fake_output(monkeypatch, fail=True)
    p = colab_proxy_url(8000)
    assert p.url is None and p.link_shown and out.calls[-1] == ("window", 8000, "/docs")


# -- the card -------------------------------------------------------------------------------------------
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
