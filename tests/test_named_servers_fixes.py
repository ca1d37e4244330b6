"""Named servers after the review of issue 13: a stopped server gives way on its port, two servers never
share a port (one may not listen yet), a tunnel goes with its server's stop, a plain %vllm_serve means the
default server, re-adoption matches the adapters, --restart checks the line before stopping, and
%ngrok_up/%vllm_logs/%vllm_stop by name.

A stand-in for `vllm serve` (below) plays each server: a real one takes 25-60 s to start here. It imitates
what vllm_magics relies on: uvicorn's "Application startup complete." line, /health, and vLLM's API key
check on /v1 routes (vllm/entrypoints/openai/server_utils.py AuthenticationMiddleware: 401
{"error": "Unauthorized"} without `Authorization: Bearer $VLLM_API_KEY`). FAKE_DELAY (guess: a model
download) delays the bind, as a server still loading its model has not bound its port yet."""
from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request

import pytest
from IPython.core.error import UsageError

import test_named_servers
import tunnel_standin
from helpers import free_port, wait_until
from test_named_servers import unstarted
from tunnel_standin import TOKEN

two = test_named_servers.two
_clean_pyngrok = tunnel_standin._clean_pyngrok
record, ngrok_bin, make_manager = tunnel_standin.record, tunnel_standin.ngrok_bin, tunnel_standin.make_manager

STANDIN = r'''
import json, os, sys, time
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
argv = sys.argv[1:]
model = argv[1]
port = int(argv[argv.index("--port") + 1])
served = argv[argv.index("--served-model-name") + 1] if "--served-model-name" in argv else model
key = os.environ.get("VLLM_API_KEY")
print("stand-in vllm serving", served, "on", port, flush=True)

class H(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def _json(self, obj, code=200):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _common(self):
        if self.path.startswith("/v1") and key and self.headers.get("Authorization") != f"Bearer {key}":
            return self._json({"error": "Unauthorized"}, 401)
        if self.path == "/health":
            return self._json({})
        if self.path.startswith("/v1/models"):
            return self._json({"object": "list", "data": [{"id": served, "root": model, "parent": None}]})
        if self.path == "/v1/chat/completions":
            n = int(self.headers.get("Content-Length", 0))
            asked = json.loads(self.rfile.read(n)).get("model")
            return self._json({"id": "x", "object": "chat.completion", "model": asked, "choices": [{"index": 0,
                               "message": {"role": "assistant", "content": f"{served}@{port}"},
                               "finish_reason": "stop"}],
                               "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})
        self._json({}, 404)

    do_GET = do_POST = _common

time.sleep(float(os.environ.get("FAKE_DELAY", "0")))
print("Application startup complete.", flush=True)
ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
'''


def _free_run(n: int = 8) -> int:
    """The first of `n` consecutive free ports (the servers take the next ones)."""
    from vllm_magics.server.ports import port_is_free

    for _ in range(50):
        start = free_port()
        if start + n < 65536 and all(port_is_free("127.0.0.1", p) for p in range(start, start + n)):
            return start
    raise RuntimeError("no run of free ports")


@pytest.fixture
def fake(shell, tmp_path):
    """The shell with `vllm` played by the stand-in, its first port free; every server it starts is stopped."""
    path = tmp_path / "vllm"
    path.write_text(f"#!{sys.executable}\n{STANDIN}")
    path.chmod(0o755)
    base = _free_run()
    for setting in (f"vllm_command = [{str(path)!r}]", f"port = {base}", "shutdown_wait_time = 2.0"):
        shell.run_line_magic("config", f"VllmMagics.{setting}")
    shell.base_port = base
    yield shell
    magics = shell._vllm_magics
    if magics.tunnels is not None:
        magics.tunnels.stop()
    for server in list(magics.servers.values()):
        server.stop(now=True)
    magics.servers.clear()


def registry(shell) -> dict:
    return {n: (s.plan.port, s.is_alive()) for n, s in shell._vllm_magics.servers.items()}


def ask(shell, line="") -> str:
    shell.run_cell_magic("ask", f"{line} --no-stream", "hi")
    return shell.user_ns["_ask"].text


