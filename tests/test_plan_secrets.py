"""Secrets and settings in planning, as tables (issue 14): a key or token typed after `--` never reaches
argv (every user sees it in `ps`) nor the shown command; every default we choose loses to the user's own
flag or environment variable; a mask shows at most 7 characters; state files are 0600 in 0700 folders."""
from __future__ import annotations

import contextlib
import os
import stat
import sys
import time

import pytest

from vllm_magics.files import open_private, private_dir, write_json_private
from vllm_magics.redact import mask_secret
from vllm_magics.server.gpu import GpuInfo
from vllm_magics.server.manager import VllmServer
from vllm_magics.server.plan import plan_serve

T4 = GpuInfo(index=0, name="Tesla T4", memory_total_mib=15360, memory_used_mib=0, memory_free_mib=15360,
             utilization_pct=0, compute_capability=(7, 5))
KEY = "sk-typed-after-dashes-0123456789"
TOKEN = "hf_typedafterdashes0123456789abc"
GIVEN = "sk-given-to-the-magic-0123"


def shown(secret: str, text: str) -> int:
    """How many characters of `secret` the text gives away: the most that one word of it (after any `=`)
    shares with the secret as a prefix plus a suffix, or the longest stretch of the secret anywhere in it."""
    def ends(word: str) -> int:
        head = next((i for i, (a, b) in enumerate(zip(secret, word)) if a != b), min(len(secret), len(word)))
        tail = next((i for i, (a, b) in enumerate(zip(secret[::-1], word[::-1])) if a != b),
                    min(len(secret), len(word)))
        return min(len(secret), head + tail)

    stretch = max((n for n in range(len(secret), 0, -1)
                   if any(secret[i:i + n] in text for i in range(len(secret) - n + 1))), default=0)
    return max([stretch] + [ends(w.split("=", 1)[-1]) for w in text.split()])


# -- secrets typed after `--` ---------------------------------------------------------------------
SECRET_ROWS = [
    pytest.param(["--api-key", KEY], {}, KEY, id="api-key-space"),
    pytest.param([f"--api-key={KEY}"], {}, KEY, id="api-key-equals"),
    pytest.param(["--served-model-name", "m", "--api-key", KEY, "--seed", "1"], {}, KEY, id="api-key-between"),
    pytest.param(["--api-key", KEY], {"api_key": GIVEN}, KEY, id="api-key-twice"),
    pytest.param([f"--api-key={KEY}"], {"api_key": False}, KEY, id="api-key-with-no-key"),
    # vLLM's FlexibleArgumentParser reads --api_key as --api-key (it turns _ into - in flag names)
    pytest.param(["--api_key", KEY], {}, KEY, id="api_key-underscore"),
    pytest.param(["--hf-token", TOKEN], {}, TOKEN, id="hf-token-space"),
    pytest.param([f"--hf-token={TOKEN}"], {}, TOKEN, id="hf-token-equals"),
]


@pytest.mark.parametrize("extra, kwargs, secret", SECRET_ROWS)
@pytest.mark.parametrize("gpus", [[], [T4]], ids=["cpu", "t4"])
def test_a_secret_after_dashes_is_never_on_argv_nor_shown(extra, kwargs, secret, gpus):
    plan = plan_serve("m", gpus=gpus, extra_args=list(extra), environ={}, **kwargs)
    assert not any(secret in a for a in plan.argv)
    assert secret not in plan.command_line()
    assert shown(secret, plan.command_line()) <= 7
    if kwargs.get("api_key") is False:
        return  # the user asked for no key: dropping the one after `--` is all that is owed
    # the server still gets it (or, typed twice, the other one the user gave), through its environment
    assert secret in plan.env.values() or kwargs.get("api_key") in plan.env.values()


def test_the_generated_key_is_masked_in_the_shown_command():
    plan = plan_serve("m", gpus=[], environ={})
    line = plan.command_line()
    assert plan.api_key not in line and f"VLLM_API_KEY={mask_secret(plan.api_key)}" in line
    assert shown(plan.api_key, line) <= 7


