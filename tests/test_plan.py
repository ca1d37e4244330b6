import pytest

from helpers import FIXTURES
from vllm_magics.server import gpu
from vllm_magics.redact import mask_secret
from vllm_magics.server.plan import plan_serve, suggested_max_model_len

T4 = gpu.parse_query_csv((FIXTURES / "nvidia-smi/t4-15gb/query-csv.txt").read_text())
H100 = gpu.parse_query_csv((FIXTURES / "nvidia-smi/h100-80gb/query-csv.txt").read_text())
SEED_MODEL = "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"


def settings(plan):
    return [d.setting for d in plan.defaults]


def test_t4_gets_the_seed_notebooks_flags():
    plan = plan_serve(SEED_MODEL, gpus=T4)
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
    plan = plan_serve(SEED_MODEL, gpus=T4, dtype="float32", max_model_len="4096")
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


def test_with_max_model_len_and_port_copy_the_plan():
    plan = plan_serve(SEED_MODEL, gpus=T4)
    lower = plan.with_max_model_len(9000)
    assert lower.argv[lower.argv.index("--max-model-len") + 1] == "9000" and lower.default_max_model_len is None
    assert plan.argv[plan.argv.index("--max-model-len") + 1] == "16384"
    moved = plan.with_port(8001)
    assert moved.port == 8001 and moved.base_url == "http://127.0.0.1:8001" and "8001" in moved.argv


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
