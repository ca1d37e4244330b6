"""The seed notebook's `vllm serve` flags as a person types them into %vllm_serve (issue 9, item 2), and
the flags vLLM refuses, diagnosed with vLLM's own words."""
import re
import subprocess

import pytest
from IPython.core.error import UsageError

from helpers import FIXTURES
from vllm_magics.doctor import serve_flags_data
from vllm_magics.doctor.flag_errors import REJECTED_FLAG_RULE
from vllm_magics.doctor.passthrough import read_passthrough
from vllm_magics.doctor.platform import installed_version
from vllm_magics.doctor.serve_flags import canonical_flag, parse_serve_help
from vllm_magics.server.diagnose_rules import Rule

SEED_MODEL = "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"
# The seed notebook's command (seed-colab-playground.md), after `vllm serve MODEL`.
SEED_FLAGS = "--trust-remote-code --dtype half --max-model-len 16384 --enable-chunked-prefill false " \
             "--tensor-parallel-size 1"
LOGS = FIXTURES / "colab" / "vllm_logs"


@pytest.mark.server
@pytest.mark.starts_no_server
def test_recorded_flag_lists_match_the_installed_vllm(rig):
    help_text = subprocess.run([rig["vllm"], "serve", "--help=all"], capture_output=True, text=True,
                               timeout=600).stdout
    options, booleans = parse_serve_help(help_text)
    assert booleans == set(serve_flags_data.BOOLEAN_FLAGS)
    assert {o for o in options if o.startswith("--")} == set(serve_flags_data.LONG_FLAGS)
    # The version as the product reads it (package metadata: `vllm --version` would import vLLM once more);
    # the rig's vllm is installed in the interpreter running these tests.
    assert installed_version("vllm") == serve_flags_data.VLLM_VERSION


def test_the_help_parser_reads_boolean_pairs_and_aliases():
    text = ("options:\n  -h, --help            show this help\n"
            "  --enable-chunked-prefill, --no-enable-chunked-prefill\n                        If True...\n"
            "  --tensor-parallel-size TENSOR_PARALLEL_SIZE, -tp TENSOR_PARALLEL_SIZE\n"
            "  --trust-remote-code, --no-trust-remote-code\n  --headless            Run headless.\n")
    options, booleans = parse_serve_help(text)
    assert booleans == {"--enable-chunked-prefill", "--trust-remote-code"}
    assert {"-tp", "--tensor-parallel-size", "--headless", "--no-trust-remote-code"} <= options


def test_seed_flags_old_boolean_spelling_becomes_no_flag():
    out = read_passthrough(SEED_FLAGS.split())
    assert out.args == ["--trust-remote-code", "--dtype", "half", "--max-model-len", "16384",
                        "--no-enable-chunked-prefill", "--tensor-parallel-size", "1"]
    assert out.rewrites == [("--enable-chunked-prefill false", "--no-enable-chunked-prefill")]
    on = read_passthrough(["--enforce_eager=True", "--enable-prefix-caching", "yes", "--seed", "0"])
    assert on.args == ["--enforce-eager", "--enable-prefix-caching", "--seed", "0"]
    # A value after a non-boolean flag is its value, not an on/off word.
    assert read_passthrough(["--seed", "1"]).args == ["--seed", "1"]
    with pytest.raises(ValueError, match="on or off"):
        read_passthrough(["--enforce-eager=maybe"])


@pytest.mark.parametrize("typed", [["--api-key", "sk-secret-1"], ["--api_key", "sk-secret-1"],
                                   ["--api-key=sk-secret-1"], ["--api-k", "sk-secret-1"], ["--api_k=sk-secret-1"]])
def test_api_key_spellings_vllm_accepts_leave_argv(typed):
    out = read_passthrough(["--seed", "1"] + typed + ["--enforce-eager"])
    assert out.secrets == {"VLLM_API_KEY": "sk-secret-1"}
    assert out.args == ["--seed", "1", "--enforce-eager"]
    assert "sk-secret-1" not in repr(out)


def test_hf_token_leaves_argv_but_a_bare_flag_stays():
    out = read_passthrough(["--hf-token", "hf_abcdefgh12345678", "--seed", "1"])
    assert out.secrets == {"HF_TOKEN": "hf_abcdefgh12345678"} and out.args == ["--seed", "1"]
    assert read_passthrough(["--hf-token", "--seed", "1"]).args == ["--hf-token", "--seed", "1"]
    with pytest.raises(ValueError, match="one key"):
        read_passthrough(["--api-key", "k1", "k2"])