# -- a stopped server gives way; ports are never shared -----------------------------------------------
def test_a_stopped_server_gives_way_to_the_next_server_on_its_port(fake, capsys):
    base, magics = fake.base_port, fake._vllm_magics
    fake.run_line_magic("vllm_serve", "smol")
    fake.run_line_magic("vllm_stop", "")
    fake.run_line_magic("vllm_serve", "tiny --name r1")
    r1 = magics.servers["r1"]
    # The stopped default shared the port's state folder (log, pid) with r1: it is forgotten.
    assert registry(fake) == {"r1": (base, True)} and magics.server is r1
    assert ask(fake) == f"tiny@{base}"
    capsys.readouterr()
    # /health answers once the stand-in binds; its supervisor may copy the printed lines to the log a moment
    # later on a loaded machine (a real vLLM logs hundreds of lines before it binds).
    assert wait_until(lambda: "stand-in vllm serving tiny" in r1.log_path.read_text(), 60)
    fake.run_line_magic("vllm_logs", "r1 -n 5")
    assert "stand-in vllm serving tiny" in capsys.readouterr().out
    # A plain %vllm_serve searches on past r1's port instead of refusing it.
    fake.run_line_magic("vllm_serve", "smol")
    assert registry(fake) == {"r1": (base, True), "default": (base + 1, True)}
    assert ask(fake, "--model smol") == f"smol@{base + 1}"
    capsys.readouterr()
    fake.run_line_magic("vllm_stop", "--all")
    out = capsys.readouterr().out
    assert f"server r1 (pid {r1.pid})" in out and f"server default (pid {magics.servers['default'].pid})" in out


def test_the_default_is_the_first_running_server_and_a_url_means_the_running_one(fake, tmp_path):
    import types

    base, magics = fake.base_port, fake._vllm_magics
    fake.run_line_magic("vllm_serve", "smol --name a")
    fake.run_line_magic("vllm_serve", "tiny --name b")
    fake.run_line_magic("vllm_stop", "a")
    assert registry(fake) == {"a": (base, False), "b": (base + 1, True)}  # stopping a alone leaves b
    assert magics.server is magics.servers["b"] and ask(fake) == f"tiny@{base + 1}"
    magics.servers["c"] = unstarted("other", base + 1, tmp_path)  # a stopped server with b's URL: b is meant
    args = types.SimpleNamespace(url=f"http://127.0.0.1:{base + 1}/v1", api_key_env=None, model=None)
    assert magics._target(args)[2] is magics.servers["b"]


def test_a_server_not_listening_yet_keeps_its_port(fake, monkeypatch, capsys):
    """Two servers that time out before binding (a model download): each keeps its own port, and after
    the registry is lost (%unload_ext) the state folder of the live one still holds its port."""
    monkeypatch.setenv("FAKE_DELAY", "60")
    base, magics = fake.base_port, fake._vllm_magics
    for line in ("smol --name a --timeout 0.5", "tiny --name b --timeout 0.5"):
        with pytest.raises(UsageError, match="still running"):
            fake.run_line_magic("vllm_serve", line)
    assert registry(fake) == {"a": (base, True), "b": (base + 1, True)}
    kept = dict(magics.servers)
    magics.servers.clear()  # as after %unload_ext: only the state folders know
    try:
        capsys.readouterr()
        fake.run_line_magic("vllm_serve", "other --name c --dry-run")
        assert f"--port {base + 2}" in capsys.readouterr().out
        fake.run_line_magic("vllm_serve", "smol --dry-run")  # unnamed: a's port, where a is starting
        assert f"Would adopt the server for smol on port {base}" in capsys.readouterr().out
    finally:
        magics.servers.update(kept)


# -- tunnels go with their server; %ngrok_up by name or port --------------------------------------------
@pytest.fixture
def sharing(fake, make_manager, ngrok_bin, tmp_path, monkeypatch):
    """%ngrok_up drives pyngrok's real code against the stand-in agent (tests/tunnel_standin.py), through a
    manager on a free web port (so parallel tests do not meet on the agent's default 4040)."""
    monkeypatch.setenv("NGROK_AUTHTOKEN", TOKEN)
    manager = make_manager()
    for setting in (f"ngrok_path = {str(ngrok_bin)!r}", f"ngrok_config_path = {str(manager.config_path)!r}",
                    f"ngrok_startup_timeout = {manager.startup_timeout}"):
        fake.run_line_magic("config", f"VllmMagics.{setting}")
    fake._vllm_magics.tunnels = manager
    return fake


