"""%vllm_serve when the server is not ready in time: it is left running, and the message's own advice
(%vllm_logs, %vllm_stop) must reach it. When it fails to start, the kernel manages what it did before.
A stand-in for `vllm` (a script that prints and never answers HTTP, or exits at once) plays the server:
a real one takes 25-60 s to start here."""
from __future__ import annotations

import sys

import pytest
from IPython.core.error import UsageError

from helpers import free_port, wait_until


def _fake_vllm(tmp_path, body: str) -> str:
    path = tmp_path / "vllm"
    path.write_text(f"#!{sys.executable}\nimport sys, time\nprint('fake vllm', sys.argv[1:3], flush=True)\n{body}\n")
    path.chmod(0o755)
    return str(path)


def test_a_server_not_ready_in_time_stays_managed(shell, tmp_path, capsys):
    fake = _fake_vllm(tmp_path, "time.sleep(3600)  # never listens")
    shell.run_line_magic("config", f"VllmMagics.vllm_command = [{fake!r}]")
    with pytest.raises(UsageError) as caught:
        shell.run_line_magic("vllm_serve", f"some/model --port {free_port()} --timeout 1 --no-api-key")
    assert "%vllm_logs shows what it is doing, %vllm_stop stops it" in str(caught.value)
    server = shell._vllm_magics.server
    assert server is not None and server.is_alive()
    capsys.readouterr()
    # The stand-in prints its line once Python has started it: on a loaded machine that can be after the 1 s.
    assert wait_until(lambda: "fake vllm" in server.log_path.read_text(), 60)
    shell.run_line_magic("vllm_logs", "")
    assert "fake vllm" in capsys.readouterr().out  # the advice works: its log
    shell.run_line_magic("vllm_stop", "")
    out = capsys.readouterr().out
    assert out.startswith(f"Stopped the vLLM server (pid {server.pid})") and not server.is_alive()


def test_a_server_that_fails_to_start_leaves_the_previous_one_managed(shell, tmp_path):
    from vllm_magics.server.manager import VllmServer
    from vllm_magics.server.plan import plan_serve

    fake = _fake_vllm(tmp_path, "print('boom', flush=True)\nsys.exit(3)")
    shell.run_line_magic("config", f"VllmMagics.vllm_command = [{fake!r}]")
    # An earlier server of this kernel that has exited: %vllm_logs still shows its log.
    earlier = VllmServer(plan_serve("earlier/model", port=free_port(), gpus=[], vllm_command=[fake]), tmp_path)
    shell._vllm_magics.server = earlier
    with pytest.raises(UsageError) as caught:
        shell.run_line_magic("vllm_serve", f"some/model --port {free_port()} --timeout 60 --no-api-key")
    assert "exit" in str(caught.value).lower(), caught.value
    assert shell._vllm_magics.server is earlier  # the failed one is stopped and forgotten


def test_ctrl_c_while_starting_stops_it_and_leaves_the_previous_one_managed(shell, tmp_path):
    import os
    import signal
    import threading

    from helpers import wait_until

    from vllm_magics.server.manager import VllmServer
    from vllm_magics.server.plan import plan_serve

    fake = _fake_vllm(tmp_path, "time.sleep(3600)  # never listens")
    shell.run_line_magic("config", f"VllmMagics.vllm_command = [{fake!r}]")
    earlier = VllmServer(plan_serve("earlier/model", port=free_port(), gpus=[], vllm_command=[fake]), tmp_path)
    shell._vllm_magics.server = earlier  # an earlier server of this kernel, exited
    started = []

    def ctrl_c_once_it_runs():
        # On progress, not on a clock: the magic has made its server and that server has written its log.
        def running():
            s = shell._vllm_magics.server
            return s is not earlier and s is not None and "fake vllm" in _read(s.log_path) and s
        server = wait_until(running, 120)
        started.append(server)
        if server:
            os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=ctrl_c_once_it_runs, daemon=True).start()
    with pytest.raises(UsageError, match="interrupted: the server was stopped before it was ready"):
        shell.run_line_magic("vllm_serve", f"some/model --port {free_port()} --timeout 600 --no-api-key")
    assert started and started[0] and not started[0].is_alive()
    assert shell._vllm_magics.server is earlier


def _read(path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""
