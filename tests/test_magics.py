"""The magics' surface: arguments, help, %config, loading and unloading (no server needed)."""
import json
import subprocess
import sys

import pytest
from IPython.core.error import UsageError

from helpers import REPO


def test_load_ext_imports_nothing_heavy():
    code = ("import sys, json\nfrom IPython.core.interactiveshell import InteractiveShell\n"
            "ip = InteractiveShell.instance()\nbefore = set(sys.modules)\n"
            "ip.run_line_magic('load_ext', 'vllm_magics')\n"
            "print(json.dumps(sorted(set(sys.modules) - before)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    added = json.loads(out.stdout.strip().splitlines()[-1])
    heavy = {"vllm", "torch", "pyngrok", "requests", "jinja2", "ipywidgets", "transformers", "numpy",
             "prometheus_client", "pygments", "openai"}
    assert not heavy & {m.split(".")[0] for m in added}, added
    assert {"vllm_magics", "vllm_magics.notebook.magics"} <= set(added)


def test_magics_are_registered_and_configurable(shell):
    for name in ("vllm_serve", "vllm_stop", "vllm_logs"):
        assert shell.find_line_magic(name) is not None
    shell.run_line_magic("config", "VllmMagics.port = 8123")
    assert shell._vllm_magics.port == 8123
    assert "VllmMagics" in [c.__class__.__name__ for c in shell.configurables]


def test_help_lists_the_options(shell):
    # What `%vllm_serve?` shows: IPython's inspector asks the object for getdoc() first (the parser,
    # and so the option list, is built on first use: %load_ext stays instant).
    from IPython.core.oinspect import getdoc

    doc = getdoc(shell.find_line_magic("vllm_serve"))
    for option in ("--port", "--host", "--dtype", "--max-model-len", "--gpu-memory-utilization", "--api-key",
                   "--no-api-key", "--timeout", "--dry-run", "--detach", "--restart"):
        assert option in doc
    assert "--follow" in getdoc(shell.find_line_magic("vllm_logs"))


@pytest.mark.parametrize("line, message", [
    ("", "which model"),
    ("m --port notanumber", "invalid int value"),
    ("m --bogus", "unrecognized arguments"),
    ("m --api-key k --no-api-key", "contradict"),
    ("m --dry-run -- --port 9", "pass --port to %vllm_serve itself"),
])
def test_bad_serve_arguments_are_usage_errors(shell, line, message):
    with pytest.raises(UsageError, match=message):
        shell.run_line_magic("vllm_serve", line)


def test_bad_logs_arguments_and_no_server(shell):
    with pytest.raises(UsageError, match="no server"):
        shell.run_line_magic("vllm_logs", "")
    with pytest.raises(UsageError):
        shell.run_line_magic("vllm_logs", "-n lots")


def test_stop_without_a_server_says_so(shell, capsys):
    shell.run_line_magic("vllm_stop", "")
    assert "No vLLM server" in capsys.readouterr().out


def test_dry_run_shows_command_and_defaults_without_the_key(shell, capsys):
    shell.run_line_magic("vllm_serve", "Qwen/Qwen2.5-0.5B-Instruct --dry-run --port 8011 -- --seed 3")
    out = capsys.readouterr().out
    assert "serve Qwen/Qwen2.5-0.5B-Instruct --host 127.0.0.1 --port 8011" in out and "--seed 3" in out
    assert "VLLM_CPU_KVCACHE_SPACE=1" in out  # this machine has no GPU
    assert "Dry run" in out
    assert shell._vllm_magics.server is None


def test_usage_error_prints_one_line_without_traceback():
    code = ("from IPython.core.interactiveshell import InteractiveShell\nip = InteractiveShell.instance()\n"
            "ip.run_line_magic('load_ext', 'vllm_magics')\nip.run_cell('%vllm_serve m --port x')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    text = out.stdout + out.stderr
    assert "UsageError" in text and "invalid int value" in text
    assert "Traceback" not in text


def test_unload_removes_the_magics_and_reload_works(shell):
    shell.run_line_magic("unload_ext", "vllm_magics")
    assert shell.find_line_magic("vllm_serve") is None
    assert "VllmMagics" not in [c.__class__.__name__ for c in shell.configurables]
    shell.run_line_magic("load_ext", "vllm_magics")
    assert shell.find_line_magic("vllm_serve") is not None
