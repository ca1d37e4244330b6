"""Several servers in one session (issue 13) without starting vLLM: the registry of named servers, names
checked, `--model NAME` resolved to its server, the GPU share of a named server (a stand-in nvidia-smi
printing the T4 figures), `--lora` on the card, and `%%ask --compare` against the stand-in chat server.
The real servers are in test_named_servers_real.py."""
from __future__ import annotations

import dataclasses
import os
import types

import pytest
from IPython.core.error import UsageError

from helpers import ADAPTER, FIXTURES, SMOLLM2, TINY_R1
from standins.chat_server import SseStandIn, serving
from vllm_magics.notebook.ask_compare import parse_compare
from vllm_magics.server.gpu import parse_query_csv
from vllm_magics.server.manager import VllmServer
from vllm_magics.server.plan import plan_serve

T4 = parse_query_csv((FIXTURES / "nvidia-smi" / "t4-15gb" / "query-csv.txt").read_text())[0]


def unstarted(model, port, tmp_path, **kw) -> VllmServer:
    """A real VllmServer that was never started (is_alive() is False): enough for the registry."""
    return VllmServer(plan_serve(str(model), port=port, gpus=[], vllm_command=["vllm"], environ={},
                                 vllm_version="0.32.0", **kw), tmp_path)


@pytest.fixture
def two(shell, tmp_path):
    magics = shell._vllm_magics
    magics._put("base", unstarted(SMOLLM2, 8000, tmp_path, lora=["pineapple=someone/pineapple-adapter"]))
    magics._put("r1", unstarted(TINY_R1, 8001, tmp_path, extra_args=["--served-model-name", "tiny"]))
    yield magics
    magics.servers.clear()


def test_the_first_server_is_the_default_and_server_still_means_it(shell, tmp_path):
    magics = shell._vllm_magics
    assert magics.server is None and magics.servers == {}
    first, second = unstarted(SMOLLM2, 8000, tmp_path), unstarted(TINY_R1, 8001, tmp_path)
    magics.server = first  # what single-server code (and older tests) do
    assert magics.servers == {"default": first}
    magics._put("r1", second)
    assert magics.server is first and list(magics.servers) == ["default", "r1"]
    magics._put("r1", first, 0)  # a name keeps one server; `index` puts it first
    assert list(magics.servers) == ["r1", "default"] and magics.server is first
    magics.server = None
    assert list(magics.servers) == ["default"]
    magics.servers.clear()


def test_names_are_checked_and_an_unknown_name_lists_the_known_ones(shell, two):
    with pytest.raises(UsageError, match="simple identifier"):
        shell.run_line_magic("vllm_serve", f"{SMOLLM2} --name 'two words' --dry-run")
    with pytest.raises(UsageError, match="simple identifier"):
        shell.run_line_magic("vllm_serve", f"{SMOLLM2} --name a,b --dry-run")
    with pytest.raises(UsageError, match="simple identifier"):
        shell.run_line_magic("vllm_serve", f"{SMOLLM2} --name '' --dry-run")
    for magic, line in (("vllm_stop", "nope"), ("vllm_logs", "nope"), ("vllm_status", "nope"),
                        ("ngrok_up", "--server nope")):
        with pytest.raises(UsageError) as caught:
            shell.run_line_magic(magic, line)
        assert "no server named 'nope'; this kernel's servers: base, r1" in str(caught.value), magic
    with pytest.raises(UsageError, match="name or --all, not both"):
        shell.run_line_magic("vllm_stop", "base --all")


def test_model_names_resolve_to_their_server(shell, two, tmp_path):
    base, r1 = two.servers["base"], two.servers["r1"]
    assert two._resolve_model("r1") == (r1, "tiny")  # a server's name: its served model name is sent
    assert two._resolve_model("tiny") == (r1, "tiny")
    assert two._resolve_model(str(TINY_R1)) == (r1, "tiny")  # the model argument: the served name is sent
    assert two._resolve_model("pineapple") == (base, "pineapple")  # an adapter: its own name is sent
    assert two._resolve_model("other") == (None, "other")
    args = types.SimpleNamespace(url=None, api_key_env=None, model="pineapple")
    assert two._target(args) == (base.base_url, base.api_key, base) and args.model == "pineapple"
    args = types.SimpleNamespace(url=None, api_key_env=None, model="r1")
    assert two._target(args)[2] is r1 and args.model == "tiny"
    args = types.SimpleNamespace(url=f"{r1.base_url}/v1", api_key_env=None, model=None)
    assert two._target(args) == (r1.base_url, r1.api_key, r1)  # its URL keeps its key
    two._put("again", unstarted(SMOLLM2, 8002, tmp_path))
    with pytest.raises(UsageError) as caught:
        two._resolve_model(str(SMOLLM2))
    assert str(caught.value).count("\n") == 0 and "served by 2 servers (base, again)" in str(caught.value)


