"""Every magic against arbitrary argument lines: a result or a one-line UsageError, never a traceback.
And the README cannot drift from the parsers. (64 concurrent questions: tests/test_ask_real.py.)"""
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from IPython.core.error import UsageError

from helpers import REPO, free_port

WORDS = ["--port", "--host", "--dtype", "--max-model-len", "--api-key", "--no-api-key", "--timeout", "--detach",
         "--restart", "--json", "--watch", "--count", "-n", "--lines", "--follow", "--now", "--model", "--system",
         "--temperature", "--top-p", "--max-tokens", "--seed", "--stop", "--params", "--no-stream", "--out",
         "--each", "--concurrency", "--thread", "-c", "--all", "--list", "--insecure", "--basic-auth", "--",
         "0", "-1", "1e9", "nan", "x", "'", '"', "{", "}", "[1]", '{"a":1}', "$HOME", "é", "\\", "--=", "-"]
LINES = st.lists(st.one_of(st.sampled_from(WORDS), st.text(max_size=6)), max_size=7).map(" ".join)


STRAY = re.compile(r"\b(?!UsageError)\w*(Error|Exception): ")


def call(shell, kind, name, line, capsys):
    """Run the magic; it may raise only UsageError, and print no traceback or stray exception
    (what it printed is read back and checked, not thrown away)."""
    capsys.readouterr()
    try:
        if kind == "cell":
            shell.run_cell_magic(name, line, "What is 2 + 2?")
        else:
            shell.run_line_magic(name, line)
    except UsageError as exc:
        message = str(exc)
        assert message.strip() and "Traceback" not in message, message
    out = capsys.readouterr()
    printed = out.out + out.err
    assert "Traceback" not in printed and not STRAY.search(printed), printed


@pytest.fixture(scope="module")
def sweep_shell():
    from IPython.core.interactiveshell import InteractiveShell

    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "vllm_magics")
    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens: requests fail fast, offline
    # Set on this instance, not with %config: that would outlive the module in the shared shell's config.
    ip._vllm_magics.url = dead
    ip._vllm_magics.request_timeout = 2.0
    yield ip
    ip.run_line_magic("unload_ext", "vllm_magics")


MAGICS = [("line", "vllm_serve"), ("line", "vllm_stop"), ("line", "vllm_logs"), ("line", "vllm_status"),
          ("cell", "ask"), ("line", "ask_reset"), ("line", "ngrok_up"), ("line", "ngrok_down")]


@pytest.mark.parametrize("kind, name", MAGICS)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(line=LINES)
def test_any_line_gives_a_result_or_a_usage_error(sweep_shell, kind, name, line, capsys):
    if name == "vllm_serve":
        line += " --dry-run"  # never start a real server from a random line
    if name == "ngrok_up" and "--insecure" in line.split():
        line = line.replace("--insecure", "")  # nor open a tunnel (no agent binary here)
    if name == "vllm_status" and "--watch" in line.split():
        line += " --count 1"
    call(sweep_shell, kind, name, line, capsys)
    assert sweep_shell._vllm_magics.server is None


def test_readme_documents_every_option_of_every_magic():
    from vllm_magics.notebook.magics import VllmMagics

    readme = (REPO / "README.md").read_text()
    missing = []
    for kind, name in MAGICS:
        assert f"%{'%' if kind == 'cell' else ''}{name}" in readme, name
        parser = getattr(VllmMagics, name).parser
        for action in parser._actions:
            for option in action.option_strings:
                if option not in ("-h", "--help") and not re.search(rf"`[^`]*{re.escape(option)}\b", readme):
                    missing.append(f"%{name} {option}")
    assert not missing, f"not in the README: {missing}"
