"""The process-group mechanism and the manager's trust of local state, with stand-ins that misbehave
on purpose (the real-server tests in test_server_real.py cover the same paths with vLLM itself)."""
import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

from helpers import REPO, wait_until
from vllm_magics.server import process
from vllm_magics.server.logfile import tail_lines

STANDIN = str(REPO / "tests" / "standins" / "misbehaving.py")


def launch(tmp_path, *args, detach=False, max_log_bytes=10_000_000):
    return process.launch_supervised([sys.executable, STANDIN, *args], env=dict(os.environ),
                                     log_path=tmp_path / "server.log", state_path=tmp_path / "state.json",
                                     max_log_bytes=max_log_bytes, detach=detach)


def test_exit_code_is_recorded_and_both_streams_reach_the_log(tmp_path):
    proc = launch(tmp_path, "--exit", "3")
    assert wait_until(lambda: proc.exit_code() is not None, 60)
    assert proc.exit_code() == 3 and not proc.is_alive()
    log = (tmp_path / "server.log").read_text()
    assert "stand-in error on stderr" in log and "last spam line" in log
    assert "exited with code 3" in log
    assert proc.popen.wait(5) == 3


def test_exit_code_zero_is_still_an_exit(tmp_path):
    proc = launch(tmp_path, "--exit", "0")
    assert wait_until(lambda: proc.exit_code() == 0, 60)
    assert not proc.is_alive()


def test_log_stays_bounded(tmp_path):
    proc = launch(tmp_path, "--spam", "3000000", "--exit", "0", max_log_bytes=500_000)
    assert wait_until(lambda: proc.exit_code() is not None, 60)
    current, rotated = tmp_path / "server.log", tmp_path / "server.log.1"
    assert rotated.exists()
    assert current.stat().st_size <= 500_000 + 65_536 and rotated.stat().st_size <= 500_000 + 65_536
    assert "last spam line" in tail_lines(current, 5)


def test_graceful_stop_leaves_no_process(tmp_path):
    proc = launch(tmp_path)
    assert wait_until(lambda: proc.pid and "up" in (tmp_path / "server.log").read_text(), 60)
    assert len(proc.members()) == 2  # supervisor + command
    assert proc.terminate(grace=5) == process.StopStep.TERMINATED
    assert proc.members() == []
    assert proc.exit_code() == -signal.SIGTERM


def test_a_child_that_ignores_sigterm_is_killed_with_the_group(tmp_path):
    proc = launch(tmp_path, "--tracker")
    assert wait_until(lambda: "tracker up" in (tmp_path / "server.log").read_text(), 60)
    assert len(proc.members()) == 3
    assert proc.terminate(grace=60) == process.StopStep.KILLED
    assert proc.members() == []
    # The path taken, not its duration: the leader exited on SIGTERM, and a second later what was left
    # (the tracker, and the supervisor waiting on it) got SIGKILL, long before the 60 s grace. Had the
    # grace run out instead, the supervisor's own cleanup (SIGKILL to the tracker 3 s after the command
    # exited) would have emptied the group first: the step would be TERMINATED and the supervisor would
    # have exited by itself (128 + SIGTERM), not by our SIGKILL.
    assert proc.exit_code() == -signal.SIGTERM
    assert proc.popen.returncode == -signal.SIGKILL


def test_a_leader_that_ignores_sigterm_is_killed_after_the_grace(tmp_path):
    proc = launch(tmp_path, "--ignore-term")
    assert wait_until(lambda: "up" in (tmp_path / "server.log").read_text(), 60)
    t0 = time.monotonic()
    assert proc.terminate(grace=1.0) == process.StopStep.KILLED
    assert time.monotonic() - t0 >= 1.0
    assert proc.members() == []


def test_command_not_found_is_reported(tmp_path):
    proc = process.launch_supervised(["/nonexistent/vllm", "serve"], env=dict(os.environ),
                                     log_path=tmp_path / "l", state_path=tmp_path / "s", max_log_bytes=0)
    assert wait_until(lambda: proc.exit_code() is not None, 60)
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
    assert wait_until(lambda: "tracker up" in (tmp_path / "log").read_text(), 60)
    assert len(process.group_members(pgid)) == 3
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    return pgid