@pytest.mark.parametrize("secret", ["k", "short-key", "exactly-12ch", "vm-" + "x" * 32, KEY, TOKEN])
def test_a_mask_shows_at_most_seven_characters(secret):
    assert shown(secret, mask_secret(secret)) <= 7


# -- every default loses to the user's own setting ------------------------------------------------
def _cpu(**kw):
    return plan_serve("m", gpus=[], **{"environ": {}, **kw})


def _t4(**kw):
    return plan_serve("m", gpus=[T4], **{"environ": {}, **kw})


def _no_default(plan, setting: str) -> bool:
    return not any(d.setting.startswith(setting) for d in plan.defaults)


# (the default's setting as ChosenDefault names it, the user's way to set it, the plan, the check)
OVERRIDES = [
    ("--dtype", "the magic's dtype", lambda: _t4(dtype="float32"),
     lambda p: p.argv.count("--dtype") == 1 and "float32" in p.argv and "half" not in p.argv),
    ("--dtype", "--dtype X after --", lambda: _t4(extra_args=["--dtype", "float16"]),
     lambda p: p.argv.count("--dtype") == 1 and "half" not in p.argv),
    ("--dtype", "--dtype=X after --", lambda: _t4(extra_args=["--dtype=float32"]),
     lambda p: "--dtype" not in p.argv and "half" not in p.argv),
    ("--max-model-len", "the magic's max_model_len", lambda: _t4(max_model_len=4096),
     lambda p: p.argv.count("--max-model-len") == 1 and "16384" not in p.argv and p.default_max_model_len is None),
    ("--max-model-len", "--max-model-len N after --", lambda: _t4(extra_args=["--max-model-len", "4096"]),
     lambda p: p.argv.count("--max-model-len") == 1 and "16384" not in p.argv and p.default_max_model_len is None),
    ("--max-model-len", "--max_model_len=N after --", lambda: _t4(extra_args=["--max_model_len=4096"]),
     lambda p: "--max-model-len" not in p.argv and p.default_max_model_len is None),
    ("VLLM_CPU_KVCACHE_SPACE", "the variable in the environment",
     lambda: _cpu(environ={"VLLM_CPU_KVCACHE_SPACE": "4"}), lambda p: "VLLM_CPU_KVCACHE_SPACE" not in p.env),
    ("VLLM_CPU_KVCACHE_SPACE", "--kv-cache-memory-bytes after --",
     lambda: _cpu(extra_args=["--kv-cache-memory-bytes", "1000000000"]),
     lambda p: "VLLM_CPU_KVCACHE_SPACE" not in p.env),
    ("--enforce-eager", "--enforce-eager after --", lambda: _cpu(extra_args=["--enforce-eager"]),
     lambda p: p.argv.count("--enforce-eager") == 1),
    ("--enforce-eager", "--no-enforce-eager after --", lambda: _cpu(extra_args=["--no-enforce-eager"]),
     lambda p: "--enforce-eager" not in p.argv),
    ("--enforce-eager", "--compilation-config after --",
     lambda: _cpu(extra_args=["--compilation-config", '{"level": 3}']), lambda p: "--enforce-eager" not in p.argv),
    ("--enforce-eager", "-O3 after --", lambda: _cpu(extra_args=["-O3"]), lambda p: "--enforce-eager" not in p.argv),
    ("VLLM_ENABLE_V1_MULTIPROCESSING", "the variable in the environment",
     lambda: _cpu(environ={"VLLM_ENABLE_V1_MULTIPROCESSING": "1"}),
     lambda p: "VLLM_ENABLE_V1_MULTIPROCESSING" not in p.env),
    ("OMP_WAIT_POLICY", "the variable in the environment", lambda: _cpu(environ={"OMP_WAIT_POLICY": "ACTIVE"}),
     lambda p: "OMP_WAIT_POLICY" not in p.env),
]


