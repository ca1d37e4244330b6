import dataclasses

import pytest

from helpers import FIXTURES
from vllm_magics.server import gpu
from vllm_magics.redact import mask_secret
from vllm_magics.server.plan import check_port, plan_serve, resolve_vllm_command, served_model_name
from vllm_magics.server.vllm_log import suggested_max_model_len

T4 = gpu.parse_query_csv((FIXTURES / "nvidia-smi/t4-15gb/query-csv.txt").read_text())
H100 = gpu.parse_query_csv((FIXTURES / "nvidia-smi/h100-80gb/query-csv.txt").read_text())
SEED_MODEL = "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"


def settings(plan):
    return [d.setting for d in plan.defaults]


def test_t4_gets_the_seed_notebooks_flags():
    plan = plan_serve(SEED_MODEL, gpus=T4, vllm_version="0.26.0")  # the build %vllm_install picks for Colab
    assert plan.argv[1:3] == ["serve", SEED_MODEL] and plan.argv[0].endswith("vllm")
    assert plan.argv[plan.argv.index("--dtype") + 1] == "half"
    assert plan.argv[plan.argv.index("--max-model-len") + 1] == "16384"
    assert plan.argv[plan.argv.index("--host") + 1] == "127.0.0.1"
    assert plan.argv[plan.argv.index("--port") + 1] == "8000"
    assert settings(plan) == ["--dtype half", "--max-model-len 16384"]
    assert "compute capability 7.5" in plan.defaults[0].reason
    assert plan.default_max_model_len == 16384
    assert "VLLM_CPU_KVCACHE_SPACE" not in plan.env


def test_h100_keeps_bfloat16():
    plan = plan_serve(SEED_MODEL, gpus=H100)
    assert "--dtype" not in plan.argv
    assert settings(plan) == ["--max-model-len 16384"]


