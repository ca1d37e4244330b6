"""Every magic that takes `--url`, against every way a server can misbehave (tests/standins/hostile_server.py):
a result or one UsageError line, never a traceback (printed, displayed or raised), never a hang.

Runs through `shell.run_cell`, as a notebook would: what the shell prints (the UsageError line, or a
traceback if one escaped) is captured along with stdout, stderr and every displayed bundle. A hang is
caught by pytest-timeout (the per-test limit below), not by a time assertion.
"""
from __future__ import annotations

import functools
import itertools
import re
import sys

import pytest
from IPython.core.displaypub import CapturingDisplayPublisher
from IPython.core.error import UsageError

from helpers import REPO

STANDIN = REPO / "tests" / "standins" / "hostile_server.py"
sys.path.insert(0, str(STANDIN.parent))
from hostile_server import MODES, start  # noqa: E402

# What each magic must end with, per mode: None is a normal result, a string is part of the one line.
NOT_HTTP = "did not answer with a usable HTTP reply"
SLOW = "no complete reply"
NOT_VLLM = "does not answer like a vLLM"
STATUS_FAILS = {"garbage", "banner", "html", "drip", "drip-body", "endless", "endless-chunked", "endless-header",
                "silent"}
ASK_MODEL_LOOKUP = {"garbage": NOT_HTTP, "banner": NOT_HTTP, "endless-header": NOT_HTTP, "html": "not JSON",
                    "drip": SLOW, "drip-body": SLOW, "silent": SLOW, "models-silent": SLOW,
                    "endless": "larger than", "endless-chunked": "larger than", "models-notjson": "not JSON"}
ASK_STREAM = {"chat-notjson": "sent no server-sent events", "sse-notjson": "event that is not JSON",
              "sse-number": "not a chat completion (a JSON int", "sse-choices": "a choice without a delta"}
STRAY = re.compile(r"\b(?!UsageError)\w*(Error|Exception): ")
ASK_NO_STREAM = {"chat-notjson": "not JSON", "sse-choices": "a choice without a message"}
# The modes that end only at the status deadline. It is a parameter: a shorter one ends them the same way,
# sooner (the default, 5 s, times 3 or 4 calls per mode was most of this module's time). Not much shorter:
# on a loaded machine even the connection to the stand-in can take a second (%%ask: ask_timeout, below).
SLOW_MODES = {"drip", "drip-body", "silent", "models-silent"}
SHORT_STATUS_DEADLINE = 2.5


def ask_timeout(mode: str) -> int:
    """%%ask's --timeout: short for the modes that end only at it; long for the others, which answer at
    once (a short one let a loaded machine turn their answer into a timeout, seen in a CI run)."""
    return 2 if mode in SLOW_MODES else 60


@pytest.fixture(scope="module")
def hostile_server():
    """(process, port) of the stand-in: one process for the module; the mode is in each URL."""
    proc, port = start()
    yield proc, port
    proc.kill()
    proc.wait()


@pytest.fixture
def hostile(hostile_server):
    """The stand-in's port."""
    return hostile_server[1]


@pytest.fixture
def run(shell, capsys):
    """run(code) -> (error or None, everything printed or displayed)."""
    saved = shell.display_pub
    shell.display_pub = CapturingDisplayPublisher()
    shell.user_ns["items"] = ["a", "b"]

    def run_(code: str):
        shell.display_pub.outputs.clear()
        result = shell.run_cell(code)
        out = capsys.readouterr()
        shown = "\n".join(str(v) for o in shell.display_pub.outputs for v in o["data"].values())
        return result.error_in_exec or result.error_before_exec, out.out + out.err + shown

    yield run_
    shell.display_pub = saved


def assert_outcome(error, printed: str, expected: str | None):
    # A stray exception shows as a traceback, or (an --each item's error) as "SomeError: ...".
    assert "Traceback" not in printed and not STRAY.search(printed), printed
    if expected is None:
        assert error is None, f"{error!r}\n{printed}"
        return
    assert isinstance(error, UsageError), f"{error!r}\n{printed}"
    message = str(error)
    assert expected in message and "\n" not in message.strip(), message
    # The shell showed exactly that one line.
    assert printed.strip().splitlines()[-1] == f"UsageError: {message}", printed


def url(port: int, mode: str) -> str:
    return f"http://127.0.0.1:{port}/m/{mode}/v1"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", MODES)
def test_vllm_status_against(mode, hostile, run, monkeypatch):
    expected = NOT_VLLM if mode in STATUS_FAILS else None
    if mode in SLOW_MODES:  # the magic imports collect_status when called: it gets this one
        from vllm_magics.status import collect

        monkeypatch.setattr(collect, "collect_status",
                            functools.partial(collect.collect_status, timeout=SHORT_STATUS_DEADLINE))
    for line in ("", "--json", "--watch 0.1 --count 2"):
        error, printed = run(f"%vllm_status --url {url(hostile, mode)} {line}")
        assert_outcome(error, printed, expected)
        if expected is None and line == "":
            assert printed.startswith("vLLM server: ready"), printed


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", MODES)
def test_ask_against(mode, hostile, run):
    base = f"%%ask --url {url(hostile, mode)} --timeout {ask_timeout(mode)}"
    for options, table in (("", ASK_STREAM), ("--no-stream", ASK_NO_STREAM)):
        error, printed = run(f"{base} {options}\nHi")
        assert_outcome(error, printed, ASK_MODEL_LOOKUP.get(mode) or table.get(mode))
        if error is None:
            assert "The answer." in printed or "Hello." in printed, printed
    error, printed = run(f"{base} --each items\nSay {{{{ item }}}}")
    assert_outcome(error, printed, ASK_MODEL_LOOKUP.get(mode))
    if error is None and mode in ASK_STREAM:  # the model list is fine, every request fails: per item
        assert printed.count(ASK_STREAM[mode]) >= 2, printed


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode, expected", [
    ("endless", "a line longer than 4 MB"), ("endless-chunked", "a line longer than 4 MB"),
    ("drip-body", SLOW), ("drip", SLOW), ("silent", SLOW), ("garbage", NOT_HTTP), ("html", "no server-sent events")])
