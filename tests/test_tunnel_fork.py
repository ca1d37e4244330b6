"""A forked child that exits normally leaves its parent's ngrok agent running. atexit handlers carry over
os.fork (https://docs.python.org/3/library/os.html#os.fork): both TunnelManager.stop and pyngrok's own
`_terminate_process` (pyngrok/process.py registers it for each agent it starts) would otherwise end the
parent's agent when the child exits (multiprocessing's "fork" start method, a DataLoader worker...).

In the plain case Popen hides it: the child's `proc.poll()` gets ECHILD (the agent is not its child) and
reads that as "exited", so terminate() sends nothing. But a parent thread inside `proc.wait()` holds the
Popen's `_waitpid_lock` (CPython's subprocess.py) at the fork, and the child's copy stays held: its poll()
then says "running" and terminate() sends SIGTERM to the parent's agent. The test forks in that state.

The parent and child are a fresh Python process (a script), so the child's exit runs real atexit handlers
and none of pytest's; pyngrok's real code drives the stand-in agent."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from helpers import free_port
from tunnel_standin import TOKEN, install_standin

SCRIPT = textwrap.dedent("""
    import json, os, sys, threading, time
    from vllm_magics.server.process import pid_alive
    from vllm_magics.tunnel.manager import TunnelManager

    ngrok_path, config_path, web_addr, token = sys.argv[1:5]
    m = TunnelManager(ngrok_path=ngrok_path, config_path=config_path, web_addr=web_addr, startup_timeout=120.0)
    m.start(authtoken=token, token_source="test")
    agent_pid = m.agent_pid
    proc = m.agent._process.proc  # the Popen pyngrok started (tunnel/agent.py keeps pyngrok's NgrokProcess)
    threading.Thread(target=proc.wait, daemon=True).start()  # holds proc._waitpid_lock until the agent ends
    while not proc._waitpid_lock.locked():
        time.sleep(0.01)
    child = os.fork()
    if child == 0:
        sys.exit(0)  # a normal exit: the atexit handlers run
    _, status = os.waitpid(child, 0)
    print(json.dumps({"child_exit": os.waitstatus_to_exitcode(status), "agent_pid": agent_pid,
                      "running": m.is_running(), "alive": pid_alive(agent_pid)}), flush=True)
    m.stop()
    print(json.dumps({"alive_after_stop": pid_alive(agent_pid)}), flush=True)
""")


def test_a_forked_child_that_exits_leaves_the_parents_agent_running(tmp_path):
    ngrok = install_standin(tmp_path / "bin")
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith(("NGROK_", "PYNGROK_"))}
    env["FAKE_NGROK_RECORD"] = str(tmp_path / "record")
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(ngrok), str(tmp_path / "conf" / "agent.yml"),
                           f"127.0.0.1:{free_port()}", TOKEN], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    after_fork, after_stop = map(json.loads, done.stdout.splitlines())
    assert after_fork["child_exit"] == 0 and after_fork["agent_pid"]
    assert after_fork["running"] and after_fork["alive"], after_fork  # the child's exit left it be
    assert after_stop == {"alive_after_stop": False}  # and the parent still stops its own agent
