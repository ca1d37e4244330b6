"""The stand-in ngrok agent for the tunnel tests, and what they share: pyngrok reset between tests, the
agent installed as an executable, managers that use it, a stand-in for vLLM's HTTP side, pyngrok's log
records. Test modules take the fixtures by assignment (`make_manager = tunnel_standin.make_manager`).

The ngrok cloud is out of reach here, so tests/standins/fake_ngrok.py plays the agent: pyngrok starts it
exactly as it starts the real one (argv, logfmt lines on stdout, the /api/endpoints API), and each
endpoint's "public URL" is a local reverse proxy. Everything stays on 127.0.0.1.
"""
from __future__ import annotations

import json
import logging
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from helpers import free_port
from vllm_magics.tunnel.manager import TunnelManager

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


def install_standin(folder: Path) -> Path:
    """The stand-in, installed as an executable `ngrok` in `folder` (created) whose #! line names this
    interpreter (pyngrok runs the binary by its path, as it runs the real agent)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "ngrok"
    body = STANDIN.read_text().split("\n", 1)[1]
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(0o755)
    return path


@pytest.fixture
def ngrok_bin(tmp_path, record) -> Path:
    return install_standin(tmp_path / "bin")


@pytest.fixture
def make_manager(tmp_path, ngrok_bin):
    made = []

    def make(**kw):
        kw.setdefault("ngrok_path", ngrok_bin)
        kw.setdefault("config_path", tmp_path / "agent-conf" / "agent.yml")
        kw.setdefault("startup_timeout", 120.0)  # a stand-in agent on a loaded machine: tests that time out set theirs
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