def test_ask_with_a_model_reaches_the_stream(mode, expected, hostile, run):
    """With --model there is no /v1/models lookup: the stream itself must end cleanly."""
    error, printed = run(f"%%ask --url {url(hostile, mode)} --timeout {ask_timeout(mode)} --model standin\nHi")
    assert_outcome(error, printed, expected)


def test_url_without_a_scheme_is_taken_as_http(hostile, run):
    error, printed = run(f"%vllm_status --url 127.0.0.1:{hostile}/m/ok/v1")
    assert_outcome(error, printed, None)
    assert f"http://127.0.0.1:{hostile}/m/ok/v1" in printed
    error, printed = run(f"%%ask --url localhost:{hostile}/m/ok --no-stream\nHi")
    assert_outcome(error, printed, None)


@pytest.mark.parametrize("bad, expected", [("ftp://host/v1", "is not an http:// or https:// URL"),
                                           ("http://", "has no host name"),
                                           ("http://127.0.0.1:99999/v1", "has an invalid port")])
def test_a_url_that_is_not_one_is_one_line(bad, expected, run):
    for code in (f"%vllm_status --url {bad}", f"%%ask --url {bad}\nHi"):
        error, printed = run(code)
        assert_outcome(error, printed, expected)


def test_a_server_without_vllms_gauges_gets_a_card(hostile, run):
    error, printed = run(f"%vllm_status --url {url(hostile, 'no-gauges')}")
    assert_outcome(error, printed, None)
    assert "/metrics: no vLLM figures" in printed and "model          standin (max 2048 tokens)" in printed


def test_a_key_over_plain_http_beyond_this_machine_is_warned_once(hostile, run, monkeypatch):
    monkeypatch.setenv("REMOTE_KEY", "sk-remote-secret-123456")
    far = "http://192.0.2.1:9/v1"  # TEST-NET-1 (RFC 5737): not this machine, nothing answers
    error, printed = run(f"%vllm_status --url {far} --api-key-env REMOTE_KEY")
    warning = [ln for ln in printed.splitlines() if ln.startswith("Warning:")]
    assert warning == ["Warning: the API key goes to http://192.0.2.1:9 over plain http://, readable by anyone "
                       "on the way; use an https:// URL (e.g. the server's %ngrok_up URL)."], printed
    assert "sk-remote-secret" not in printed and isinstance(error, UsageError)
    error, printed = run(f"%vllm_status --url {far} --api-key-env REMOTE_KEY")
    assert "Warning:" not in printed  # once per URL
    for quiet in (f"http://127.0.0.1:{hostile}/m/ok/v1", f"http://localhost:{hostile}/m/ok/v1", "https://192.0.2.1:9/v1",
                  "http://192.0.2.2:9/v1"):  # local, local, encrypted, no key (below)
        key = "" if quiet.startswith("http://192.0.2.2") else " --api-key-env REMOTE_KEY"
        error, printed = run(f"%vllm_status --url {quiet}{key}")
        assert "Warning:" not in printed, printed


ASK = "%%ask --url {url} --model standin"


def interrupt_on_next_request(server) -> None:
    """Ctrl-C (SIGINT to this process) once the stand-in holds a new connection: the magic is then
    inside its request, past its imports and setup (a fixed delay could land before, on a loaded
    machine). Seen from the stand-in's side (its process's TCP connections), so it needs no change."""
    import os
    import signal
    import threading

    import psutil

    from helpers import wait_until

    proc, port = server
    stand_in = psutil.Process(proc.pid)
    # psutil 6 renamed connections() to net_connections(); Colab has psutil 5.9.5.
    connections = getattr(stand_in, "net_connections", None) or stand_in.connections

    def open_requests() -> set:
        return {c.raddr for c in connections("tcp")
                if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == port}

    before = open_requests()  # a connection an earlier test left open is not this magic's request

    def interrupt():
        if wait_until(lambda: open_requests() - before, 50, interval=0.02):
            os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode, line", list(itertools.product(("drip-body", "silent"), (ASK, ASK + " --no-stream")))
                         + [("silent", "%vllm_status --url {url}"), ("silent", "%vllm_status --url {url} --json")])
def test_ctrl_c_ends_a_magic_waiting_for_a_slow_server_as_one_line(mode, line, hostile_server, run, shell):
    """With the default timeout (600 s) only Ctrl-C ends the wait early: it must, as one line."""
    base = url(hostile_server[1], mode)
    # Skip %%ask's /version probe (2 s at most): the Ctrl-C is meant for the chat request itself.
    shell._vllm_magics._vllm_urls[base[:-3]] = False
    interrupt_on_next_request(hostile_server)
    error, printed = run(line.format(url=base) + ("\nHi" if line.startswith("%%") else ""))
    assert_outcome(error, printed, "interrupted")