def _models_through(url: str, key: str | None) -> int:
    request = urllib.request.Request(f"{url}/v1/models", headers={"Authorization": f"Bearer {key}"} if key else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except urllib.error.URLError:  # nothing answers there
        return 0


def test_ngrok_up_by_server_name_or_its_port_shares_that_server_with_its_key(sharing, capsys):
    base, magics = sharing.base_port, sharing._vllm_magics
    sharing.run_line_magic("vllm_serve", "smol --name a")
    sharing.run_line_magic("vllm_serve", "tiny --name b")
    a, b = magics.servers["a"], magics.servers["b"]
    capsys.readouterr()
    sharing.run_line_magic("ngrok_up", "--server b")
    out = capsys.readouterr().out
    (tunnel,) = magics.tunnels.list()
    assert tunnel.port == base + 1 and b.api_key[-4:] in out and a.api_key[-4:] not in out
    assert _models_through(tunnel.public_url, b.api_key) == 200
    assert _models_through(tunnel.public_url, a.api_key) == 401
    # --port of a managed server is that server: no --insecure needed, its key shown.
    sharing.run_line_magic("ngrok_up", f"--port {base}")
    assert a.api_key[-4:] in capsys.readouterr().out
    assert sorted(t.port for t in magics.tunnels.list()) == [base, base + 1]


def test_stopping_a_server_closes_its_tunnels_and_a_tunnels_port_is_never_handed_out(sharing, capsys):
    base, magics = sharing.base_port, sharing._vllm_magics
    sharing.run_line_magic("vllm_serve", "smol --name a")
    sharing.run_line_magic("vllm_serve", "tiny --name b")
    sharing.run_line_magic("ngrok_up", "--server a")
    sharing.run_line_magic("ngrok_up", "--server b")
    to_a = next(t for t in magics.tunnels.list() if t.port == base)
    capsys.readouterr()
    sharing.run_line_magic("vllm_stop", "a")
    assert f"Closed the tunnel {to_a.public_url} to port {base}." in capsys.readouterr().out
    assert [t.port for t in magics.tunnels.list()] == [base + 1]  # b's stays
    # A server without a key on a's old port is not public: the tunnel went with a.
    sharing.run_line_magic("vllm_serve", "secret --name c --no-api-key")
    assert magics.servers["c"].plan.port == base
    assert _models_through(to_a.public_url, None) != 200
    # A tunnel to a port nobody serves (yet) keeps that port from every new server.
    unmanaged = base + 5
    sharing.run_line_magic("ngrok_up", f"--port {unmanaged} --insecure")
    sharing.run_line_magic("config", f"VllmMagics.port = {unmanaged}")
    capsys.readouterr()
    sharing.run_line_magic("vllm_serve", "other --name d --dry-run")
    assert f"--port {unmanaged + 1}" in capsys.readouterr().out
    with pytest.raises(UsageError, match=f"port {unmanaged} is shared by the tunnel"):
        sharing.run_line_magic("vllm_serve", f"other --name d --port {unmanaged} --dry-run")
    capsys.readouterr()
    sharing.run_line_magic("vllm_stop", "--all")
    assert "Closed the tunnel" in capsys.readouterr().out and [t.port for t in magics.tunnels.list()] == [unmanaged]


# -- a plain %vllm_serve is the default; restart checks first; adoption matches -------------------------
def test_a_plain_serve_after_a_plain_stop_starts_the_default_again(fake, capsys):
    base, magics = fake.base_port, fake._vllm_magics
    fake.run_line_magic("vllm_serve", "smol")
    fake.run_line_magic("vllm_serve", "tiny --name r1")
    r1 = magics.servers["r1"]
    fake.run_line_magic("vllm_stop", "")
    assert registry(fake) == {"default": (base, False), "r1": (base + 1, True)}  # no reordering
    fake.run_line_magic("vllm_serve", "qwen")
    assert registry(fake) == {"default": (base, True), "r1": (base + 1, True)} and magics.servers["r1"] is r1
    assert magics.servers["default"].plan.model == "qwen"
    capsys.readouterr()
    fake.run_line_magic("vllm_serve", "other --name r1")
    out = capsys.readouterr().out
    assert "A server r1 is already running" in out and "%vllm_serve MODEL --name r1 --restart replaces it" in out
    assert "%vllm_stop r1 stops it" in out


def test_restart_checks_the_line_before_stopping_the_server(fake):
    fake.run_line_magic("vllm_serve", "smol --name a")
    a = fake._vllm_magics.servers["a"]
    pid = a.pid
    with pytest.raises(UsageError, match="NAME=PATH_OR_REPO"):
        fake.run_line_magic("vllm_serve", "smol --name a --restart --lora oops")
    assert fake._vllm_magics.servers["a"] is a and a.is_alive() and a.pid == pid


def test_reloaded_named_servers_are_adopted_by_their_adapters_not_only_their_model(fake, tmp_path, capsys):
    from vllm_magics.notebook.serve_start import adopt_command

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 8}))
    base = fake.base_port
    fake.run_line_magic("vllm_serve", f"smol --name a --lora p={adapter}")
    fake.run_line_magic("vllm_serve", "smol --name b")
    pids = {n: s.pid for n, s in fake._vllm_magics.servers.items()}
    kept = dict(fake._vllm_magics.servers)
    fake._vllm_magics.servers.clear()  # as after %unload_ext / %load_ext: both still run
    try:
        fake.run_line_magic("vllm_serve", "smol --name b")  # b first: the plain one, not a (its adapter)
        again = adopt_command("a", kept["a"].plan)  # what %unload_ext's note should say for a
        assert again == f"%vllm_serve smol --name a --lora p={adapter}"
        fake.run_line_magic("vllm_serve", again.split(" ", 1)[1])
        assert registry(fake) == {"b": (base + 1, True), "a": (base, True)}
        assert {n: s.pid for n, s in fake._vllm_magics.servers.items()} == pids
        capsys.readouterr()
        fake.run_line_magic("vllm_serve", "smol --name c --lora q=" + str(adapter) + " --dry-run")
        assert "Would adopt" not in capsys.readouterr().out  # another adapter name: a new server
    finally:
        for server in kept.values():
            server.stop(now=True)


