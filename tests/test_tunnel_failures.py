"""The tunnel's failures end to end (pyngrok's real code, the stand-in agent): ngrok's errors in plain
words and redacted, an agent that never comes up, a download that cannot happen, and an agent that does
not outlive its Python process."""
from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import threading

import pytest

from helpers import ctrl_c_inside_thread_start, free_port, wait_until
from vllm_magics.server.process import pid_alive
from vllm_magics.tunnel.agent import AgentStart
from vllm_magics.tunnel.manager import (
    NgrokAuthError, NgrokNotInstalled, NgrokSessionLimit, NgrokStartTimeout, TunnelManager,
)

import tunnel_standin
from tunnel_standin import API_KEY, TOKEN, _agent_pids, _assert_secret_free

# Fixtures (pytest finds them by name in this module).
_clean_pyngrok = tunnel_standin._clean_pyngrok
record, ngrok_bin, make_manager = tunnel_standin.record, tunnel_standin.ngrok_bin, tunnel_standin.make_manager
log_records, upstream = tunnel_standin.log_records, tunnel_standin.upstream


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
    assert wait_until(lambda: not pid_alive(pid), 60) and not m.is_running()
    if code == "ERR_NGROK_105":  # the agent did echo it: pyngrok logged that line, redacted
        assert any("Your authtoken:" in r.getMessage() for r in log_records)
    out, err = capfd.readouterr()
    _assert_secret_free(TOKEN, log_records, str(exc), exc.detail, repr(exc.args), out, err)


@pytest.mark.parametrize("seen_alive", [True, False], ids=["polled-while-alive", "gone-between-polls"])
@pytest.mark.parametrize("mode,cls,code", [("105", NgrokAuthError, "ERR_NGROK_105"),
                                           ("108", NgrokSessionLimit, "ERR_NGROK_108")])
def test_an_error_the_agent_printed_as_it_exited_is_still_read(make_manager, upstream, record, log_records,
                                                               monkeypatch, capfd, mode, cls, code, seen_alive):
    """pyngrok stops reading the agent's output once the agent has exited (process._start_process checks
    proc.poll() after each line), with its error maybe still unread: on a loaded machine that said "The
    ngrok process was unable to start" instead of ngrok's own error (a CI run of ours). The stand-in makes
    that order certain: its process is gone before its lines are read. And on a loaded machine the
    manager's poll (every 20 ms) may never run while the agent lives (a later CI run of ours): pyngrok has
    then dropped the agent, pipe and all, before anyone but pyngrok saw it."""
    monkeypatch.setenv("FAKE_NGROK_MODE", mode)
    monkeypatch.setenv("FAKE_NGROK_EXIT_FIRST", "1")
    if not seen_alive:
        monkeypatch.setattr(AgentStart, "spawned_pid", lambda self: None)
    m = make_manager()
    with pytest.raises(cls) as info:
        m.open(upstream.port, api_key=API_KEY, authtoken=TOKEN, token_source="Colab secret NGROK_AUTHTOKEN")
    assert info.value.code == code and code in info.value.detail
    assert info.value.__context__ is None and info.value.__cause__ is None
    assert not m.is_running()
    out, err = capfd.readouterr()
    _assert_secret_free(TOKEN, log_records, str(info.value), info.value.detail, repr(info.value.args), out, err)


def _shorten_start_when(m: TunnelManager, ready: threading.Event, to: float = 1.0) -> threading.Thread:
    """Let the agent start under a long limit until `ready` is set, then give it `to` seconds more: what the
    test needs to see (a pid file, a printed error) has happened however busy the machine is."""
    def shorten():
        ready.wait()
        m.startup_timeout = to

    th = threading.Thread(target=shorten, daemon=True)
    th.start()
    return th