def test_no_gpu_gets_cpu_settings():
    plan = plan_serve("m", gpus=[], environ={})
    assert plan.env["VLLM_CPU_KVCACHE_SPACE"] == "1" and plan.env["OMP_WAIT_POLICY"] == "PASSIVE"
    mine = plan_serve("m", gpus=[], environ={"OMP_WAIT_POLICY": "ACTIVE"})  # the user's own setting is left alone
    assert "OMP_WAIT_POLICY" not in mine.env and "OMP_WAIT_POLICY=PASSIVE" not in [d.setting for d in mine.defaults]
    assert "OMP_WAIT_POLICY" not in plan_serve(SEED_MODEL, gpus=T4, vllm_version="0.26.0").env
    assert plan.env["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
    assert "--enforce-eager" in plan.argv and "--dtype" not in plan.argv
    assert plan.default_max_model_len is None


def test_the_users_choices_win_over_defaults():
    plan = plan_serve(SEED_MODEL, gpus=T4, dtype="float32", max_model_len="4096", vllm_version="0.26.0")
    assert plan.argv.count("--dtype") == 1 and plan.argv[plan.argv.index("--dtype") + 1] == "float32"
    assert plan.argv[plan.argv.index("--max-model-len") + 1] == "4096"
    assert plan.defaults == [] and plan.default_max_model_len is None
    passthrough = plan_serve(SEED_MODEL, gpus=T4, extra_args=["--dtype=bfloat16", "--max_model_len", "2048"])
    assert passthrough.argv.count("--dtype") == 0 and "--dtype=bfloat16" in passthrough.argv
    assert "--max-model-len" not in passthrough.argv
    cpu = plan_serve("m", gpus=[], environ={"VLLM_CPU_KVCACHE_SPACE": "4"}, extra_args=["--no-enforce-eager"])
    assert "VLLM_CPU_KVCACHE_SPACE" not in cpu.env and "--enforce-eager" not in cpu.argv


def test_flags_after_double_dash_pass_through_in_order():
    plan = plan_serve("m", gpus=[], extra_args=["--reasoning-parser", "deepseek_r1", "--seed", "1"])
    assert plan.argv[-4:] == ["--reasoning-parser", "deepseek_r1", "--seed", "1"]


def test_api_key_travels_in_the_environment_never_in_argv():
    plan = plan_serve("m", gpus=[])
    assert plan.api_key and len(plan.api_key) >= 24
    assert plan.env["VLLM_API_KEY"] == plan.api_key
    assert plan.api_key not in " ".join(plan.argv)
    assert plan.api_key not in plan.command_line()
    assert mask_secret(plan.api_key) in plan.command_line()
    given = plan_serve("m", gpus=[], extra_args=["--api-key", "sk-typed-after-dashes-1234"])
    assert given.api_key == "sk-typed-after-dashes-1234" and "--api-key" not in given.argv
    assert plan_serve("m", gpus=[], api_key=False).api_key is None
    assert "VLLM_API_KEY" not in plan_serve("m", gpus=[], api_key=False).env
    assert plan_serve("m", gpus=[]).api_key != plan.api_key  # random per server


def test_mask_secret_never_shows_the_whole_key():
    key = "vm-abcdefghijklmnopqrstuvwxyz0123"
    masked = mask_secret(key)
    assert masked.endswith("0123") and "ghijklmnop" not in masked
    assert mask_secret("short") == "••••••" and mask_secret(None) == "(none)"


@pytest.mark.parametrize("flag", ["--port", "--host", "--port=9"])
def test_owned_flags_after_double_dash_are_refused(flag):
    with pytest.raises(ValueError, match="pass --(port|host) to %vllm_serve"):
        plan_serve("m", gpus=[], extra_args=[flag, "9"])


def test_with_max_model_len_copies_the_plan():
    plan = plan_serve(SEED_MODEL, gpus=T4)
    lower = plan.with_max_model_len(9000)
    assert lower.argv[lower.argv.index("--max-model-len") + 1] == "9000" and lower.default_max_model_len is None
    assert plan.argv[plan.argv.index("--max-model-len") + 1] == "16384"


def test_suggested_max_model_len_reads_vllms_own_numbers():
    # vLLM 0.32's text (vllm/v1/core/kv_cache_utils.py and vllm/config/model.py).
    kv = ("ValueError: To serve at least one request with the model's max seq len (16384), (0.38 GiB KV cache is "
          "needed, which is larger than the available KV cache memory (0.12 GiB). Based on the available memory, "
          "the estimated maximum model length is 5232. Try increasing `gpu_memory_utilization`")
    assert suggested_max_model_len(kv) == 5232
    derived = ("pydantic_core._pydantic_core.ValidationError: 1 validation error for ModelConfig\n  Value error, "
               "User-specified max_model_len (16384) is greater than the derived max_model_len "
               "(max_position_embeddings=8192.0 or model_max_length=None in model's config.json).")
    assert suggested_max_model_len(derived) == 8192
    assert suggested_max_model_len("INFO all fine") is None


def test_empty_or_flag_like_model_is_refused():
    for bad in ("", "--port"):
        with pytest.raises(ValueError, match="which model"):
            plan_serve(bad, gpus=[])


def test_vllm_beside_this_python_is_found_when_not_on_path(tmp_path, monkeypatch):
    import os
    import sys

    from vllm_magics.server.plan import resolve_vllm_command

    monkeypatch.setenv("PATH", str(tmp_path))  # no vllm on PATH
    sibling = os.path.join(os.path.dirname(sys.executable), "vllm")
    expected = [sibling] if os.access(sibling, os.X_OK) else ["vllm"]
    assert resolve_vllm_command(None) == expected
    assert resolve_vllm_command(["/opt/other/vllm"]) == ["/opt/other/vllm"]


def test_the_plans_repr_never_shows_the_key_or_token():
    # A notebook that displays `current_server().plan` writes its repr into the saved .ipynb.
    plan = plan_serve("m", gpus=[], api_key="sk-never-printed-5678", extra_args=["--hf-token", "hf_tok_never_1234"])
    assert plan.env["HF_TOKEN"] == "hf_tok_never_1234" and "--hf-token" not in plan.argv
    for shown in (repr(plan), plan.command_line()):
        assert "sk-never-printed-5678" not in shown and "hf_tok_never_1234" not in shown
    # server.json (0600) keeps the key, which adopting the server needs; the HF token it never needs.
    assert "hf_tok_never_1234" not in str(plan.record_env()) and plan.record_env()["VLLM_API_KEY"] == plan.api_key


def test_a_key_over_plain_http_to_other_machines_and_an_open_server_are_warned():
    assert plan_serve("m", gpus=[]).notes == []
    keyed = plan_serve("m", gpus=[], host="0.0.0.0")
    assert len(keyed.notes) == 1 and "plain http://" in keyed.notes[0] and "a tunnel (https)" in keyed.notes[0]
    open_ = plan_serve("m", gpus=[], host="0.0.0.0", api_key=False)
    assert "without an API key" in open_.notes[0] and "port 8000" in open_.notes[0]
    assert plan_serve("m", gpus=[], host="127.0.0.2", api_key=False).notes == []


@pytest.mark.parametrize("port", [0, -1, 70000, "x"])
def test_plan_refuses_ports_outside_1_to_65535(port):
    with pytest.raises(ValueError, match="a port is a number from 1 to 65535"):
        plan_serve("m", gpus=[], port=port)
    assert plan_serve("m", gpus=[], port=65535).port == 65535


def test_copies_keep_the_notes():
    plan = plan_serve(SEED_MODEL, gpus=T4, host="0.0.0.0")
    assert plan.with_max_model_len(9000).notes == plan.notes


T4_BUSY = gpu.parse_query_csv((FIXTURES / "nvidia-smi/t4-15gb/query-csv-busy.txt").read_text())


def test_t4_with_a_vllm_that_picks_flashinfer_gets_triton_attention():
    plan = plan_serve(SEED_MODEL, gpus=T4, vllm_version="0.22.0", environ={})
    assert plan.argv[plan.argv.index("--attention-backend") + 1] == "TRITON_ATTN"
    [why] = [d.reason for d in plan.defaults if d.setting == "--attention-backend TRITON_ATTN"]
    assert "vLLM 0.22.0" in why and "flashinfer#3620" in why
    for newer in ("0.24.0", "0.26.0+cu129"):  # Triton is vLLM's own pick on sm75 from 0.24
        assert "--attention-backend" not in plan_serve(SEED_MODEL, gpus=T4, vllm_version=newer, environ={}).argv
    assert "--attention-backend" not in plan_serve(SEED_MODEL, gpus=H100, vllm_version="0.22.0", environ={}).argv
    mine = plan_serve(SEED_MODEL, gpus=T4, vllm_version="0.22.0", environ={}, extra_args=["--attention-backend",
                                                                                          "FLEX_ATTENTION"])
    assert mine.argv.count("--attention-backend") == 1 and mine.argv[-1] == "FLEX_ATTENTION"


def test_the_ignored_attention_environment_variable_becomes_the_flag_from_0_26():
    env = {"VLLM_ATTENTION_BACKEND": "FLEX_ATTENTION"}
    plan = plan_serve(SEED_MODEL, gpus=T4, vllm_version="0.26.0", environ=env)
    assert plan.argv[plan.argv.index("--attention-backend") + 1] == "FLEX_ATTENTION"
    assert any("vllm#50292" in d.reason for d in plan.defaults)
    # Older vLLM reads the variable itself: left alone.
    assert "--attention-backend" not in plan_serve(SEED_MODEL, gpus=T4, vllm_version="0.22.0", environ=env).argv


def test_no_fp8_kv_cache_on_a_t4():
    plan = plan_serve(SEED_MODEL, gpus=T4, vllm_version="0.26.0", extra_args=["--kv-cache-dtype", "fp8", "--seed", "1"])
    assert "--kv-cache-dtype" not in plan.argv and plan.argv[-2:] == ["--seed", "1"]
    assert any(d.setting == "--kv-cache-dtype auto" and "vllm#47549" in d.reason for d in plan.defaults)
    h100 = plan_serve(SEED_MODEL, gpus=H100, vllm_version="0.26.0", extra_args=["--kv-cache-dtype=fp8"])
    assert "--kv-cache-dtype=fp8" in h100.argv


def test_gpu_memory_utilization_drops_to_what_is_free_when_the_gpu_is_in_use():
    plan = plan_serve(SEED_MODEL, gpus=T4_BUSY, vllm_version="0.26.0")
    # (10475 - 600) / 15360 = 0.6429 -> 0.64
    assert plan.argv[plan.argv.index("--gpu-memory-utilization") + 1] == "0.64"
    [why] = [d.reason for d in plan.defaults if d.setting.startswith("--gpu-memory-utilization")]
    assert "already holds 4.5 GiB" in why and "vllm#20305" in why
    assert "--gpu-memory-utilization" not in plan_serve(SEED_MODEL, gpus=T4, vllm_version="0.26.0").argv
    asked = plan_serve(SEED_MODEL, gpus=T4_BUSY, vllm_version="0.26.0", gpu_memory_utilization=0.9)
    assert asked.argv[asked.argv.index("--gpu-memory-utilization") + 1] == "0.9"
    assert any("0.64 fits" in n for n in asked.notes)


# -- what the user is shown: the command, the chosen defaults and their reasons, the refusals -----------
# (issue 14: each survivor of bench/mutation.py's `plan` run is killed here or listed in
# bench/mutation-equivalents.md)
CPU_REASONS = [
    ("VLLM_CPU_KVCACHE_SPACE=1", "no GPU: vLLM's CPU backend needs a KV-cache size in GiB"),
    ("OMP_WAIT_POLICY=PASSIVE", "no GPU: vLLM's CPU threads wait without spinning, so a server that shares its cores "
                                "stays fast (2 to 5x faster beside two busy processes)"),
    ("--enforce-eager", "no GPU: skipping torch.compile makes a CPU server ready about 3x sooner (25 s instead of 75 s)"),
    ("VLLM_ENABLE_V1_MULTIPROCESSING=0", "no GPU: one engine process starts faster and uses less memory"),
]
T4_REASONS = [
    ("--dtype half", "Tesla T4 has compute capability 7.5; bfloat16 needs 8.0 or newer"),
    ("--max-model-len 16384", "keeps the KV cache within a free Colab GPU; lowered automatically if vLLM says the "
                              "GPU or the model cannot hold it"),
]


def shown(plan):
    return [(d.setting, d.reason) for d in plan.defaults]


def test_the_shown_command_is_exactly_what_runs_with_the_key_masked():
    plan = plan_serve("m", gpus=[], environ={}, vllm_command=["/opt/vllm"], vllm_version="0.32.0",
                      api_key="sk-test-key-123456789", extra_args=["--chat-template", "a b.jinja"])
    assert plan.env == {"PYTHONUNBUFFERED": "1", "VLLM_LOGGING_COLOR": "0", "VLLM_CPU_KVCACHE_SPACE": "1",
                        "OMP_WAIT_POLICY": "PASSIVE", "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
                        "VLLM_API_KEY": "sk-test-key-123456789"}
    assert plan.command_line() == (
        "PYTHONUNBUFFERED=1 VLLM_LOGGING_COLOR=0 VLLM_CPU_KVCACHE_SPACE=1 OMP_WAIT_POLICY=PASSIVE "
        "VLLM_ENABLE_V1_MULTIPROCESSING=0 "
        f"VLLM_API_KEY={mask_secret('sk-test-key-123456789')} "
        "/opt/vllm serve m --host 127.0.0.1 --port 8000 --enforce-eager --chat-template 'a b.jinja'")
    assert (plan.model, plan.host, plan.port) == ("m", "127.0.0.1", 8000)


def test_every_default_is_shown_with_its_reason():
    assert shown(plan_serve("m", gpus=[], environ={}, vllm_version="0.32.0")) == CPU_REASONS
    assert shown(plan_serve(SEED_MODEL, gpus=T4, vllm_version="0.26.0")) == T4_REASONS


def test_the_users_own_settings_come_first_on_the_command_line():
    plan = plan_serve("m", gpus=[], environ={}, vllm_command=["/opt/vllm"], vllm_version="0.32.0", dtype="float32",
                      max_model_len=4096, gpu_memory_utilization=0.5, extra_args=["--seed", "1"])
    assert plan.argv == ["/opt/vllm", "serve", "m", "--host", "127.0.0.1", "--port", "8000", "--dtype", "float32",
                         "--max-model-len", "4096", "--gpu-memory-utilization", "0.5", "--enforce-eager",
                         "--seed", "1"]


def test_an_empty_max_model_len_means_not_given():
    assert "--max-model-len" not in plan_serve("m", gpus=[], environ={}, vllm_version="0.32.0", max_model_len="").argv
    t4 = plan_serve(SEED_MODEL, gpus=T4, vllm_version="0.26.0", max_model_len="")
    assert t4.argv.count("--max-model-len") == 1 and t4.default_max_model_len == 16384


def test_unrelated_flags_after_dashes_leave_the_defaults_alone():
    for extra in (["--seed", "1", "--served-model-name", "X-dtype"],  # a value is not a flag, whatever it spells
                  ["--served-model-name", "dtype"], ["--served-model-name", "max_model_len"]):
        assert shown(plan_serve(SEED_MODEL, gpus=T4, vllm_version="0.26.0", extra_args=extra)) == T4_REASONS
        assert shown(plan_serve("m", gpus=[], environ={}, vllm_version="0.32.0", extra_args=extra)) == CPU_REASONS


@pytest.mark.parametrize("flag", ["-O0", "-O3", "-cc.mode=0", "--compilation-config={}", "--no-enforce-eager"])
def test_a_compilation_setting_of_the_users_means_no_enforce_eager(flag):
    plan = plan_serve("m", gpus=[], environ={}, vllm_version="0.32.0", extra_args=[flag])
    assert "--enforce-eager" not in plan.argv and "VLLM_ENABLE_V1_MULTIPROCESSING" not in plan.env


@pytest.mark.parametrize("word, new", [("false", "--no-enable-prefix-caching"), ("true", "--enable-prefix-caching")])
def test_an_old_on_off_spelling_is_rewritten_and_the_user_told(word, new):
    plan = plan_serve("m", gpus=[], environ={}, vllm_version="0.32.0", extra_args=["--enable-prefix-caching", word])
    assert plan.argv[-1] == new
    assert shown(plan)[0] == (new, f"you wrote `--enable-prefix-caching {word}`: vLLM's on/off flags are "
                                   "--enable-prefix-caching / --no-enable-prefix-caching now (it refuses "
                                   "`true`/`false` after them)")


def test_a_lowered_max_model_len_says_what_did_not_fit_and_copies_the_plan():
    plan = plan_serve(SEED_MODEL, gpus=T4, vllm_version="0.26.0", host="0.0.0.0")
    lower = plan.with_max_model_len(9000)
    assert shown(lower) == [T4_REASONS[0], ("--max-model-len 9000", "16384 did not fit; 9000 is what vLLM said fits")]
    assert (lower.env, lower.notes, lower.model) == (plan.env, plan.notes, plan.model)
    lower.env["X"] = "1"
    lower.notes.append("x")
    lower.defaults.append(None)
    assert "X" not in plan.env and "x" not in plan.notes and shown(plan) == T4_REASONS


def test_the_key_given_to_the_magic_wins_over_one_after_dashes():
    extra = ["--api-key", "sk-from-dashes-5678"]
    assert plan_serve("m", gpus=[], vllm_version="0.32.0", api_key="sk-from-magic-1234",
                      extra_args=extra).api_key == "sk-from-magic-1234"
    assert plan_serve("m", gpus=[], vllm_version="0.32.0", api_key=True, extra_args=extra).api_key == "sk-from-dashes-5678"
    no_key = plan_serve("m", gpus=[], vllm_version="0.32.0", api_key="")
    assert no_key.api_key is None and "VLLM_API_KEY" not in no_key.env


def test_a_generated_key_is_long_and_url_safe():
    key = plan_serve("m", gpus=[], vllm_version="0.32.0").api_key
    assert len(key) >= 32 and all(c.isalnum() or c in "-_" for c in key)
    # The suite's secret scan (tests/conftest.py GENERATED_KEY) finds keys by this shape: were it to
    # change, the scan would go blind without a failure.
    from conftest import GENERATED_KEY

    assert GENERATED_KEY.fullmatch(key), key


def test_the_installed_vllm_decides_the_version_settings(monkeypatch):
    from vllm_magics.doctor import platform

    monkeypatch.setattr(platform, "installed_version", lambda name: "0.26.0" if name == "vllm" else None)
    plan = plan_serve(SEED_MODEL, gpus=T4, environ={"VLLM_ATTENTION_BACKEND": "FLEX_ATTENTION"})
    assert plan.argv[plan.argv.index("--attention-backend") + 1] == "FLEX_ATTENTION"
    # 0.26 is not the version whose flags were recorded: it judges an unknown flag itself
    assert plan_serve("m", gpus=[], extra_args=["--a-flag-0-26-had"]).argv[-1] == "--a-flag-0-26-had"


def test_the_vllm_on_path_is_used_as_is(tmp_path, monkeypatch):
    fake = tmp_path / "vllm"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert resolve_vllm_command(None) == ["vllm"]


def test_ports_1_and_65535_are_the_ends():
    assert (check_port(1), check_port("65535")) == (1, 65535)
    for bad in (0, 65536):
        with pytest.raises(ValueError) as err:
            check_port(bad)
        assert str(err.value) == (f"--port {bad}: a port is a number from 1 to 65535 (a taken port moves on to the "
                                  "next free one by itself)")
    with pytest.raises(ValueError, match=r"^which model\? e\.g\. Qwen/Qwen2\.5-0\.5B-Instruct$"):
        plan_serve("", gpus=[])


def test_the_exposure_warnings_in_full():
    assert plan_serve("m", gpus=[], vllm_version="0.32.0", host="0.0.0.0").notes == [
        "--host 0.0.0.0: other machines can reach this server, and its API key would cross the network in plain "
        "http:// that anyone on the way can read; keep --host 127.0.0.1 and share it with a tunnel (https) instead."]
    assert plan_serve("m", gpus=[], vllm_version="0.32.0", host="10.0.0.5", port=8123, api_key=False).notes == [
        "--host 10.0.0.5 without an API key: anyone who can reach this machine on port 8123 can use this server "
        "(and its GPU)."]


@pytest.mark.parametrize("extra, name", [
    ([], "Qwen/Qwen2.5-0.5B-Instruct"),
    (["--served-model-name", "alias", "alias2"], "alias"),
    (["--served-model-name=alias"], "alias"),
    (["--served-model-name", "alias"], "alias"),  # the flag's value last on the command line
    (["--served-model-name=a=b"], "a=b"),  # everything after the first "=" is the name
    (["--seed", "1", "--served-model-name"], "Qwen/Qwen2.5-0.5B-Instruct"),  # no value: vLLM refuses it anyway
])
def test_clients_send_the_first_served_model_name_or_the_model(extra, name):
    plan = plan_serve("Qwen/Qwen2.5-0.5B-Instruct", gpus=[], vllm_version="0.26.0", extra_args=extra)
    assert served_model_name(plan) == name
    assert served_model_name(dataclasses.replace(plan, argv=plan.argv[:3] + ["--served-model-name=a b"])) == "a"


def test_adapters_add_their_flags_reasons_and_notes_to_the_rest(tmp_path):
    import json

    folder = tmp_path / "a"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"r": 8}))
    base = plan_serve("m", gpus=[], environ={}, vllm_version="0.32.0", host="0.0.0.0", extra_args=["--seed", "1"])
    with_lora = plan_serve("m", gpus=[], environ={}, vllm_version="0.32.0", host="0.0.0.0", extra_args=["--seed", "1"],
                           lora=[f"a={folder}"])
    assert with_lora.argv[:len(base.argv) - 2] == base.argv[:-2] and with_lora.argv[-2:] == ["--seed", "1"]
    assert "--enable-lora" in with_lora.argv
    assert shown(with_lora)[:len(CPU_REASONS)] == CPU_REASONS and len(with_lora.defaults) > len(CPU_REASONS)
    assert with_lora.notes[-len(base.notes):] == base.notes
    busy = plan_serve(SEED_MODEL, gpus=T4_BUSY, vllm_version="0.26.0", gpu_memory_utilization=0.9, lora=[f"a={folder}"])
    assert any("0.64 fits" in n for n in busy.notes)  # the GPU's note stays beside the adapters'