def test_same_setup_compares_model_served_name_and_adapters(tmp_path):
    from vllm_magics.notebook.serve_start import same_setup

    plain = unstarted("m", 8000, tmp_path).plan
    assert same_setup(plain, unstarted("m", 8001, tmp_path).plan)  # the port is where, not what
    assert not same_setup(plain, unstarted("m", 8000, tmp_path, lora=["p=owner/adapter"]).plan)
    assert not same_setup(plain, unstarted("m", 8000, tmp_path, extra_args=["--served-model-name", "x"]).plan)
    assert not same_setup(plain, unstarted("n", 8000, tmp_path).plan)


def test_the_adopting_line_carries_the_adapters_and_served_name(tmp_path):
    from vllm_magics.notebook.serve_start import adopt_command

    odd = tmp_path / "my adapter,v2"
    odd.mkdir()
    plan = unstarted("m", 8000, tmp_path, lora=["p=owner/adapter", f"q={odd}"],
                     extra_args=["--served-model-name", "x"]).plan
    line = adopt_command("judge", plan)
    assert line == f"%vllm_serve m --name judge --lora p=owner/adapter --lora 'q={odd}' -- --served-model-name x"
    assert adopt_command("default", unstarted("m", 8000, tmp_path).plan) == "%vllm_serve m"


# -- small things ---------------------------------------------------------------------------------------
def test_names_with_a_trailing_newline_are_refused(shell):
    with pytest.raises(UsageError, match="simple identifier"):
        shell._vllm_magics._check_name("r1\n")
    assert shell._vllm_magics._check_name("_r1") == "_r1"  # the message says '_' may start a name


def test_client_of_an_unknown_name_is_a_readable_lookup_error(two):
    import vllm_magics

    with pytest.raises(LookupError) as caught:
        vllm_magics.client("nope")
    assert str(caught.value) == "no server named 'nope'; this session's servers: base, r1"


def test_compare_checks_out_before_asking(shell, two):
    with pytest.raises(UsageError, match="--out needs a variable name, not 'not-a-name'"):
        shell.run_cell_magic("ask", "--compare base,r1 --out not-a-name", "Hi")
