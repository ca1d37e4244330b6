"""The process-group mechanism, with stand-ins that misbehave on purpose (the real-server tests in
test_server_real.py cover the same paths with vLLM itself)."""
import os
import signal
import subprocess
import sys
import textwrap
import time

from helpers import REPO, wait_until
from vllm_magics.server import process

STANDIN = str(REPO / "tests" / "standins" / "misbehaving.py")


def launch(tmp_path, *args, detach=False, max_log_bytes=10_000_000):
    return process.launch_supervised([sys.executable, STANDIN, *args], env=dict(os.environ),
                                     log_path=tmp_path / "server.log", state_path=tmp_path / "state.json",
                                     max_log_bytes=max_log_bytes, detach=detach)


def test_exit_code_is_recorded_and_both_streams_reach_the_log(tmp_path):
    proc = launch(tmp_path, "--exit", "3")
    assert wait_until(lambda: proc.exit_code() is not None, 10)
    assert proc.exit_code() == 3 and not proc.is_alive()
    log = (tmp_path / "server.log").read_text()
    assert "stand-in error on stderr" in log and "last spam line" in log
    assert "exited with code 3" in log
    assert proc.popen.wait(5) == 3


def test_exit_code_zero_is_still_an_exit(tmp_path):
    proc = launch(tmp_path, "--exit", "0")
    assert wait_until(lambda: proc.exit_code() == 0, 10)
    assert not proc.is_alive()


def test_log_stays_bounded(tmp_path):
    proc = launch(tmp_path, "--spam", "3000000", "--exit", "0", max_log_bytes=500_000)
    assert wait_until(lambda: proc.exit_code() is not None, 20)
    current, rotated = tmp_path / "server.log", tmp_path / "server.log.1"
    assert rotated.exists()
    assert current.stat().st_size <= 500_000 + 65_536 and rotated.stat().st_size <= 500_000 + 65_536
    assert "last spam line" in process.tail_lines(current, 5)


def test_graceful_stop_leaves_no_process(tmp_path):
    proc = launch(tmp_path)
    assert wait_until(lambda: proc.pid and "up" in (tmp_path / "server.log").read_text(), 10)
    assert len(proc.members()) == 2  # supervisor + command
    assert proc.terminate(grace=5) == process.StopStep.TERMINATED
    assert proc.members() == []
    assert proc.exit_code() == -signal.SIGTERM


def test_a_child_that_ignores_sigterm_is_killed_with_the_group(tmp_path):
    proc = launch(tmp_path, "--tracker")
    assert wait_until(lambda: "tracker up" in (tmp_path / "server.log").read_text(), 10)
    assert len(proc.members()) == 3
    t0 = time.monotonic()
    assert proc.terminate(grace=60) == process.StopStep.KILLED
    assert proc.members() == []
    # The leader exits on SIGTERM, so the leftover tracker is killed soon after, not after the full grace.
    assert time.monotonic() - t0 < 60


def test_a_leader_that_ignores_sigterm_is_killed_after_the_grace(tmp_path):
    proc = launch(tmp_path, "--ignore-term")
    assert wait_until(lambda: "up" in (tmp_path / "server.log").read_text(), 10)
    t0 = time.monotonic()
    assert proc.terminate(grace=1.0) == process.StopStep.KILLED
    assert time.monotonic() - t0 >= 1.0
    assert proc.members() == []


def test_command_not_found_is_reported(tmp_path):
    proc = process.launch_supervised(["/nonexistent/vllm", "serve"], env=dict(os.environ),
                                     log_path=tmp_path / "l", state_path=tmp_path / "s", max_log_bytes=0)
    assert wait_until(lambda: proc.exit_code() is not None, 10)
    assert proc.exit_code() == 127
    assert "could not start /nonexistent/vllm" in (tmp_path / "l").read_text()


PARENT = textwrap.dedent("""
    import os, sys, time
    sys.path.insert(0, {repo!r})
    from vllm_magics.server import process
    p = process.launch_supervised([sys.executable, {standin!r}, "--tracker"], env=dict(os.environ),
        log_path={log!r}, state_path={state!r}, max_log_bytes=0, detach={detach})
    print(p.pgid, flush=True)
    time.sleep(3600)
""")


def _parent_then_sigkill(tmp_path, detach):
    code = PARENT.format(repo=str(REPO), standin=STANDIN, log=str(tmp_path / "log"),
                         state=str(tmp_path / "state"), detach=detach)
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    pgid = int(parent.stdout.readline())
    assert wait_until(lambda: "tracker up" in (tmp_path / "log").read_text(), 10)
    assert len(process.group_members(pgid)) == 3
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    return pgid


def test_the_group_dies_with_the_process_that_started_it_even_on_sigkill(tmp_path):
    pgid = _parent_then_sigkill(tmp_path, detach=False)
    assert wait_until(lambda: process.group_members(pgid) == [], 20), process.group_members(pgid)
    assert "is gone: stopping the server" in (tmp_path / "log").read_text()


def test_a_detached_group_outlives_its_parent(tmp_path):
    pgid = _parent_then_sigkill(tmp_path, detach=True)
    time.sleep(1.0)
    try:
        assert len(process.group_members(pgid)) == 3
    finally:
        process.terminate_group(pgid, grace=1)
    assert process.group_members(pgid) == []


def test_terminate_group_of_nothing():
    assert process.terminate_group(2**22 + 12345) == process.StopStep.ALREADY_GONE
