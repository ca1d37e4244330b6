"""No secret in anything a failed %ngrok_up prints, with `%xmode Verbose` (tracebacks with every frame's
local variables): a real InteractiveShell, pyngrok's real code and the stand-in agent. Each failure must
be one UsageError line; then `%tb` re-shows the last error, and everything printed (stdout, stderr, the
shell's display outputs, its history, pyngrok's log records) is scanned for the token.

(The API key of a real vLLM server is scanned the same way in test_tunnel_real.py.)"""
from __future__ import annotations

import logging
import sys

import pytest
from IPython.core.error import UsageError

from tunnel_standin import _reset_pyngrok, install_standin

TOKEN = "2Zq8TestAuthTokenForScanXy_4f9d0c2b7e1a6d3c5b8a9f0e1d2c3b4a5"


class Printed:
    """Everything a shell prints or keeps: fd-level stdout/stderr (capfd), IPython's captured streams and
    display outputs (every mimetype), its input and output history, and pyngrok's log records."""

    def __init__(self, shell, capfd):
        self.shell, self.capfd = shell, capfd
        self.texts: list[str] = []
        self.records: list[logging.LogRecord] = []
        self.errors: list[str] = []  # the stderr of each failing cell

        class Keep(logging.Handler):
            def emit(handler, record):
                self.records.append(record)

        self._handler = Keep(level=logging.DEBUG)
        logger = logging.getLogger("pyngrok")
        self._old_level = logger.level
        logger.addHandler(self._handler)
        logger.setLevel(logging.DEBUG)

    def run(self, cell: str) -> tuple[str, str]:
        """Run `cell` then `%tb`, as a user would after an error; (stdout, stderr) of the cell."""
        from IPython.utils.capture import capture_output

        with capture_output() as cap:
            result = self.shell.run_cell(cell, store_history=True)
        with capture_output() as tb:
            self.shell.run_cell("%tb", store_history=True)
        out, err = self.capfd.readouterr()
        self.texts += [cap.stdout, cap.stderr, tb.stdout, tb.stderr, out, err, repr(result.error_in_exec)]
        for o in cap.outputs + tb.outputs:
            self.texts += [str(v) for v in o.data.values()]
        return cap.stdout + out, cap.stderr + err

    def everything(self) -> str:
        hm = self.shell.history_manager
        kept = [*hm.input_hist_raw, *hm.input_hist_parsed, *map(repr, hm.output_hist.values()),
                repr(getattr(sys, "last_value", None))]
        return "\n".join(self.texts + kept + [r.getMessage() for r in self.records])

    def close(self):
        logger = logging.getLogger("pyngrok")
        logger.removeHandler(self._handler)
        logger.setLevel(self._old_level)


@pytest.fixture
def verbose_shell(shell, tmp_path, monkeypatch, capfd):
    ngrok = install_standin(tmp_path / "bin")
    monkeypatch.setenv("NGROK_AUTHTOKEN", TOKEN)
    monkeypatch.setenv("FAKE_NGROK_RECORD", str(tmp_path / "agent-record"))
    monkeypatch.setitem(sys.modules, "google.colab", None)
    _reset_pyngrok()
    shell.run_line_magic("xmode", "Verbose")
    shell.run_line_magic("config", f"VllmMagics.ngrok_path = {str(ngrok)!r}")
    printed = Printed(shell, capfd)
    yield shell, printed, ngrok
    printed.close()
    if shell._vllm_magics.tunnels is not None:
        shell._vllm_magics.tunnels.stop()
    shell.run_line_magic("xmode", "Context")
    _reset_pyngrok()


