"""TunnelManager's decisions, in-process: refusals, the start deadline, error translation, the tunnels'
bookkeeping, adoption. The agent is an in-process object with tunnel/agent.py's interface (the seam);
what pyngrok and a real agent process do is tested in test_tunnel.py against the stand-in agent."""
from __future__ import annotations

import threading

import pytest

from vllm_magics.redact import Secret
from vllm_magics.tunnel.agent import AgentFailure
from vllm_magics.tunnel.manager import (
    AGENT_SETTINGS, AgentConfigUnwritable, InsecureShareRefused, NgrokAuthError, NgrokNotInstalled, NgrokSessionLimit,
    NgrokStartTimeout, TunnelError, TunnelManager,
)

TOKEN = "2Vt9dTestTokenAbcdefghij_0123456789KLMNOPqrstu"
API_KEY = "sk-vllm-test-key-0123456789abcdef"


class Start:
    """AgentStart's interface: `outcome` None (never ready), "ok", or an AgentFailure."""

    def __init__(self, agent, outcome, pid=None, words=("", "")):
        self.agent, self.outcome, self.pid, self.words = agent, outcome, pid, words
        self.aborted = threading.Event()

    def spawned_pid(self):
        return self.pid

    def wait(self, timeout):
        if self.outcome is None:
            self.aborted.wait(timeout)
            return False
        return True

    def finish(self):
        if isinstance(self.outcome, AgentFailure):
            raise self.outcome
        self.agent.alive, self.agent.owned = True, True

    def last_words(self):
        return self.words

    def abort(self):
        self.aborted.set()


class Agent:
    """PyngrokAgent's interface, in memory. `calls` records what the manager asked, in order."""

    def __init__(self, outcome="ok", *, install=None, connect=None, disconnect=None, running_elsewhere=False,
                 write_error=None, words=("", "")):
        self.path, self.config_path, self.region = "/bin/ngrok-standin", "/tmp/agent.yml", None
        self.outcome, self.install_failure, self.connect_failure = outcome, install, connect
        self.disconnect_failure, self.elsewhere, self.write_error, self.words = (
            disconnect, running_elsewhere, write_error, words)
        self.alive = self.owned = False
        self.calls: list = []
        self.written = None
        self.starts: list[Start] = []
        self.endpoints: dict[str, str] = {}

    pid = property(lambda self: 4242 if self.alive else None)
    api_url = property(lambda self: "http://127.0.0.1:4040" if self.alive else None)

    def running(self):
        return self.alive

    def adopt_running(self):
        self.calls.append("adopt?")
        if self.elsewhere:
            self.alive, self.owned = True, False
        return self.elsewhere

    def install(self, timeout):
        self.calls.append("install")
        if self.install_failure:
            raise self.install_failure

    def write_config(self, token, settings):
        self.calls.append("write")
        assert isinstance(token, Secret)
        if self.write_error:
            raise self.write_error
        self.written = (token.reveal(), settings)

    def begin_start(self):
        self.calls.append("start")
        s = Start(self, self.outcome, words=self.words)
        self.starts.append(s)
        return s

    def connect(self, name, upstream, options):
        self.calls.append(("connect", name, upstream, dict(options)))
        if self.connect_failure:
            raise self.connect_failure
        url = f"https://{name}.ngrok-free.app"
        self.endpoints[url] = name
        return url

    def disconnect(self, url):
        self.calls.append(("disconnect", url))
        if self.disconnect_failure:
            raise self.disconnect_failure
        self.endpoints.pop(url)

    def stop(self):
        self.calls.append("stop")
        if self.owned:
            self.alive = False
        self.owned = False


def manager(agent, **kw) -> TunnelManager:
    kw.setdefault("watchdog", False)
    return TunnelManager(agent=agent, **kw)


def test_opens_with_inspection_off_and_the_token_only_in_the_config():
    a = Agent()
    m = manager(a, web_addr="127.0.0.1:4999")
    t = m.open(8000, api_key=API_KEY, authtoken=TOKEN, token_source="test", domain="me.ngrok.app")
    assert a.calls[:4] == ["adopt?", "install", "write", "start"]
    assert a.written == (TOKEN, {**AGENT_SETTINGS, "web_addr": "127.0.0.1:4999"})
    assert AGENT_SETTINGS["inspect_db_size"] == -1
    (_, name, upstream, options) = a.calls[4]
    assert upstream == "http://127.0.0.1:8000" and name.startswith("vllm-magics-8000-")
    assert options == {"inspect": False, "url": "https://me.ngrok.app"}
    assert t.public_url == f"https://{name}.ngrok-free.app" and t.openai_base_url == t.public_url + "/v1"
    assert m.list() == [t] and m.token_source == "test"
    m.open(8000, api_key=API_KEY)  # running: neither token nor start again
    assert a.calls.count("start") == 1 and len(m.list()) == 2
    m.stop()
    assert a.calls[-1] == "stop" and m.list() == [] and not a.endpoints


def test_refuses_a_keyless_server_before_touching_the_agent():
    a = Agent()
    with pytest.raises(InsecureShareRefused, match="no API key"):
        manager(a).open(8000, api_key=None, authtoken=TOKEN)
    assert a.calls == []
    with pytest.raises(TunnelError, match="8 to 128"):
        manager(a).open(8000, api_key=API_KEY, authtoken=TOKEN, basic_auth=("u", "short"))
    assert a.calls == []


