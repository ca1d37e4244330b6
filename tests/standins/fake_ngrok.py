#!/usr/bin/env python3
"""A stand-in for the ngrok v3 agent, as pyngrok 9.1 drives it (tests copy it to a temp folder as `ngrok`
and point its #! line at the test interpreter). No network beyond 127.0.0.1.

What pyngrok runs, and what this answers (pyngrok/process.py, ngrok.py, installer.py of 9.1.0):
  ngrok --version                                   -> "ngrok version 3.x.y" (ngrok.get_version splits on "version ")
  ngrok config add-authtoken TOKEN --log stdout [--config P]
                                                    -> writes agent.authtoken into P, prints "Authtoken saved ..."
  ngrok start --none --log stdout [--config P] [--authtoken T] [--region R]
      prints logfmt lines; pyngrok waits for `msg="starting web service" ... addr=H:P` (its API URL),
      `msg="client session established"` and `msg="tunnel session started"`, then for GET /api/endpoints
      to answer 200 (config_version 3); an ERROR/CRIT line's `err=` becomes its startup error.
  The agent API on that address (ngrok-docs agent/api.mdx, "List/Create/Endpoint Detail/Delete Endpoint"):
      GET /api/endpoints            200 {"endpoints": [...], "uri": "/api/endpoints"}
      POST /api/endpoints           201 endpoint JSON ("name", "uri", "url", "upstream", "inspect",
                                        "traffic_policy", "pooling_enabled"); 400 on unknown fields, e.g. the
                                        v2 `auth` (pyngrok itself renames it to `basic_auth`, also unknown)
      GET /api/endpoints/NAME       200 endpoint JSON with "metrics"; 404
      DELETE /api/endpoints/NAME    204; 404
      GET /api/requests/http        captured requests (headers included) of endpoints with inspection on:
                                    what anyone on the machine can read at 127.0.0.1:4040 without auth
  Each endpoint's "public URL" is http://127.0.0.1:PORT, a threaded reverse proxy to the upstream that
  streams the response chunk by chunk (SSE works), honours a `basic-auth` traffic-policy action, and, like
  the free plan, answers browser-looking requests without the `ngrok-skip-browser-warning` header with the
  interstitial page (ERR_NGROK_6024) instead of the upstream.
  The browser warning: ngrok.com/abuse ("Browser Warning": an interstitial page "for free accounts
  receiving requests from browsers", "completely bypassed by adding the ngrok-skip-browser-warning header")
  and blog.ngrok.com/posts/fighting-abuse-on-the-ngrok-platform (2022: "should not impact users serving
  APIs or accessing ngrok endpoints programmatically"). How ngrok tells a browser is not documented: the
  trigger here, "Mozilla" in the User-Agent, is a GUESS; so is showing it on every request (ngrok shows it
  once per endpoint and browser, then remembers the visitor's click).

Knobs (environment):
  FAKE_NGROK_MODE   ok (default) | 4018 | 105 | 108 | silent (print nothing, never answer, never exit: a
                    GUESS at a hung or wrong binary; what matters is that pyngrok then blocks in readline())
                    | offline (serve the API, but only ever print "failed to reconnect session" errors)
  FAKE_NGROK_EXIT_FIRST  1: the agent's process exits at once, and a child of it says what the agent would
                    have, in one write as it ends: pyngrok sees the agent gone with its lines still unread, as
                    a busy machine can make happen with the real agent, which prints its error and exits
                    (pyngrok's process._start_process stops reading once proc.poll() says the agent exited)
  FAKE_NGROK_RECORD a folder: writes pid-<PID>.json (argv, pid) and appends each API request's body to
                    api-requests.jsonl
  FAKE_NGROK_VERSION  version to print (default 3.24.0)
Which token gets which answer (start(), below):
  - FAKE_NGROK_MODE=105, or a token with a character outside [A-Za-z0-9_]: ERR_NGROK_105, echoing the token.
    That ngrok answers 105 to a malformed token, and echoes it, is from Storm-Breaker issue 58 (below:
    a token pasted with extra text). The exact rule the ngrok service applies is not published: the
    character class here is a GUESS, from the shape of real tokens (letters, digits, underscores).
  - no token at all: ERR_NGROK_4018 (atlantis pull 6164: "requires a verified account and authtoken").
  - the agent prints "starting web service" before it dials ngrok, so 105/4018/108 come after it and the
    agent exits with code 1 (pyngrok issue 125; the line order of atlantis pull 6164).

The error texts are quoted from real agent output (logfmt, `err="..."` with \\n and \\r\\n escapes):
  ERR_NGROK_4018: github.com/runatlantis/atlantis pull 6164 (agent 3.x, 2026) and
                  github.com/alexdlaird/pyngrok issue 125 (the "terminating with error" / "command failed" lines)
  ERR_NGROK_108:  github.com/karma9874/AndroRAT issue 459 (agent 3.x, 2025-09)
  ERR_NGROK_105:  github.com/ultrasecurity/Storm-Breaker issue 58 (the text and the echoed token; that agent
                  was 2.x, whose lines say msg="failed to auth" and no "authentication failed: " prefix: the
                  prefix here follows the 3.x lines of 4018 and 108)
  400 body:       github.com/abhishekkrthakur/colabcode pull 120 (ngrok 3.23.1, /api/tunnels); the endpoint
                  type name in the message is a guess.
  "can't bind default web address, trying alternatives": AndroRAT issue 459.
  offline:        github.com/ngrok/ngrok issue 54 (3.x, 2024: err="failed to dial ngrok server with address
                  \"connect.ngrok-agent.com:443\": dial tcp ...", retried); the "lookup ...: no such host"
                  tail is Go's resolver error, as in github.com/inconshreveable/ngrok issue 842.
"""
from __future__ import annotations

