"""%vllm_serve in a real Jupyter kernel (jupyter_client): live progress, adoption after %unload_ext, and
no orphans when the kernel shuts down (killed with SIGKILL: test_named_servers_real.py)."""
import subprocess

import pytest

from helpers import SMOLLM2, VLLM_BIN, free_port, vllm_processes, wait_until
from vllm_magics.server import process

pytestmark = [pytest.mark.server, pytest.mark.kernel]


def run(kc, code, timeout=300, ok=True):
    messages = []
    reply = kc.execute_interactive(code, timeout=timeout, output_hook=messages.append)
    if ok:
        assert reply["content"]["status"] == "ok", reply["content"]
    return messages if ok else (reply, messages)


def printed(messages) -> str:
    return "".join(m["content"]["text"] for m in messages if m["msg_type"] == "stream")


def serve_in_kernel(kc, port):
    run(kc, "%load_ext vllm_magics\n" f"%config VllmMagics.vllm_command = [{str(VLLM_BIN)!r}]")
    messages = run(kc, f"%vllm_serve {SMOLLM2} --port {port}")
    pgid = int(printed(run(kc, "print(get_ipython()._vllm_magics.server.pgid)")))
    return messages, pgid


def supervisors_started_by(pid: int) -> list[int]:
    """The process groups (supervisors) a kernel started: its children running our supervisor."""
    out = subprocess.run(["ps", "-ww", "-eo", "pid,ppid,args"], capture_output=True, text=True).stdout
    return [int(ln.split()[0]) for ln in out.splitlines()[1:]
            if int(ln.split()[1]) == pid and "vllm_magics.server.supervisor" in ln]


def test_progress_is_live_reloading_adopts_the_server_and_shutdown_stops_it(kernel):
    """Live progress; then issue 10's bug: after %unload_ext, %vllm_serve of the same model started a second
    server on the next port, because a server started without --detach was taken for another notebook's.
    One server for both (a start costs 20-60 s here); SIGKILL of a kernel: test_named_servers_real.py."""
    km, kc = kernel
    port = free_port()
    messages, pgid = serve_in_kernel(kc, port)
    kinds = [m["msg_type"] for m in messages]
    # One display, updated in place while vLLM loads, then turned into the ready card.
    assert kinds.count("display_data") == 1 and kinds.count("update_display_data") >= 2
    first = next(m for m in messages if m["msg_type"] == "display_data")
    assert "Starting vLLM" in first["content"]["data"]["text/html"]
    assert first["content"]["transient"]["display_id"]
    htmls = [m["content"]["data"].get("text/html", "") for m in messages if "data" in m["content"]]
    assert any("Loading weights" in h for h in htmls)
    assert "vLLM is ready" in htmls[-1]
    assert len(process.group_members(pgid)) >= 2

    pid = int(printed(run(kc, "print(get_ipython()._vllm_magics.server.pid)")))
    out = printed(run(kc, "%unload_ext vllm_magics"))
    assert "is still running" in out and f"%vllm_serve {SMOLLM2} adopt it again" in out
    run(kc, "%load_ext vllm_magics\n" f"%config VllmMagics.vllm_command = [{str(VLLM_BIN)!r}]")
    messages = run(kc, f"%vllm_serve {SMOLLM2} --port {port}")
    shown = "".join(m["content"]["data"].get("text/plain", "") for m in messages if "data" in m["content"])
    assert "Adopted" in shown and "this kernel started it" in shown
    after = printed(run(kc, "s = get_ipython()._vllm_magics.server\nprint(s.pid, s.pgid, s.plan.port)")).split()
    assert after == [str(pid), str(pgid), str(port)]
    assert supervisors_started_by(km.provisioner.pid) == [pgid]  # one server, not a second on the next port

    km.shutdown_kernel(now=False)
    assert wait_until(lambda: process.group_members(pgid) == [], 60), process.group_members(pgid)
    assert not [p for p in vllm_processes() if f"--port {port}" in p]


def generated_tokens(base_url) -> float:
    from vllm_magics.status.probes import get_text
    from vllm_magics.status.metrics import parse_metrics

    return parse_metrics(get_text(base_url, "/metrics")[1]).counters.get("generation_tokens_total", 0)