def test_the_deadline_stops_an_agent_that_never_comes_up():
    a = Agent(outcome=None)
    with pytest.raises(NgrokStartTimeout, match="printed nothing") as info:
        manager(a, startup_timeout=0.05).open(8000, api_key=API_KEY, authtoken=TOKEN)
    assert a.starts[0].aborted.is_set() and "--version" in str(info.value)
    a = Agent(outcome=None, words=("", "lvl=eror msg=x err=no route; another line"))
    with pytest.raises(NgrokStartTimeout) as info:
        manager(a, startup_timeout=0.05).open(8000, api_key=API_KEY, authtoken=TOKEN)
    assert "its last lines: lvl=eror msg=x err=no route; another line" in str(info.value)
    assert "printed nothing" not in str(info.value) and a.starts[0].aborted.is_set()


def test_ctrl_c_while_starting_leaves_no_agent():
    a = Agent(outcome=None)

    class Interrupting(Start):
        def wait(self, timeout):
            raise KeyboardInterrupt

    a.begin_start = lambda: a.starts.append(Interrupting(a, None)) or a.starts[-1]
    with pytest.raises(KeyboardInterrupt):
        manager(a).open(8000, api_key=API_KEY, authtoken=TOKEN)
    assert a.starts[0].aborted.is_set()


@pytest.mark.parametrize("code,cls,words", [
    ("ERR_NGROK_4018", NgrokAuthError, "missing or invalid"),
    ("ERR_NGROK_105", NgrokAuthError, "(2Vt…rstu) does not look like"),
    ("ERR_NGROK_107", NgrokAuthError, "reset or revoked"),
    ("ERR_NGROK_108", NgrokSessionLimit, "free accounts allow one"),
    ("ERR_NGROK_9999", TunnelError, "ngrok could not start (ERR_NGROK_9999)"),
    (None, TunnelError, "The ngrok agent could not start: it said so 2Vt…rstu. Its last lines: a; b"),
])
def test_start_failures_in_plain_words(code, cls, words):
    failure = AgentFailure("start", f"it said so {TOKEN}", code=code, last_lines=("a", "b"))
    with pytest.raises(cls) as info:
        manager(Agent(outcome=failure)).open(8000, api_key=API_KEY, authtoken=TOKEN, token_source="a test")
    assert words in str(info.value) and TOKEN not in str(info.value) + info.value.detail
    assert type(info.value) is cls and info.value.code == code
    assert info.value.__context__ is None and info.value.__cause__ is None


def test_install_and_config_failures():
    with pytest.raises(NgrokNotInstalled, match="cannot reach ngrok's download site"):
        manager(Agent(install=AgentFailure("install", "timed out"))).start(TOKEN)
    with pytest.raises(NgrokNotInstalled, match="pyngrok cannot install it: no build"):
        manager(Agent(install=AgentFailure("unsupported", "no build"))).start(TOKEN)
    a = Agent(write_error=NotADirectoryError(20, "Not a directory"))
    with pytest.raises(AgentConfigUnwritable, match="cannot be written at /tmp/agent.yml: Not a directory") as info:
        manager(a).start(TOKEN)
    assert info.value.path == "/tmp/agent.yml" and "start" not in a.calls  # ngrok_config_path: the magic's
    assert info.value.__context__ is None


def test_connect_refusal_and_close_bookkeeping():
    a = Agent(connect=AgentFailure("http", "field basic_auth not found", status=400))
    m = manager(a)
    with pytest.raises(TunnelError, match=r"refused to open the tunnel \(HTTP 400\): field basic_auth"):
        m.open(8000, api_key=API_KEY, authtoken=TOKEN)
    assert m.list() == []

    a = Agent()
    m = manager(a)
    t1, t2 = (m.open(8000, api_key=API_KEY, authtoken=TOKEN) for _ in range(2))
    assert m.close(t1.openai_base_url) and m.close("nothing") is False
    a.disconnect_failure = AgentFailure("http", "gone", status=404)  # the agent had closed it already
    assert m.close(t2.name) and m.list() == []
    t3 = m.open(8000, api_key=API_KEY)
    a.disconnect_failure = AgentFailure("http", "boom", status=502)
    with pytest.raises(TunnelError, match="HTTP 502"):
        m.close(t3.public_url)
    assert m.list() == []  # forgotten either way
    t4 = m.open(8000, api_key=API_KEY)
    a.alive = False  # the agent died
    assert m.list() == [] and m.close(t4.public_url) is False


def test_an_agent_already_running_is_used_and_left_running():
    a = Agent(running_elsewhere=True)
    m = manager(a)
    m.open(8000, api_key=API_KEY)  # no token needed
    assert "write" not in a.calls and "start" not in a.calls
    m.stop()
    assert a.alive  # not ours to stop


def test_the_token_is_found_when_not_given(monkeypatch):
    monkeypatch.setenv("NGROK_AUTHTOKEN", TOKEN)
    monkeypatch.setitem(__import__("sys").modules, "google.colab", None)
    a = Agent()
    m = manager(a)
    m.start()
    assert a.written[0] == TOKEN and m.token_source == "environment variable NGROK_AUTHTOKEN"
