"""%vllm_serve in a real Jupyter kernel (jupyter_client): live progress, and no orphans when the
kernel goes away, killed with SIGKILL or shut down."""
import os
import signal

import pytest
from jupyter_client.manager import KernelManager

from helpers import SMOLLM2, VLLM_BIN, free_port, vllm_processes, wait_until
from vllm_magics import process

pytestmark = [pytest.mark.server, pytest.mark.kernel]


@pytest.fixture
def kernel(rig):
    km = KernelManager(kernel_name="python3")
    km.start_kernel(env=dict(os.environ))
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=60)
    yield km, kc
    kc.stop_channels()
    if km.is_alive():
        km.shutdown_kernel(now=True)


def run(kc, code, timeout=300):
    messages = []
    reply = kc.execute_interactive(code, timeout=timeout, output_hook=messages.append)
    assert reply["content"]["status"] == "ok", reply["content"]
    return messages


def serve_in_kernel(kc, port):
    run(kc, "%load_ext vllm_magics\n" f"%config VllmMagics.vllm_command = [{str(VLLM_BIN)!r}]")
    messages = run(kc, f"%vllm_serve {SMOLLM2} --port {port}")
    printed = [m["content"]["text"] for m in run(kc, "print(get_ipython()._vllm_magics.server.pgid)")
               if m["msg_type"] == "stream"]
    pgid = int("".join(printed))
    return messages, pgid


def test_progress_is_live_and_sigkill_of_the_kernel_leaves_no_vllm_process(kernel):
    km, kc = kernel
    port = free_port()
    messages, pgid = serve_in_kernel(kc, port)
    kinds = [m["msg_type"] for m in messages]
    # One display, updated in place while vLLM loads, then the ready card.
    assert kinds.count("display_data") >= 2 and kinds.count("update_display_data") >= 2
    first = next(m for m in messages if m["msg_type"] == "display_data")
    assert "Starting vLLM" in first["content"]["data"]["text/html"]
    assert first["content"]["transient"]["display_id"]
    htmls = [m["content"]["data"].get("text/html", "") for m in messages if "data" in m["content"]]
    assert any("Loading weights" in h for h in htmls)
    assert "vLLM is ready" in htmls[-1]
    assert len(process.group_members(pgid)) >= 2

    os.kill(km.provisioner.pid, signal.SIGKILL)
    assert wait_until(lambda: process.group_members(pgid) == [], 30), process.group_members(pgid)
    assert not [p for p in vllm_processes() if f"--port {port}" in p]


def test_kernel_shutdown_stops_the_server(kernel):
    km, kc = kernel
    port = free_port()
    _, pgid = serve_in_kernel(kc, port)
    km.shutdown_kernel(now=False)
    assert wait_until(lambda: process.group_members(pgid) == [], 30), process.group_members(pgid)