def test_the_group_dies_with_the_process_that_started_it_even_on_sigkill(tmp_path):
    pgid = _parent_then_sigkill(tmp_path, detach=False)
    assert wait_until(lambda: process.group_members(pgid) == [], 60), process.group_members(pgid)
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


def test_a_full_disk_does_not_stop_the_supervisor(tmp_path):
    """A write error on the log (here RLIMIT_FSIZE, as ENOSPC on a full disk) killed the supervisor: the
    server ran on unsupervised and its exit code was lost (issue 11). Now the output is dropped, the
    state file says so once, the group keeps its supervisor and the exit code is recorded."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, hard))  # inherited by the supervisor at its fork
    try:
        proc = launch(tmp_path, "--spam", "1000000")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert wait_until(lambda: proc.state().get("log_write_error"), 60), proc.state()
    assert "File too large" in proc.state()["log_write_error"]
    assert (tmp_path / "server.log").stat().st_size <= 50_000
    # The stand-in wrote all of it (the pipe was drained) and runs on, supervised.
    assert wait_until(lambda: proc.popen.poll() is None and proc.is_alive() and len(proc.members()) == 2, 60)
    assert proc.supervisor_is_ours()
    assert proc.terminate(grace=5) == process.StopStep.TERMINATED
    assert proc.exit_code() == -signal.SIGTERM and proc.members() == []
    assert proc.state()["log_dropped_bytes"] > 0


def test_the_command_dies_with_a_sigkilled_supervisor(tmp_path):
    proc = launch(tmp_path, detach=True)  # no watch of this process: only the supervisor's death matters
    assert wait_until(lambda: proc.pid and "up" in (tmp_path / "server.log").read_text(), 60)
    pid, pgid = proc.pid, proc.pgid
    os.kill(proc.supervisor_pid, signal.SIGKILL)
    proc.popen.wait(5)
    assert wait_until(lambda: process.group_members(pgid) == [], 60), process.group_members(pgid)
    assert not process.pid_alive(pid)


def test_a_stale_state_is_not_ours_and_its_group_is_never_signalled(tmp_path):
    """State left by a supervisor that is gone, its pids now someone else's (issue 11: %vllm_stop SIGTERMed
    an unrelated process group). Here a live unrelated group stands in for the reused pids."""
    unrelated = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        state = tmp_path / "state.json"
        state.write_text(json.dumps({"pid": unrelated.pid, "pid_start": 1, "exit_code": None}))
        stale = process.SupervisedProcess(None, unrelated.pid, state, tmp_path / "server.log",
                                          supervisor_start=process.start_ticks(unrelated.pid))
        assert not stale.supervisor_is_ours()  # its start time matches, its command line does not
        assert not stale.command_is_ours()  # the recorded start time does not match
        assert not stale.is_alive() and stale.exit_code() == -1 and stale.members() == []
        assert stale.terminate(grace=1) == process.StopStep.ALREADY_GONE
        assert unrelated.poll() is None  # not signalled
        # The same state with the true start time: the command is taken for ours (pid, group, start time).
        state.write_text(json.dumps({"pid": unrelated.pid, "pid_start": process.start_ticks(unrelated.pid)}))
        assert stale.command_is_ours()
    finally:
        unrelated.kill()
        unrelated.wait()


# ----------------------------------------------------------- the manager: squatters and stale state

# Answers 200 on every path, as vLLM's /health would: what a process that took the port could do.
SQUATTER = textwrap.dedent("""
    import http.server, sys
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200); self.end_headers()
        def log_message(self, *a):
            pass
    http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