def test_abbreviations_resolve_as_vllms_argparse_does():
    assert canonical_flag("--api-k") == "--api-key"
    assert canonical_flag("--api") is None  # --api-key or --api-server-count: argparse calls it ambiguous
    assert canonical_flag("--max_model_len=5") == "--max-model-len"
    assert canonical_flag("--por") == "--port"
    assert canonical_flag("--not-a-vllm-flag") is None and canonical_flag("-tp") is None
    with pytest.raises(ValueError, match="pass --port to %vllm_serve"):
        read_passthrough(["--por", "9"])


def test_the_seed_command_as_typed_in_the_magic(shell, capsys):
    shell.run_line_magic("vllm_serve", f"{SEED_MODEL} {SEED_FLAGS} --dry-run")
    out = capsys.readouterr().out
    command = next(ln for ln in out.splitlines() if "command:" in ln)
    assert "--trust-remote-code --no-enable-chunked-prefill --tensor-parallel-size 1" in command
    assert command.count("--dtype half") == 1 and "--max-model-len 16384" in command
    assert " false" not in command
    assert "you wrote `--enable-chunked-prefill false`" in out  # the one line saying what changed
    # With `--` the same flags go the same way (the magic's own --dtype then belongs to vLLM).
    shell.run_line_magic("vllm_serve", f"{SEED_MODEL} --dry-run -- {SEED_FLAGS}")
    assert "--no-enable-chunked-prefill --tensor-parallel-size 1" in capsys.readouterr().out


@pytest.mark.parametrize("port", ["70000", "-1", "0", "65536"])
def test_ports_outside_1_to_65535_are_refused(shell, port):
    with pytest.raises(UsageError, match="a port is a number from 1 to 65535"):
        shell.run_line_magic("vllm_serve", f"m --port {port} --dry-run")


def test_secrets_typed_for_vllm_never_reach_the_dry_run_card(shell, capsys):
    shell.run_line_magic("vllm_serve", "m --api_key sk-typed-secret-4242 --hf-token hf_typedtoken9999 --dry-run")
    out = capsys.readouterr().out
    assert "sk-typed-secret-4242" not in out and "hf_typedtoken9999" not in out
    assert "--api" not in out and "--hf-token" not in out


def _rule_result(log: str):
    rule = Rule(**REJECTED_FLAG_RULE)
    groups = {}
    hit = False
    for pattern in rule.patterns:
        m = re.compile(pattern, re.M).search(log)
        if m:
            hit = True
            groups.update({k: v for k, v in m.groupdict().items() if v is not None})
    return (rule.summary(groups, log), rule.fix(groups, log)) if hit else None


def test_a_refused_flag_is_diagnosed_with_vllms_own_words():
    summary, fix = _rule_result((LOGS / "unrecognized_arguments__seed_false.log").read_text())
    assert summary == "vLLM refused its command line: “unrecognized arguments: false”"
    assert "--no-enable-chunked-prefill" in fix
    summary, fix = _rule_result((LOGS / "invalid_argument__int.log").read_text())
    assert "argument --max-num-seqs: invalid int value: 'lots'" in summary and "--max-num-seqs" in fix
    summary, fix = _rule_result((LOGS / "invalid_argument__choice.log").read_text())
    assert "invalid choice: 'fp9'" in summary and len(summary) < 260
    unknown = "usage: vllm serve\nvllm: error: unrecognized arguments: --enable-turbo\n"
    assert "no flag --enable-turbo" in _rule_result(unknown)[1]
    assert _rule_result((FIXTURES / "vllm_logs" / "success_startup__smollm2.log").read_text()) is None


def test_a_flag_the_known_vllm_lacks_is_refused_at_once_and_other_versions_decide_themselves():
    with pytest.raises(ValueError, match="unrecognized arguments: --enable-turbo --x=1"):
        read_passthrough(["--seed", "1", "--enable-turbo", "--x=1"], serve_flags_data.VLLM_VERSION)
    with pytest.raises(ValueError, match="unrecognized arguments: --enable-turbo"):
        read_passthrough(["--enable-turbo"], None)  # no vLLM here: the recorded flags are all we know
    assert read_passthrough(["--enable-turbo"], "0.26.0+cu129").args == ["--enable-turbo"]
    # vLLM's nested-config keys and short aliases are its own business.
    assert read_passthrough(["--compilation-config.mode", "3", "-tp", "1"], None).args == [
        "--compilation-config.mode", "3", "-tp", "1"]