import base64
import http.client
import json
import os
import re
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

VERSION = os.environ.get("FAKE_NGROK_VERSION", "3.24.0")
MODE = os.environ.get("FAKE_NGROK_MODE", "ok")
HOLD_OUTPUT = False  # FAKE_NGROK_EXIT_FIRST: everything is written at exit
RECORD = os.environ.get("FAKE_NGROK_RECORD")

ERR_4018 = ("authentication failed: Usage of ngrok requires a verified account and authtoken.\\n\\n"
            "Sign up for an account: https://dashboard.ngrok.com/signup\\n"
            "Install your authtoken: https://dashboard.ngrok.com/get-started/your-authtoken\\r\\n\\r\\n"
            "ERR_NGROK_4018\\r\\n")
ERR_105 = ("authentication failed: The authtoken you specified does not look like a proper ngrok tunnel "
           "authtoken.\\nYour authtoken: {token}\\nInstructions to install your authtoken are on your ngrok "
           "dashboard:\\nhttps://dashboard.ngrok.com/get-started/your-authtoken\\r\\n\\r\\nERR_NGROK_105\\r\\n")
ERR_OFFLINE = ('failed to dial ngrok server with address \\"connect.ngrok-agent.com:443\\": dial tcp: lookup '
               'connect.ngrok-agent.com: no such host')
ERR_108 = ("authentication failed: Your account is limited to 1 simultaneous ngrok agent sessions.\\n"
           "You can run multiple simultaneous tunnels from a single agent session by defining the tunnels in "
           "your agent configuration file and starting them with the command `ngrok start --all`.\\n"
           "Read more about the agent configuration file: "
           "https://ngrok.com/docs/secure-tunnels/ngrok-agent/reference/config\\n"
           "You can view your current agent sessions in the dashboard:\\nhttps://dashboard.ngrok.com/agents"
           "\\r\\n\\r\\nERR_NGROK_108\\r\\n")

# What POST /api/endpoints accepts (agent config v3 endpoint definitions, plus `inspect`, which the agent
# API reports on each endpoint and pyngrok sends for tcp/tls endpoints).
ENDPOINT_FIELDS = {"name", "url", "upstream", "inspect", "traffic_policy", "pooling_enabled", "bindings",
                   "description", "metadata", "agent_tls_termination"}
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
              "trailers", "transfer-encoding", "upgrade", "content-length"}

_out_lock = threading.Lock()
LOG_TO_STDOUT = True


def log(lvl: str, msg: str, **fields) -> None:
    if not LOG_TO_STDOUT:
        return
    t = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    parts = [f"t={t}", f"lvl={lvl}", f'msg="{msg}"']
    for k, v in fields.items():
        v = str(v)
        parts.append(f'{k}="{v}"' if (not v or " " in v or "\\" in v) else f"{k}={v}")
    with _out_lock:
        sys.stdout.write(" ".join(parts) + "\n")
        if not HOLD_OUTPUT:
            sys.stdout.flush()