""")


def squat(port):
    from vllm_magics.server.ports import port_holders

    squatter = subprocess.Popen([sys.executable, "-c", SQUATTER, str(port)], start_new_session=True)
    assert wait_until(lambda: port_holders(port), 60)
    return squatter


def standin_server(tmp_path, port, detach=False, args=()):
    """A VllmServer whose "vLLM" is the stand-in: it never binds the port, so whoever answers there is not it."""
    from vllm_magics.server.manager import VllmServer
    from vllm_magics.server.plan import ServePlan

    plan = ServePlan("stand-in/model", "127.0.0.1", port, [sys.executable, STANDIN, *args], {}, "vm-test-key-123456")
    return VllmServer(plan, tmp_path / "home", detach=detach, shutdown_wait=5)


def test_a_command_that_fails_at_once_is_reported_with_its_exit_code(tmp_path):
    """Right after the supervisor's exec its /proc cmdline still reads empty: identity checks on a process
    we launched ourselves use our handle on it, or this start was taken for a failure "with code None"."""
    import pytest

    from vllm_magics.errors import ServerStartError
    from helpers import free_port

    server = standin_server(tmp_path, free_port(), args=("--exit", "2", "--after", "0"))
    server.start()
    assert server.is_alive() or server.exit_code() == 2
    with pytest.raises(ServerStartError, match="vLLM exited with code 2 before it was ready") as err:
        server.wait_ready(timeout=30)
    assert err.value.exit_code == 2 and "stand-in error on stderr" in err.value.log_tail


def test_readiness_refuses_a_health_200_from_a_squatter(tmp_path):
    """vLLM takes seconds of imports before it binds: another process took the port meanwhile and
    wait_ready said ready in 0.02 s (issue 11). Now it fails, naming that process."""
    import pytest

    from vllm_magics.errors import ServerStartError
    from helpers import free_port

    port = free_port()
    server = standin_server(tmp_path, port)
    server.start()
    squatter = squat(port)
    try:
        with pytest.raises(ServerStartError, match=rf"port {port} was taken by pid {squatter.pid} .*python"):
            server.wait_ready(timeout=30)
        assert server.ready_at is None
    finally:
        squatter.kill()
        server.stop()
    assert process.group_members(server.pgid) == []


def test_stale_state_is_not_adopted_and_never_signalled(tmp_path):
    """server.json of a hard-killed detached server, its supervisor's pid now someone else's and another
    process on the port: it was "Adopted", the key and prompts went to that listener, and %vllm_stop
    SIGTERMed an unrelated process group (issue 11)."""
    from helpers import free_port
    from vllm_magics.server.manager import VllmServer

    port = free_port()
    server = standin_server(tmp_path, port, detach=True)
    server.start()
    assert wait_until(lambda: server.pid and server.is_alive(), 60)
    found = VllmServer.find(tmp_path / "home", port)
    assert found is not None and found.pid == server.pid and found.api_key == server.api_key
    # Hard-killed: the whole group at once, nothing cleaned up.
    os.killpg(server.pgid, signal.SIGKILL)
    server.proc.popen.wait(5)
    assert VllmServer.find(tmp_path / "home", port) is None
    # Its pids reused: an unrelated group led by a process whose pid the state files now name.
    unrelated = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    squatter = squat(port)
    try:
        manifest = json.loads((server.dir / "server.json").read_text())
        manifest["supervisor_pid"] = unrelated.pid
        (server.dir / "server.json").write_text(json.dumps(manifest))
        state = json.loads((server.dir / "state.json").read_text())
        state["pid"] = squatter.pid
        (server.dir / "state.json").write_text(json.dumps(state))
        assert VllmServer.find(tmp_path / "home", port) is None
        # Even with the supervisor's true start time, its command line is not our supervisor's.
        manifest["supervisor_start"] = process.start_ticks(unrelated.pid)
        (server.dir / "server.json").write_text(json.dumps(manifest))
        assert VllmServer.find(tmp_path / "home", port) is None
        # A server object that still points there (as %vllm_stop would use) signals nothing.
        server.proc = process.SupervisedProcess(None, unrelated.pid, server.proc.state_path, server.log_path,
                                                manifest["supervisor_start"])
        assert server.stop() == process.StopStep.ALREADY_GONE
        assert unrelated.poll() is None and squatter.poll() is None
    finally:
        unrelated.kill()
        squatter.kill()


def test_a_squatter_on_the_port_of_a_live_server_of_ours_stops_adoption(tmp_path):
    from helpers import free_port
    from vllm_magics.server.manager import VllmServer

    port = free_port()
    server = standin_server(tmp_path, port, detach=True)
    server.start()
    try:
        assert wait_until(lambda: server.pid and server.is_alive(), 60)
        assert VllmServer.find(tmp_path / "home", port).owner() == "this process"
        squatter = squat(port)
        try:
            assert VllmServer.find(tmp_path / "home", port) is None
        finally:
            squatter.kill()
    finally:
        server.stop()


FORK = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, {tests!r})
    from IPython.core.interactiveshell import InteractiveShell
    from helpers import wait_until
    from test_process import standin_server
    import pathlib
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "vllm_magics")
    server = standin_server(pathlib.Path({tmp!r}), {port})
    server.start()
    assert wait_until(lambda: server.pid and server.is_alive(), 60)
    ip._vllm_magics.server = server
    child = os.fork()
    if child == 0:
        sys.exit(0)  # a normal exit: the atexit handlers inherited from the parent run here
    os.waitpid(child, 0)
    print("alive after the child exited:", server.is_alive(), flush=True)
    # This process's own exit stops it (its at-exit handler).
""")