@pytest.fixture
def t4(tmp_path, monkeypatch):
    """A stand-in nvidia-smi that prints Colab's T4 figures (tests/fixtures/nvidia-smi/t4-15gb)."""
    fake = tmp_path / "bin" / "nvidia-smi"
    fake.parent.mkdir()
    fake.write_text(f"#!/bin/sh\ncat {FIXTURES / 'nvidia-smi/t4-15gb/query-csv.txt'}\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")


def test_a_named_server_gets_a_gpu_share_with_its_reason_and_a_users_flag_wins(shell, t4, capsys):
    shell.run_line_magic("vllm_serve", f"{SMOLLM2} --name a --dry-run")
    out = capsys.readouterr().out
    share = float(out.split("--gpu-memory-utilization ")[1].split()[0])
    assert 0.40 <= share < 0.5  # half of a T4 each, less the CUDA contexts
    assert "so 2 servers fit" in out and "Override with --gpu-memory-utilization" in out
    shell.run_line_magic("vllm_serve", f"{SMOLLM2} --name a --dry-run --gpu-memory-utilization 0.3")
    out = capsys.readouterr().out
    assert "--gpu-memory-utilization 0.3" in out and "so 2 servers fit" not in out
    shell.run_line_magic("vllm_serve", f"{SMOLLM2} --name a --dry-run -- --gpu-memory-utilization 0.35")
    out = capsys.readouterr().out
    assert out.count("--gpu-memory-utilization") == 1 and "0.35" in out
    shell.run_line_magic("vllm_serve", f"{SMOLLM2} --dry-run")  # unnamed: one server, vLLM's default
    assert "--gpu-memory-utilization 0.4" not in capsys.readouterr().out
    full = dataclasses.replace(T4, memory_free_mib=900, memory_used_mib=T4.memory_total_mib - 1200)
    with pytest.raises(UsageError, match="too little for another server"):
        shell._vllm_magics._gpu_share([full], None, "b", [])
    notes = []  # the user's own share is kept, and the trouble said
    assert shell._vllm_magics._gpu_share([full], 0.5, "b", notes) == (None, None)
    assert "vLLM would refuse to start" in notes[0]


def test_lora_flags_are_on_the_dry_run_card(shell, capsys):
    if not (ADAPTER / "adapter_config.json").exists():
        pytest.skip("the rig's adapter is built by scripts/setup_rig.sh (helpers.rig_adapter builds it too)")
    shell.run_line_magic("vllm_serve", f"{SMOLLM2} --name base --lora pineapple={ADAPTER} --dry-run")
    out = capsys.readouterr().out
    assert f"--enable-lora --lora-modules pineapple={ADAPTER} --max-lora-rank 8 --max-loras 2" in out
    assert "r=8" in out and "vllm#48421" in out
    with pytest.raises(UsageError, match="NAME=PATH_OR_REPO"):
        shell.run_line_magic("vllm_serve", f"{SMOLLM2} --lora {ADAPTER} --dry-run")


# -- %%ask --compare --------------------------------------------------------------------------------
def test_compare_lists_parse_into_labels_names_and_variants():
    assert parse_compare("a,b") == [("a", "a", {}), ("b", "b", {})]
    assert parse_compare("a, a:system=pirate:params=hot") == [
        ("a", "a", {}), ("a:system=pirate:params=hot", "a", {"system": "pirate", "params": "hot"})]
    assert parse_compare("llama3:8b,b") == [("llama3:8b", "llama3:8b", {}), ("b", "b", {})]
    for bad, why in (("a", "two or more"), ("a,,b", "two or more"), ("a,a", "named twice"),
                     (",".join("abcdefg"), "at most 6"), ("a,a:system=x:system=y", "given twice")):
        with pytest.raises(UsageError, match=why):
            parse_compare(bad)


@pytest.fixture
def sse():
    yield from serving(SseStandIn())


def test_compare_in_a_shell_asks_each_target_and_keeps_the_answers(shell, sse, capsys):
    shell.user_ns.update(pirate="You are a pirate.", hot={"temperature": 1.5}, cities=["Rome", "Oslo"])
    shell.run_cell_magic("ask", f"--url {sse.url} --compare echo-a,reason,system:system=pirate:params=hot "
                                "--temperature 0 --out cmp", "Which city?")
    cmp = shell.user_ns["cmp"]
    assert shell.user_ns["_ask"] is cmp and cmp.labels == ["echo-a", "reason", "system:system=pirate:params=hot"]
    assert [a.text.strip() for a in cmp] == ["echo-a heard: Which city?", "Paris.",
                                             "system=['You are a pirate.'] temperature=1.5"]
    assert cmp[1].reasoning.strip() == "Let me think it over." and all(a.prompt == "Which city?" for a in cmp)
    out = capsys.readouterr().out
    assert "=== reason ===" in out and "[echo-a] done" in out  # a terminal: a line per column, then the text

    shell.run_cell_magic("ask", f"--url {sse.url} --compare echo-a,echo-b --each cities --out table",
                         "Capital near {{ item }}?")
    table = shell.user_ns["table"]
    assert table.labels == ["echo-a", "echo-b"] and table.prompts == ["Capital near Rome?", "Capital near Oslo?"]
    assert [[a.text.strip() for a in row] for row in table.rows] == [
        ["echo-a heard: Capital near Rome?", "echo-b heard: Capital near Rome?"],
        ["echo-a heard: Capital near Oslo?", "echo-b heard: Capital near Oslo?"]]


