"""The ngrok agent's watchdog (vllm_magics/tunnel/watchdog.py): its decisions in-process, and the real
module run as `python -S -m vllm_magics.tunnel.watchdog` under a parent that is SIGKILLed."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

from helpers import wait_until
from vllm_magics.server.process import pid_alive
from vllm_magics.tunnel import watchdog


class World:
    """The watchdog's view of the machine: its parent (pid 1 once reparented), the agent's start time,
    the signals it sent. `ignores_term`: the agent survives SIGTERM."""

    def __init__(self, parent_alive_polls: int, agent_start="1234", ignores_term=False, agent_ends_after=None):
        self.polls = 0
        self.parent_alive_polls = parent_alive_polls
        self.agent_start, self.ignores_term, self.agent_ends_after = agent_start, ignores_term, agent_ends_after
        self.signals: list[int] = []

    def getppid(self):
        return 100 if self.polls < self.parent_alive_polls else 1

    def started(self, pid):
        if self.agent_ends_after is not None and self.polls >= self.agent_ends_after:
            return None
        return self.agent_start

    def kill(self, pid, sig):
        self.signals.append(sig)
        if sig == signal.SIGKILL or not self.ignores_term:
            self.agent_start = None

    def sleep(self, seconds):
        self.polls += 1

    def watch(self, start="1234"):
        return watchdog.watch(100, 555, start, getppid=self.getppid, started=self.started, kill=self.kill,
                              sleep=self.sleep)


def test_waits_while_the_parent_lives_and_leaves_an_agent_that_ended():
    w = World(parent_alive_polls=10**6, agent_ends_after=5)
    assert w.watch() == "agent gone" and w.signals == [] and w.polls == 5


def test_terminates_the_agent_once_the_parent_is_gone():
    w = World(parent_alive_polls=3)
    assert w.watch() == "terminated" and w.signals == [signal.SIGTERM]


def test_kills_an_agent_that_ignores_sigterm():
    w = World(parent_alive_polls=0, ignores_term=True)
    assert w.watch() == "killed" and w.signals == [signal.SIGTERM, signal.SIGKILL]


def test_never_signals_a_process_that_only_has_the_agents_old_pid():
    w = World(parent_alive_polls=0, agent_start="9999")  # another process, started later, same pid
    assert w.watch(start="1234") == "agent gone" and w.signals == []


def test_start_time_and_arguments():
    assert watchdog.proc_start_time(os.getpid()).isdigit()
    p = subprocess.Popen(["true"])
    p.wait()
    assert watchdog.proc_start_time(p.pid) is None
    assert watchdog.main(["not-a-pid"]) == 2


def _parent_script(target: str) -> str:
    """A Python process that starts `target` and a watchdog over it, prints both pids, and is SIGKILLed."""
    return textwrap.dedent(f"""
        import os, signal, subprocess, sys
        from vllm_magics.tunnel import watchdog
        target = subprocess.Popen([sys.executable, "-c", {target!r}], stdout=subprocess.PIPE, text=True,
                                  start_new_session=True)
        assert target.stdout.readline() == "ready\\n"
        w = watchdog.spawn(target.pid)
        print(target.pid, w.pid, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)


def _run(target: str) -> tuple[int, int]:
    proc = subprocess.run([sys.executable, "-c", _parent_script(target)], capture_output=True, text=True,
                          timeout=600)
    target_pid, watchdog_pid = map(int, proc.stdout.split())
    return target_pid, watchdog_pid


def test_the_real_module_stops_the_target_when_its_parent_is_killed():
    target, w = _run("import time; print('ready', flush=True); time.sleep(600)")
    assert wait_until(lambda: not pid_alive(target), 60), f"{target} outlived its parent"
    assert wait_until(lambda: not pid_alive(w), 60), "the watchdog did not end"


def test_the_real_module_kills_a_target_that_ignores_sigterm():
    target, w = _run("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                     "print('ready', flush=True); time.sleep(600)")
    assert wait_until(lambda: not pid_alive(target), 60), f"{target} outlived its parent"
    assert wait_until(lambda: not pid_alive(w), 60)