def running_requests(base_url) -> float:
    import re
    import urllib.request

    with urllib.request.urlopen(f"{base_url}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return sum(float(v) for v in re.findall(r"^vllm:num_requests_running\{[^}]*\} (\S+)$", text, re.M))


def test_ask_streams_in_place_and_an_interrupt_aborts_the_request(kernel, smollm2_server):
    km, kc = kernel
    url = smollm2_server.base_url
    run(kc, "%load_ext vllm_magics\nimport os\n"
            f"os.environ['VLLM_MAGICS_TEST_KEY'] = {smollm2_server.api_key!r}")
    opts = f"--url {url}/v1 --api-key-env VLLM_MAGICS_TEST_KEY"

    # 200 tokens whatever the model would say (vLLM's ignore_eos): a short answer from a quick server can end
    # between two live updates (15 a second), and then only the final draw shows.
    run(kc, "long = {'ignore_eos': True}")
    messages = run(kc, f"%%ask {opts} --temperature 0 --max-tokens 200 --params long\n"
                       "Name three rivers in Europe, one per line.")
    kinds = [m["msg_type"] for m in messages if m["msg_type"] != "status"]
    assert kinds.count("display_data") == 1 and kinds.count("update_display_data") >= 2
    assert "stream" not in kinds  # nothing printed besides the one live output area
    final = [m for m in messages if m["msg_type"] in ("display_data", "update_display_data")][-1]["content"]["data"]
    assert {"text/html", "text/markdown", "text/plain"} <= set(final)
    assert "class=\"vm-cursor\"" not in final["text/html"] and "finish:" in final["text/plain"]

    # Interrupt mid-answer (the stop button sends SIGINT to the kernel).
    import threading

    def interrupt_once_it_has_written_a_bit():
        # The stop button, pressed once the answer is under way (on progress, not on a clock).
        start = generated_tokens(url)
        wait_until(lambda: generated_tokens(url) >= start + 30, 60, interval=0.05)
        km.interrupt_kernel()

    threading.Thread(target=interrupt_once_it_has_written_a_bit, daemon=True).start()
    # No hang: run()'s own limit (execute_interactive's timeout) and the pytest timeout end one; no clock here.
    reply, messages = run(kc, f"%%ask {opts} --temperature 0.7 --max-tokens 1500\nWrite a very long story about a "
                              "dragon who learns to cook.", ok=False)
    assert reply["content"]["status"] == "error" and reply["content"]["ename"] == "UsageError"
    assert "partial answer stays above" in reply["content"]["evalue"]
    final = [m for m in messages if m["msg_type"] in ("display_data", "update_display_data")][-1]["content"]["data"]
    assert "Interrupted" in final["text/plain"] and len(final["text/plain"]) > 80
    assert wait_until(lambda: running_requests(url) == 0, 60)
    assert printed(run(kc, "print(_ask.interrupted, len(_ask.text) > 20)")).split() == ["True", "True"]


def test_status_watch_uses_a_widget_or_display_updates(kernel, smollm2_server):
    km, kc = kernel
    run(kc, "%load_ext vllm_magics\nimport os\n"
            f"os.environ['VLLM_MAGICS_TEST_KEY'] = {smollm2_server.api_key!r}")
    opts = f"--url {smollm2_server.base_url} --api-key-env VLLM_MAGICS_TEST_KEY --watch 0.2 --count 4"
    messages = run(kc, f"%vllm_status {opts}")
    kinds = [m["msg_type"] for m in messages if m["msg_type"] != "status"]
    # A widget: one view, then its value changes through comm messages (no new outputs).
    assert kinds.count("display_data") == 1 and "comm_open" in kinds
    updates = [m for m in messages if m["msg_type"] == "comm_msg"
               and "vLLM server: ready" in str(m["content"]["data"].get("state", {}).get("value", ""))]
    assert len(updates) >= 3
    assert "<svg" in updates[-1]["content"]["data"]["state"]["value"]  # the plots, from the 2nd sample on

    messages = run(kc, f"%vllm_status {opts} --no-widgets")
    kinds = [m["msg_type"] for m in messages if m["msg_type"] != "status"]
    assert kinds.count("display_data") == 1 and kinds.count("update_display_data") == 3