def test_compare_refuses_what_makes_no_sense_in_one_line(shell, sse, two):
    shell.user_ns["n"] = 3
    cases = [("--compare a,b --thread t", "cannot be combined with --thread"),
             ("--compare a,b -c", "cannot be combined with --continue"),
             ("--compare a,b --model x", "cannot be combined with --model"),
             ("--compare a,b --schema S", "cannot be combined with --schema"),
             ("--compare a,b --each n --jsonl out.jsonl", "cannot be combined with --jsonl"),
             ("--compare base,nobody", "no server, model or adapter is called 'nobody' (servers: base, r1"),
             ("--compare base,r1", "--compare base: its server is not running; %vllm_status"),
             ("--compare base:system=n,r1", "system=n must name a variable holding the system prompt"),
             (f"--url {sse.url} --compare echo-a,echo-b --each n", "must be a list or other iterable")]
    for line, why in cases:
        with pytest.raises(UsageError) as caught:
            shell.run_cell_magic("ask", line, "Hi")
        assert why in str(caught.value) and "\n" not in str(caught.value), line


def test_status_covers_every_server_and_lists_adapters_beside_their_base(shell, two):
    from vllm_magics.notebook.views.status_card import StatusCard

    both = shell.run_line_magic("vllm_status", "--json -n 0")
    assert list(both) == ["base", "r1"] and [s["name"] for s in both.values()] == ["base", "r1"]
    assert both["r1"]["process"]["port"] == 8001 and both["r1"]["process"]["state"] == "new"
    assert shell.run_line_magic("vllm_status", "r1 --json -n 0")["process"]["port"] == 8001
    with pytest.raises(UsageError, match="--watch follows one server: name it"):
        shell.run_line_magic("vllm_status", "--watch 1 --count 1")
    status = dict(both["base"], health={"status": 200}, models=[
        {"id": "smol", "root": "smol", "parent": None, "max_model_len": 8192},
        {"id": "pine<b>apple</b>", "root": "/a", "parent": "smol", "max_model_len": 8192}])
    card = StatusCard(status)
    assert card.headline == "vLLM server base: ready"
    assert "  model          smol (max 8192 tokens)" in card.text()
    assert "LoRA adapters  pine<b>apple</b> (on smol)" in card.text()
    assert "pine&lt;b&gt;apple&lt;/b&gt; (on smol)" in card.html()  # a server's model names are escaped


@pytest.mark.server
def test_a_share_counts_the_servers_already_running(shell, smollm2_server):
    """Beside a running server started with vLLM's default share (0.92 of the GPU) another cannot start:
    said in one line with what to do; beside one started with a share, the next gets what is left."""
    import dataclasses as dc

    magics = shell._vllm_magics
    magics._put("first", smollm2_server)
    try:
        with pytest.raises(UsageError) as caught:
            magics._gpu_share([T4], None, "second", [])
        assert "first: 0.92 (vLLM's default)" in str(caught.value) and "restart first with" in str(caught.value)
        shared = dc.replace(smollm2_server.plan, argv=smollm2_server.plan.argv + ["--gpu-memory-utilization", "0.45"])
        magics._put("first", _with_plan(smollm2_server, shared))
        share, (setting, reason) = magics._gpu_share([T4], None, "second", [])
        assert 0.4 <= share <= 0.5 and setting == f"--gpu-memory-utilization {share:.2f}" and "beside first" in reason
    finally:
        magics.servers.clear()


def _with_plan(server, plan):
    """The same running server seen with another plan (its command line as if started with a share)."""
    import copy

    other = copy.copy(server)
    other.plan = plan
    return other


@pytest.mark.server
def test_unload_names_every_running_server_and_the_history_knows_every_key(shell, smollm2_server):
    """%unload_ext's note has one line per running server with the command that adopts it (--name for a
    named one), and the history strips every server's key, not only the first's."""
    import dataclasses as dc

    from vllm_magics.notebook.magics import describe_running
    from vllm_magics.server.plan import new_api_key

    magics = shell._vllm_magics
    other_key = new_api_key()
    magics._put("default", smollm2_server)
    magics._put("judge", _with_plan(smollm2_server, dc.replace(smollm2_server.plan, api_key=other_key)))
    try:
        lines = describe_running(magics).splitlines()
        model = smollm2_server.plan.model
        assert len(lines) == 2 and lines[0].endswith(f"%vllm_serve {model} adopt it again.")
        assert lines[1].endswith(f"%vllm_serve {model} --name judge adopt it again.")
        assert {smollm2_server.api_key, other_key} <= magics._known_secrets()
    finally:
        magics.servers.clear()
    assert describe_running(magics) is None