@pytest.mark.parametrize("when", ["before-the-agent-runs", "once-the-agent-runs"])
def test_ctrl_c_while_the_start_thread_starts_leaves_no_agent(make_manager, upstream, record, monkeypatch, when):
    """Thread.start() waits until its thread runs: a Ctrl-C landing there leaves AgentStart before the
    manager holds it, and pyngrok's thread would go on to start an agent that nobody stops."""
    m = make_manager()
    agent_runs = (lambda: _agent_pids(record)) if when == "once-the-agent-runs" else (lambda: True)
    ctrl_c_inside_thread_start(monkeypatch, lambda thread, n: thread.name == "vllm-magics-ngrok-start",
                               agent_runs, thread_runs_first=True)
    with pytest.raises(KeyboardInterrupt):
        m.open(upstream.port, api_key=API_KEY, authtoken=TOKEN)
    # pyngrok's start thread has ended (its agent ready, or killed) before the pid files are read: else an
    # agent still starting would not have written its file yet, and the test could not fail.
    assert wait_until(lambda: "vllm-magics-ngrok-start" not in {t.name for t in threading.enumerate()}, 60)
    pids = _agent_pids(record)  # none when it was killed before it wrote its file
    assert len(pids) == 1 if when == "once-the-agent-runs" else len(pids) <= 1
    assert wait_until(lambda: not any(pid_alive(p) for p in pids), 30) and not m.is_running()


def test_a_silent_agent_is_stopped_after_the_timeout(make_manager, upstream, record, monkeypatch):
    # pyngrok's own startup_timeout is checked between lines: a binary that prints nothing blocks it forever.
    monkeypatch.setenv("FAKE_NGROK_MODE", "silent")
    m = make_manager(startup_timeout=600.0)
    spawned = threading.Event()
    waiter = threading.Thread(target=lambda: wait_until(lambda: _agent_pids(record), 600) and spawned.set(),
                              daemon=True)
    waiter.start()
    _shorten_start_when(m, spawned)
    with pytest.raises(NgrokStartTimeout) as info:
        m.open(upstream.port, api_key=API_KEY, authtoken=TOKEN)
    assert "not ready after 1 s" in str(info.value) and "--version" in str(info.value)
    (pid,) = _agent_pids(record)
    assert wait_until(lambda: not pid_alive(pid), 60)
    assert not m.is_running() and m._watchdog is None


def test_an_agent_that_cannot_reach_ngrok_is_stopped_with_its_error(make_manager, upstream, record, monkeypatch):
    monkeypatch.setenv("FAKE_NGROK_MODE", "offline")
    m = make_manager(startup_timeout=600.0)
    said = threading.Event()
    # pyngrok calls this after it has kept the line (its logs), which is what the timeout message quotes.
    m.agent.config.log_event_callback = lambda log: "failed to reconnect session" in log.line and said.set()
    _shorten_start_when(m, said)
    with pytest.raises(NgrokStartTimeout) as info:
        m.open(upstream.port, api_key=API_KEY, authtoken=TOKEN)
    msg = str(info.value)
    assert 'failed to dial ngrok server with address "connect.ngrok-agent.com:443"' in msg
    assert "may not reach ngrok's servers" in msg and "printed nothing" not in msg
    (pid,) = _agent_pids(record)
    assert wait_until(lambda: not pid_alive(pid), 60) and not m.is_running()


@pytest.mark.parametrize("server", ["refused", "silent"])
def test_download_failure_offline(tmp_path, monkeypatch, server):
    """pyngrok downloads the agent when ngrok_path does not exist (urlopen, 6 s timeout, no retry). Only
    the download URL is changed here, to a local port that refuses, or accepts and never answers (what a
    black-holed network does), so the test is quick (its speed is not asserted)."""
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
    try:
        with pytest.raises(NgrokNotInstalled) as info:
            m.open(8000, api_key=API_KEY, authtoken=TOKEN)
    finally:
        if sock is not None:
            sock.close()
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
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    pid = int(proc.stdout.split()[0])
    assert wait_until(lambda: not pid_alive(pid), 60), f"the agent {pid} outlived its Python process"