def test_a_forked_child_that_exits_does_not_stop_the_parents_server(tmp_path):
    """atexit carries over fork: a child that exited normally stopped its parent's server (issue 11)."""
    from helpers import free_port

    code = FORK.format(tests=str(REPO / "tests"), tmp=str(tmp_path), port=free_port())
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "alive after the child exited: True" in out.stdout, out.stdout + out.stderr
    state = json.loads((tmp_path / "home" / "servers").glob("*/state.json").__next__().read_text())
    assert state["exit_code"] == -signal.SIGTERM  # the parent's own exit did stop it
    assert process.group_members(state["pgid"]) == []


# ------------------------------------------------------------------------------------- private_dir

def test_private_dir_makes_the_missing_folders_0700(tmp_path):
    from vllm_magics.files import private_dir

    target = tmp_path / "a" / "b" / "c"
    old_umask = os.umask(0o077)
    try:
        assert private_dir(target) == target
    finally:
        os.umask(old_umask)
    for folder in (tmp_path / "a", tmp_path / "a" / "b", target):
        assert folder.stat().st_mode & 0o777 == 0o700
    assert private_dir(target) == target  # again: it exists and is ours


def test_private_dir_leaves_an_existing_folder_as_it_is(tmp_path):
    """A shared temp folder given as the parent of ngrok_config_path was chmodded to 0700 (issue 11)."""
    from vllm_magics.files import private_dir

    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    private_dir(shared)
    private_dir(shared / "mine")
    assert shared.stat().st_mode & 0o7777 == 0o1777
    assert (shared / "mine").stat().st_mode & 0o777 == 0o700


def test_private_dir_refuses_a_symlink_and_a_folder_of_another_user(tmp_path):
    import pytest

    from vllm_magics.files import private_dir

    real = tmp_path / "real"
    real.mkdir(mode=0o755)
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(PermissionError, match="symbolic link"):
        private_dir(link)
    assert real.stat().st_mode & 0o777 == 0o755
    (tmp_path / "file").write_text("x")
    with pytest.raises(PermissionError, match="not a folder"):
        private_dir(tmp_path / "file")
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o755)
    if os.getuid() == 0:
        os.chown(theirs, 65534, 65534)
    else:  # not root: a folder owned by root stands in for another user's
        theirs = pathlib.Path("/")
    with pytest.raises(PermissionError, match="belongs to another user"):
        private_dir(theirs)
    assert theirs.stat().st_mode & 0o777 == 0o755
