"""`%vllm_serve MODEL --lora NAME=PATH_OR_REPO` in the plan (server/lora.py): the flags vLLM 0.32 needs,
the rank read from the adapter's own (untrusted) adapter_config.json, and the user's flags winning."""
from __future__ import annotations

import json

import pytest

from vllm_magics.server.lora import LORA_RANKS, allowed_rank, lora_names, parse_adapter
from vllm_magics.server.plan import adapter_names, plan_serve


def adapter(tmp_path, name="a", config=None, raw=None):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "adapter_config.json").write_text(raw if raw is not None else json.dumps(config))
    return folder


def plan(lora, extra=(), gpus=None):
    return plan_serve("base", gpus=gpus or [], vllm_command=["vllm"], environ={}, vllm_version="0.32.0",
                      extra_args=list(extra), lora=lora)


def tail(p, flag="--enable-lora"):
    return p.argv[p.argv.index(flag):]


def test_rank_rounds_up_to_what_vllm_accepts():
    assert LORA_RANKS == (1, 8, 16, 32, 64, 128, 256, 320, 512)  # vllm/config/lora.py MaxLoRARanks (0.32)
    assert [allowed_rank(r) for r in (1, 2, 8, 9, 17, 300, 321, 512, 513)] == [1, 8, 8, 16, 32, 320, 512, 512, None]


def test_a_local_adapter_gives_the_flags_with_reasons(tmp_path):
    a = adapter(tmp_path, config={"r": 12, "peft_type": "LORA"})
    p = plan([f"tuned={a}"])
    assert tail(p) == ["--enable-lora", "--lora-modules", f"tuned={a}", "--max-lora-rank", "16", "--max-loras", "2"]
    reasons = {d.setting: d.reason for d in p.defaults}
    assert "says r=12" in reasons["--max-lora-rank 16"] and "vllm#48421" in reasons["--max-loras 2"]
    assert adapter_names(p) == ["tuned"]


def test_on_a_gpu_no_spare_slot_is_added(tmp_path):
    from helpers import FIXTURES
    from vllm_magics.server.gpu import parse_query_csv

    t4 = parse_query_csv((FIXTURES / "nvidia-smi" / "t4-15gb" / "query-csv.txt").read_text())
    p = plan([f"x={adapter(tmp_path, config={'r': 8})}"], gpus=t4)
    assert "--max-loras" not in p.argv and p.argv[p.argv.index("--max-lora-rank") + 1] == "8"


def test_a_repo_id_leaves_vllms_default_rank_and_says_so(tmp_path):
    p = plan(["hub=someone/some-adapter", f"local={adapter(tmp_path, config={'r': 8})}"])
    # The local adapter's 8 would be too small for an adapter of unknown rank: vLLM's default 16 stays.
    assert p.argv[p.argv.index("--max-lora-rank") + 1] == "16"
    assert any("someone/some-adapter is not a folder here" in n and "default --max-lora-rank 16" in n
               for n in p.notes)
    only_hub = plan(["hub=someone/some-adapter"])
    assert "--max-lora-rank" not in only_hub.argv and only_hub.notes


@pytest.mark.parametrize("raw", ["{not json", json.dumps({"r": "8"}), json.dumps({"r": True}), json.dumps([8]),
                                 json.dumps({"r": -1}), "\x00" * 10, "[" * 200_000])
def test_a_hostile_adapter_config_leaves_the_default_and_says_why(tmp_path, raw):
    p = plan([f"x={adapter(tmp_path, raw=raw)}"])
    assert "--max-lora-rank" not in p.argv and any("LoRA rank unknown" in n for n in p.notes)


def test_too_large_a_rank_bad_specs_and_duplicates_are_one_line_errors(tmp_path):
    with pytest.raises(ValueError, match="above the largest rank vLLM serves"):
        plan([f"x={adapter(tmp_path, config={'r': 1024})}"])
    for spec, why in (("noequals", "NAME=PATH_OR_REPO"), ("=path", "NAME=PATH_OR_REPO"), ("x=", "NAME=PATH_OR_REPO"),
                      ("bad name=p", "must be letters"), ("-x=p", "must be letters"),
                      # a local-looking source that is no folder: said now, not by vLLM after loading the model
                      ("x=./typo", "not a folder"), ("x=/no/such/adapter", "not a folder"),
                      ("x=~/no-such-adapter-here", "not a folder")):
        with pytest.raises(ValueError, match=why):
            parse_adapter(spec)
    with pytest.raises(ValueError, match="given twice"):
        plan(["x=a/b", "x=c/d"])


def test_the_users_flags_after_dashes_win(tmp_path):
    a = adapter(tmp_path, config={"r": 8})
    p = plan([f"x={a}"], extra=["--max-lora-rank", "64", "--max-loras", "4", "--lora-modules", "y=/elsewhere"])
    assert p.argv.count("--max-lora-rank") == 1 and p.argv[p.argv.index("--max-lora-rank") + 1] == "64"
    assert p.argv.count("--max-loras") == 1 and p.argv[p.argv.index("--max-loras") + 1] == "4"
    assert adapter_names(p) == ["y"] and any("in place of the --lora adapters" in n for n in p.notes)


def test_adapter_names_read_both_spellings_of_lora_modules():
    argv = ["vllm", "serve", "m", "--lora-modules", "a=/p", '{"name": "b", "path": "/q"}', "--seed", "1",
            "--lora_modules=c=/r", "--lora-modules", "{not json"]
    assert lora_names(argv) == ["a", "b", "c"]


def test_a_source_with_a_comma_goes_as_json_as_vllm_reads_it(tmp_path):
    a = adapter(tmp_path, name="with,comma", config={"r": 8})
    p = plan([f"tuned={a}", f"plain={adapter(tmp_path, config={'r': 8})}"])
    items = p.argv[p.argv.index("--lora-modules") + 1:p.argv.index("--max-lora-rank")]
    assert json.loads(items[0]) == {"name": "tuned", "path": str(a)} and items[1] == f"plain={tmp_path / 'a'}"
    assert adapter_names(p) == ["tuned", "plain"]
    # vLLM's own rule (not imported: vllm takes many seconds to import), read from the installed source.
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("vllm")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("vllm is not installed here")
    source = Path(spec.submodule_search_locations[0], "entrypoints", "launchers", "cli_args.py")
    assert 'if "=" in item and "," not in item:  # Old format: name=path' in source.read_text()


def test_an_adapter_named_like_the_served_model_is_refused():
    with pytest.raises(ValueError, match="the adapter's name is the served model's name"):
        plan(["base=owner/adapter"])
    with pytest.raises(ValueError, match="the adapter's name is the served model's name"):
        plan(["tiny=owner/adapter"], extra=["--served-model-name", "tiny"])
    assert adapter_names(plan(["base=owner/adapter"], extra=["--served-model-name", "tiny"])) == ["base"]