@pytest.mark.parametrize("setting, how, make, check", OVERRIDES, ids=[f"{s} by {h}" for s, h, _, _ in OVERRIDES])
def test_every_default_loses_to_the_users_setting(setting, how, make, check):
    plan = make()
    assert check(plan), plan.argv
    assert _no_default(plan, setting), plan.defaults  # and we do not claim to have chosen it


def test_every_default_we_choose_has_a_row_above():
    # A new default without a way for the user to win (and a row that shows it) fails here.
    chosen = {d.setting.split()[0].split("=")[0] for d in _cpu().defaults + _t4().defaults}
    assert chosen == {s for s, _, _, _ in OVERRIDES}
    # and without the user's setting, each one is chosen (the rows above are not vacuous)
    cpu, t4 = _cpu(), _t4()
    assert cpu.env["VLLM_CPU_KVCACHE_SPACE"] == "1" and cpu.env["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
    assert cpu.env["OMP_WAIT_POLICY"] == "PASSIVE"
    assert "--enforce-eager" in cpu.argv
    assert t4.argv[t4.argv.index("--dtype") + 1] == "half" and t4.default_max_model_len == 16384


# -- state files ----------------------------------------------------------------------------------
@contextlib.contextmanager
def umask(value: int):
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.mark.parametrize("mask", [0o000, 0o022, 0o077], ids=["umask-000", "umask-022", "umask-077"])
def test_private_folders_are_0700_and_state_files_0600(tmp_path, mask):
    with umask(mask):
        folder = private_dir(tmp_path / "home" / "servers" / "8000")
        write_json_private(folder / "server.json", {"api_key": KEY})
        write_json_private(folder / "server.json", {"api_key": KEY + "2"})  # rewritten in place
    for made in (tmp_path / "home", tmp_path / "home" / "servers", folder):
        assert mode(made) == 0o700, made
    assert mode(folder / "server.json") == 0o600
    assert sorted(os.listdir(folder)) == ["server.json"]  # no temporary file left behind


def test_a_started_servers_state_files_are_private(tmp_path):
    # A real supervised process stands in for vLLM (what it runs does not matter to the files written).
    plan = plan_serve("m", gpus=[], environ={}, port=8399,
                      vllm_command=[sys.executable, "-c", "print('up', flush=True); import time; time.sleep(300)"])
    server = VllmServer(plan, tmp_path / "vm-home", shutdown_wait=5)
    with umask(0o000):
        server.start()
    try:
        # the supervisor writes state.json before it copies the child's first line into the log
        while "up" not in server.log_tail():
            assert server.is_alive(), server.log_tail()
            time.sleep(0.05)
        assert mode(server.dir / "state.json") == 0o600  # the supervisor's record (pid, exit code)
        assert mode(tmp_path / "vm-home") == 0o700 and mode(server.dir) == 0o700
        assert mode(server.dir / "server.json") == 0o600
        assert mode(server.dir / "server.log") == 0o600  # a key printed by a plugin would land there
        assert plan.api_key in (server.dir / "server.json").read_text()  # what makes it a secret
    finally:
        server.stop(now=True)
    assert mode(server.dir / "server.json") == 0o600


def test_a_planted_symlink_is_never_written_through(tmp_path):
    """A link where a private file or write_json_private's temporary file will be must not send the
    key to the link's target."""
    target = tmp_path / "elsewhere"
    target.write_text("")
    folder = private_dir(tmp_path / "home")
    (folder / f"server.json.{os.getpid()}.tmp").symlink_to(target)
    write_json_private(folder / "server.json", {"api_key": KEY})
    assert target.read_text() == "" and KEY in (folder / "server.json").read_text()
    (folder / "server.log").symlink_to(target)
    with pytest.raises(OSError):
        open_private(folder / "server.log", append=True)
    assert target.read_text() == ""


def test_an_existing_log_is_made_private_and_kept(tmp_path):
    log = tmp_path / "server.log"
    log.write_text("earlier run\n")
    os.chmod(log, 0o644)
    with os.fdopen(open_private(log, append=True), "a") as f:
        f.write("this run\n")
    assert mode(log) == 0o600 and log.read_text() == "earlier run\nthis run\n"
