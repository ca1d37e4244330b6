import pytest

from helpers import FIXTURES
from vllm_magics.server import gpu
from vllm_magics.redact import mask_secret
from vllm_magics.server.plan import plan_serve
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
    assert plan.env["VLLM_CPU_KVCACHE_SPACE"] == "1"
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