def record(name: str, data) -> None:
    if not RECORD:
        return
    os.makedirs(RECORD, exist_ok=True)
    if name.endswith(".jsonl"):
        with open(os.path.join(RECORD, name), "a") as f:
            f.write(json.dumps(data) + "\n")
    else:
        with open(os.path.join(RECORD, name), "w") as f:
            json.dump(data, f)


def take(args: list[str], flag: str) -> str | None:
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


def read_config(path: str | None) -> dict:
    if not path or not os.path.exists(path):
        return {}
    import yaml

    with open(path) as f:
        return yaml.safe_load(f) or {}


# -- endpoints and their proxies ------------------------------------------------------------------------
class Endpoint:
    def __init__(self, body: dict, agent: "Agent"):
        self.agent = agent
        self.name = body["name"]
        up = body["upstream"]["url"]
        up = str(up)
        if up.isdigit():
            up = f"http://localhost:{up}"
        elif "://" not in up:
            up = "http://" + up
        self.upstream = up
        self.inspect = bool(body.get("inspect", True)) and agent.inspect_db_size != -1
        self.traffic_policy = body.get("traffic_policy") or ""
        self.credentials = basic_auth_credentials(self.traffic_policy)
        self.pooling_enabled = bool(body.get("pooling_enabled", False))
        self.requests = 0
        endpoint = self

        class Handler(ProxyHandler):
            ep = endpoint

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        # A short poll interval: DELETE waits for shutdown(), which waits up to one interval.
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def json(self, metrics: bool = False) -> dict:
        d = {"name": self.name, "uri": f"/api/endpoints/{self.name}", "url": self.url,
             "upstream": {"url": self.upstream, "protocol": "http1"}, "inspect": self.inspect,
             "traffic_policy": self.traffic_policy if isinstance(self.traffic_policy, str)
             else json.dumps(self.traffic_policy), "pooling_enabled": self.pooling_enabled}
        if metrics:
            zero = {k: 0 for k in ("count", "rate1", "rate5", "rate15", "p50", "p90", "p95", "p99")}
            d["metrics"] = {"conns": dict(zero, gauge=0), "http": dict(zero, count=self.requests)}
        return d

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def basic_auth_credentials(policy) -> list[str]:
    if isinstance(policy, str):
        if not policy.strip():
            return []
        import yaml

        policy = yaml.safe_load(policy)  # JSON is YAML
    creds = []
    for rule in (policy or {}).get("on_http_request", []) or []:
        for action in rule.get("actions", []) or []:
            if action.get("type") == "basic-auth":
                for c in (action.get("config") or {}).get("credentials", []) or []:
                    user, _, pw = str(c).partition(":")
                    if not user or not 8 <= len(pw) <= 128:
                        raise ValueError("basic-auth credentials must be 'user:password', the password 8 to 128 "
                                         "characters")
                    creds.append(str(c))
    return creds


WARNING_PAGE = (b"<!DOCTYPE html><html><head><title>ngrok</title></head><body>"
                b"<h1>You are about to visit a site served by ngrok</h1>"
                b"<p>To remove this page, set the ngrok-skip-browser-warning request header.</p>"
                b"<p>ERR_NGROK_6024</p></body></html>")


class ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    ep: Endpoint

    def log_message(self, fmt, *args):  # the real agent logs no access lines at info level
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _plain(self, status: int, body: bytes, ctype: str = "text/plain", extra=()) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _handle(self) -> None:
        ep = self.ep
        ep.requests += 1
        body = self._body()
        if ep.inspect:
            ep.agent.captured.append({
                "uri": f"/api/requests/http/{uuid.uuid4().hex[:16]}", "tunnel_name": ep.name,
                "request": {"method": self.command, "uri": self.path,
                            "headers": {k: [v] for k, v in self.headers.items()},
                            "raw": base64.b64encode(body).decode()}})
        if ep.credentials:
            auth = self.headers.get("Authorization", "")
            ok = False
            if auth.startswith("Basic "):
                try:
                    ok = base64.b64decode(auth[6:]).decode() in ep.credentials
                except ValueError:
                    ok = False
            if not ok:
                self._plain(401, b"Unauthorized", extra=[("WWW-Authenticate", 'Basic realm="ngrok"')])
                return
        ua = self.headers.get("User-Agent", "")
        if "Mozilla" in ua and self.headers.get("ngrok-skip-browser-warning") is None:
            self._plain(200, WARNING_PAGE, "text/html")
            return
        up = urlsplit(ep.upstream)
        conn = http.client.HTTPConnection(up.hostname, up.port or 80, timeout=600)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP | {"host"}}
        headers["X-Forwarded-For"] = self.client_address[0]
        headers["X-Forwarded-Proto"] = "https"
        headers["X-Forwarded-Host"] = self.headers.get("Host", "")
        try:
            conn.request(self.command, self.path, body=body if body or self.command in ("POST", "PUT", "PATCH")
                         else None, headers=headers)
            resp = conn.getresponse()
        except OSError:
            self._plain(502, b"ERR_NGROK_8012: the agent could not reach the upstream " + ep.upstream.encode())
            return
        self.send_response(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() not in HOP_BY_HOP:
                self.send_header(k, v)
        length = resp.getheader("Content-Length")
        if length is not None:
            self.send_header("Content-Length", length)
        else:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            while True:
                chunk = resp.read1(65536)
                if not chunk:
                    break
                if length is not None:
                    self.wfile.write(chunk)
                else:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.flush()
            if length is None:
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
        except OSError:
            self.close_connection = True
        finally:
            conn.close()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle


# -- the agent API --------------------------------------------------------------------------------------
class Agent:
    def __init__(self, config: dict):
        agent_conf = config.get("agent") or {}
        self.inspect_db_size = int(agent_conf.get("inspect_db_size") or 0)
        self.endpoints: dict[str, Endpoint] = {}
        self.captured: list[dict] = []
        self.lock = threading.Lock()


def make_api_handler(agent: Agent):
    class ApiHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):
            pass

        def _json(self, status: int, data=None) -> None:
            body = b"" if data is None else json.dumps(data).encode()
            self.send_response(status)
            if data is not None:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _error(self, status: int, msg: str, err: str, code: int = 102) -> None:
            log("warn", msg, pg=self.path, id=uuid.uuid4().hex[:16], err=err)
            self._json(status, {"error_code": code, "status_code": status, "msg": msg, "details": {"err": err}})

        def _name(self) -> str | None:
            m = re.fullmatch(r"/api/endpoints/([^/?]+)", self.path.split("?")[0])
            return unquote(m.group(1)) if m else None

        def do_GET(self):
            path = self.path.split("?")[0].rstrip("/")
            if path in ("/api", ""):
                self._json(200, {"uri": "/api"})
            elif path == "/api/status":
                self._json(200, {"status": "online", "agent_version": VERSION, "session": {"legs": []},
                                 "uri": "/api/status"})
            elif path == "/api/endpoints":
                with agent.lock:
                    eps = [e.json() for e in agent.endpoints.values()]
                self._json(200, {"endpoints": eps, "uri": "/api/endpoints"})
            elif path == "/api/tunnels":
                self._json(200, {"tunnels": [], "uri": "/api/tunnels"})
            elif path == "/api/requests/http":
                self._json(200, {"requests": list(agent.captured), "uri": "/api/requests/http"})
            elif self._name() is not None:
                ep = agent.endpoints.get(self._name())
                if ep is None:
                    self._error(404, "endpoint not found", f"endpoint {self._name()!r} not found", code=100)
                else:
                    self._json(200, ep.json(metrics=True))
            else:
                self._json(404, {"error_code": 100, "status_code": 404, "msg": "not found", "details": {}})

        def do_POST(self):
            if self.path.split("?")[0].rstrip("/") != "/api/endpoints":
                self._json(404, {"error_code": 100, "status_code": 404, "msg": "not found", "details": {}})
                return
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                body = json.loads(raw or b"{}")
            except ValueError as exc:
                self._error(400, "invalid endpoint configuration", f"invalid JSON: {exc}")
                return
            record("api-requests.jsonl", {"method": "POST", "path": self.path, "body": body})
            unknown = sorted(set(body) - ENDPOINT_FIELDS)
            if unknown:
                self._error(400, "invalid endpoint configuration",
                            f"yaml: unmarshal errors:\\n  line 1: field {unknown[0]} not found in type "
                            "config.EndpointV3")
                return
            if not body.get("name") or not isinstance(body.get("upstream"), dict) or not body["upstream"].get("url"):
                self._error(400, "invalid endpoint configuration", "endpoint requires a name and upstream.url")
                return
            with agent.lock:
                if body["name"] in agent.endpoints:
                    self._error(400, "invalid endpoint configuration", f"endpoint {body['name']!r} already exists")
                    return
                try:
                    ep = Endpoint(body, agent)
                except ValueError as exc:
                    self._error(400, "invalid traffic policy", str(exc), code=2201)
                    return
                agent.endpoints[ep.name] = ep
            log("info", "started tunnel", obj="tunnels", name=ep.name, addr=ep.upstream, url=ep.url)
            self._json(201, ep.json())

        def do_DELETE(self):
            name = self._name()
            record("api-requests.jsonl", {"method": "DELETE", "path": self.path})
            with agent.lock:
                ep = agent.endpoints.pop(name, None) if name else None
            if ep is None:
                self._error(404, "endpoint not found", f"endpoint {name!r} not found", code=100)
                return
            ep.close()
            self._json(204)

    return ApiHandler