def _one_usage_error(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines and all(ln.startswith("UsageError: ") for ln in lines), err
    assert "Traceback" not in err and len(set(lines)) == 1, err  # the cell's line, and %tb's same line
    return lines[0]


def test_failures_of_ngrok_up_are_one_line_and_never_show_the_token(verbose_shell, tmp_path, monkeypatch):
    shell, printed, ngrok = verbose_shell
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    cases = [
        # the config path under a file: the token file cannot be written
        (f"VllmMagics.ngrok_config_path = {str(a_file / 'agent.yml')!r}", None, "is not a folder"),
        # a folder nobody can create files in (even root: /proc)
        ("VllmMagics.ngrok_config_path = '/proc/agent.yml'", None, "cannot be written at /proc/agent.yml"),
        # a folder other users may write to: another user could plant a link where the token goes
        (f"VllmMagics.ngrok_config_path = {str(tmp_path / 'shared' / 'agent.yml')!r}", None,
         "other users may write to the folder"),
        # not an OSError: a ValueError out of the folder's mkdir, which only the magic's edge catches (its text
        # differs by Python: "embedded null byte" on 3.11, "mkdir: embedded null character in path" on 3.13)
        ("VllmMagics.ngrok_config_path = '/tmp/a\\x00b/agent.yml'", None,
         "%ngrok_up failed: ValueError: "),
        ("VllmMagics.ngrok_config_path = ''", "4018", "ERR_NGROK_4018"),
        ("VllmMagics.ngrok_config_path = ''", "105", "ERR_NGROK_105"),  # the agent echoes the token
        ("VllmMagics.ngrok_config_path = ''", "108", "ERR_NGROK_108"),
    ]
    (tmp_path / "shared").mkdir(mode=0o777)
    (tmp_path / "shared").chmod(0o777)
    for setting, mode, words in cases:
        shell.run_line_magic("config", setting)
        if mode:
            monkeypatch.setenv("FAKE_NGROK_MODE", mode)
        out, err = printed.run("%ngrok_up --port 9 --insecure")
        line = _one_usage_error(err)
        assert words in line, err
        if "cannot be written" in line:  # the magic adds what to type
            assert line.endswith("%config VllmMagics.ngrok_config_path = '/a/private/folder/agent.yml'")
        monkeypatch.delenv("FAKE_NGROK_MODE", raising=False)
    # An agent binary that cannot run at all (not executable): an OSError deep in pyngrok's thread.
    ngrok.chmod(0o644)
    out, err = printed.run("%ngrok_up --port 9 --insecure")
    assert "could not start" in _one_usage_error(err) or "Permission denied" in err
    ngrok.chmod(0o755)

    # The agent did echo the token (ERR_NGROK_105): pyngrok logged that line, redacted.
    assert any("Your authtoken:" in r.getMessage() for r in printed.records)
    everything = printed.everything()
    assert "%ngrok_up --port 9 --insecure" in everything and "ERR_NGROK_105" in everything
    assert TOKEN not in everything
    assert TOKEN[:3] + "…" + TOKEN[-4:] in everything  # masked, where ngrok's own text named it


def test_ctrl_c_while_the_agent_starts_is_one_line(verbose_shell, tmp_path, monkeypatch):
    """A KeyboardInterrupt while the agent starts (the stand-in stays silent, so %ngrok_up waits): the
    agent is stopped, and the notebook gets one line, not a traceback with the frames' variables."""
    import os
    import signal
    import threading

    from helpers import wait_until

    shell, printed, _ = verbose_shell
    monkeypatch.setenv("FAKE_NGROK_MODE", "silent")
    shell.run_line_magic("config", "VllmMagics.ngrok_startup_timeout = 600.0")
    record = tmp_path / "agent-record"

    def interrupt_once_the_agent_runs():
        if wait_until(lambda: list(record.glob("pid-*.json")), 600):
            os.kill(os.getpid(), signal.SIGINT)  # Python raises KeyboardInterrupt in the main thread

    th = threading.Thread(target=interrupt_once_the_agent_runs, daemon=True)
    th.start()
    out, err = printed.run("%ngrok_up --port 9 --insecure")
    th.join()
    assert "was interrupted" in _one_usage_error(err)
    assert not shell._vllm_magics.tunnels.is_running()
    assert TOKEN not in printed.everything()


def test_down_and_list_failures_are_one_line_too(verbose_shell):
    shell, printed, _ = verbose_shell
    out, err = printed.run("%ngrok_down --no-such-flag")
    assert "unrecognized arguments" in _one_usage_error(err)
    out, err = printed.run("%ngrok_up --list")
    assert "No tunnel is open" in out and err == ""
    assert TOKEN not in printed.everything()


def test_the_magic_adds_what_to_type_to_a_keyless_refusal(shell, tmp_path):
    """The library's refusal names no magic; the magic's one line says which to type."""
    from vllm_magics.tunnel.manager import TunnelManager

    m = TunnelManager(ngrok_path=tmp_path / "ngrok", config_path=tmp_path / "c" / "agent.yml", watchdog=False)
    with pytest.raises(UsageError) as info:
        shell._vllm_magics._at_the_edge("%ngrok_up", lambda line, redactor: m.open(9, api_key=None), "")
    msg = str(info.value)
    assert "no API key" in msg and "%vllm_serve MODEL --restart" in msg and "%ngrok_up --insecure" in msg
    assert "\n" not in msg and info.value.__context__ is None