def bind_web(config: dict) -> ThreadingHTTPServer:
    agent = Agent(config)
    handler = make_api_handler(agent)
    addr = (config.get("agent") or {}).get("web_addr")
    if addr:
        host, _, port = str(addr).rpartition(":")
        server = ThreadingHTTPServer((host or "127.0.0.1", int(port)), handler)
    else:
        server = None
        for port in range(4040, 4060):
            try:
                server = ThreadingHTTPServer(("127.0.0.1", port), handler)
                break
            except OSError:
                if port == 4040:
                    log("warn", "can't bind default web address, trying alternatives", obj="web",
                        addr="127.0.0.1:4040")
        if server is None:
            server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    return server


def fail(err: str) -> None:
    # The sequence the 3.x agent prints before it exits with code 1 (atlantis pull 6164, pyngrok issue 125).
    log("eror", "failed to reconnect session", obj="tunnels.session", err=err)
    log("eror", "session closing", obj="tunnels.session", err=err)
    log("eror", "terminating with error", obj="app", err=err)
    log("crit", "command failed", err=err)
    sys.exit(1)


def start(args: list[str]) -> None:
    global LOG_TO_STDOUT
    global HOLD_OUTPUT
    record(f"pid-{os.getpid()}.json", {"pid": os.getpid(), "argv": sys.argv})
    if os.environ.get("FAKE_NGROK_EXIT_FIRST") == "1":
        agent = os.getpid()
        if os.fork():
            os._exit(1)
        while os.getppid() == agent:  # until the agent pyngrok started has gone
            time.sleep(0.01)
        HOLD_OUTPUT = True
    if MODE == "silent":
        while True:
            time.sleep(3600)
    LOG_TO_STDOUT = take(args, "--log") == "stdout"
    config_path = take(args, "--config")
    config = read_config(config_path)
    if config_path:
        log("info", "open config file", path=config_path, err="nil")
    else:
        log("info", "no configuration paths supplied")
    token = take(args, "--authtoken") or (config.get("agent") or {}).get("authtoken") \
        or os.environ.get("NGROK_AUTHTOKEN")
    server = bind_web(config)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host, port = server.server_address[:2]
    log("info", "starting web service", obj="web", addr=f"{host}:{port}", allow_hosts="[]")
    time.sleep(0.05)  # the real agent dials the ngrok service here (the pause's length is a guess)
    if MODE == "105" or (token and not re.fullmatch(r"[A-Za-z0-9_]+", str(token))):
        fail(ERR_105.format(token=token))
    if MODE == "4018" or not token:
        fail(ERR_4018)
    if MODE == "108":
        fail(ERR_108)
    if MODE == "offline":  # the agent retries with a growing pause, and never exits by itself
        pause = 0.2
        while True:
            log("eror", "failed to reconnect session", obj="tunnels.session", err=ERR_OFFLINE)
            record("offline-error-printed", {"pid": os.getpid()})  # so a test can wait for it
            time.sleep(pause)
            pause = min(pause * 2, 5.0)
    log("info", "client session established", obj="tunnels.session")
    log("info", "tunnel session started", obj="tunnels.session")
    while True:
        time.sleep(3600)


def main() -> None:
    args = sys.argv[1:]
    if args[:1] in (["--version"], ["version"], ["-v"]):
        print(f"ngrok version {VERSION}")
        return
    if args[:2] == ["config", "add-authtoken"] and len(args) >= 3:
        path = take(args, "--config") or os.path.expanduser("~/.config/ngrok/ngrok.yml")
        import yaml

        config = read_config(path) or {"version": "3"}
        config.setdefault("agent", {})["authtoken"] = args[2]
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "w") as f:
            yaml.safe_dump(config, f)
        print(f"Authtoken saved to configuration file: {path}")
        return
    if args[:1] == ["start"]:
        start(args[1:])
        return
    print(f"ERROR:  unknown command: {' '.join(args)}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    main()
