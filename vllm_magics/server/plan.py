"""From "serve this model" to the exact `vllm serve` command: GPU-aware defaults, each with a reason.

Pure functions (no processes started) so `--dry-run`, the tests and the docs see exactly what would run.
"""
from __future__ import annotations

import dataclasses
import os
import secrets
import shlex
import shutil
import sys
from dataclasses import dataclass, field

from vllm_magics.doctor.gpu_defaults import gpu_settings
from vllm_magics.doctor.passthrough import SECRET_ENV, read_passthrough
from vllm_magics.redact import mask_secret
from vllm_magics.server.gpu import GpuInfo

# The seed notebook's Colab flags: a 1.5B model's KV cache for 16k tokens fits a 15 GB T4 in half
# precision. Lowered automatically when vLLM says the GPU (or the model) cannot hold it.
GPU_DEFAULT_MAX_MODEL_LEN = 16384
CPU_KVCACHE_SPACE_GIB = "1"

# Environment variables that hold secrets: shown masked, never whole.
SECRET_ENV_NAMES = tuple(SECRET_ENV.values())
_LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class ChosenDefault:
    """A setting vllm_magics chose because the user did not: shown to them with its reason."""

    setting: str  # "--dtype half" or "VLLM_CPU_KVCACHE_SPACE=1"
    reason: str


@dataclass
class ServePlan:
    model: str
    host: str
    port: int
    argv: list[str]
    # What the server gets on top of os.environ; it may hold VLLM_API_KEY and HF_TOKEN, so the repr (shown
    # when a notebook displays the plan) leaves it and the key out.
    env: dict[str, str] = field(repr=False)
    api_key: str | None = field(repr=False)
    defaults: list[ChosenDefault] = field(default_factory=list)
    default_max_model_len: int | None = None  # set when --max-model-len is our default (may be lowered)
    notes: list[str] = field(default_factory=list)  # warnings for the card (a key crossing plain http...)

    @property
    def base_url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    def command_line(self) -> str:
        """The command as a shell line; the key travels in the environment, never on the command line."""
        shown_env = [f"{k}={mask_secret(v) if k in SECRET_ENV_NAMES else v}" for k, v in self.env.items()]
        return " ".join(shown_env + [shlex.quote(a) for a in self.argv])

    def record_env(self) -> dict[str, str]:
        """The environment to write into server.json: the HF token stays out (adoption never needs it)."""
        return {k: v for k, v in self.env.items() if k != "HF_TOKEN"}

    def with_max_model_len(self, value: int) -> "ServePlan":
        """The same plan with our --max-model-len default lowered to `value` (what vLLM said fits)."""
        argv = list(self.argv)
        i = argv.index("--max-model-len")
        old, argv[i + 1] = argv[i + 1], str(value)
        defaults = [ChosenDefault(f"--max-model-len {value}", f"{old} did not fit; {value} is what vLLM said fits")
                    if d.setting.startswith("--max-model-len") else d for d in self.defaults]
        return dataclasses.replace(self, argv=argv, env=dict(self.env), defaults=defaults,
                                   default_max_model_len=None, notes=list(self.notes))


def resolve_vllm_command(command: list[str] | None) -> list[str]:
    """["vllm"] as given, unless `vllm` is not on PATH but sits beside this Python: a kernel run from
    a virtualenv often has the env's bin folder missing from PATH."""
    command = list(command or ["vllm"])
    if command == ["vllm"] and shutil.which("vllm") is None:
        sibling = os.path.join(os.path.dirname(sys.executable), "vllm")
        if os.access(sibling, os.X_OK):
            return [sibling]
    return command


def new_api_key() -> str:
    return "vm-" + secrets.token_urlsafe(24)


def _flag_given(args: list[str], flag: str) -> bool:
    stem = flag.lstrip("-")
    for a in args:
        # A value is not a flag: `--served-model-name dtype` does not give --dtype. vLLM accepts
        # --max_model_len as well as --max-model-len, and --no-X for booleans.
        if a.startswith("-") and a.lstrip("-").split("=")[0].replace("_", "-") in (stem, "no-" + stem):
            return True
    return False


def check_port(port) -> int:
    """A TCP port number, or ValueError in plain words (0 would mean "any port" to the OS, not 8000)."""
    try:
        value = int(port)
    except (TypeError, ValueError):
        raise ValueError(f"--port {port!r}: a port is a number from 1 to 65535") from None
    if not 1 <= value <= 65535:
        raise ValueError(f"--port {port}: a port is a number from 1 to 65535 (a taken port moves on to the "
                         "next free one by itself)")
    return value


def _respelled(typed: str, new: str) -> ChosenDefault:
    name = new[5:] if new.startswith("--no-") else new[2:]
    return ChosenDefault(new, f"you wrote `{typed}`: vLLM's on/off flags are --{name} / --no-{name} now "
                         "(it refuses `true`/`false` after them)")


def _exposure_notes(host: str, port: int, api_key: str | None) -> list[str]:
    if host in _LOCAL_HOSTS or host.startswith("127."):
        return []
    if api_key:
        return [f"--host {host}: other machines can reach this server, and its API key would cross the network "
                "in plain http:// that anyone on the way can read; keep --host 127.0.0.1 and share it with "
                "a tunnel (https) instead."]
    return [f"--host {host} without an API key: anyone who can reach this machine on port {port} can use "
            "this server (and its GPU)."]


def plan_serve(
    model: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    dtype: str | None = None,
    max_model_len: int | str | None = None,
    gpu_memory_utilization: float | None = None,
    api_key: str | None | bool = None,
    extra_args: list[str] | None = None,
    gpus: list[GpuInfo] | None = None,
    vllm_command: list[str] | None = None,
    environ: dict[str, str] | None = None,
    vllm_version: str | None = None,
    lora: list[str] | None = None,
) -> ServePlan:
    """Build the command. `api_key`: None generates one, False serves without a key, a string is used.
    `vllm_version`: the vLLM that will run (default: the one installed beside this Python), for the
    settings that differ between versions and to refuse at once a flag that version does not have.

    `gpus` is what nvidia-smi reported ([] = no GPU: CPU settings). `lora`: adapters to serve beside the
    model, each "NAME=PATH_OR_REPO" (server/lora.py chooses the flags vLLM needs for them).
    """
    if not model or model.startswith("-"):
        raise ValueError("which model? e.g. Qwen/Qwen2.5-0.5B-Instruct")
    environ = os.environ if environ is None else environ
    gpus = gpus or []
    port = check_port(port)
    # Owned flags refused, secrets moved off argv (`ps` shows argv to every user), old `--flag false` updated.
    if vllm_version is None:
        from vllm_magics.doctor.platform import installed_version

        vllm_version = installed_version("vllm")
    passthrough = read_passthrough(list(extra_args or []), vllm_version)
    extra = passthrough.args
    key_in_extra = passthrough.secrets.get("VLLM_API_KEY")
    if key_in_extra and api_key in (None, True):
        api_key = key_in_extra
    if api_key is None or api_key is True:
        api_key = new_api_key()
    elif api_key is False or api_key == "":
        api_key = None

    argv = resolve_vllm_command(vllm_command) + ["serve", model, "--host", host, "--port", str(port)]
    # Log lines arrive as they happen (live progress), and without colour codes: the log is a file,
    # and Jupyter kernels set FORCE_COLOR for their children.
    env: dict[str, str] = {"PYTHONUNBUFFERED": "1", "VLLM_LOGGING_COLOR": "0"}
    if "HF_TOKEN" in passthrough.secrets:
        env["HF_TOKEN"] = passthrough.secrets["HF_TOKEN"]
    defaults = [_respelled(typed, new) for typed, new in passthrough.rewrites]
    notes: list[str] = []
    default_len = None

    def given(flag: str) -> bool:
        return _flag_given(extra, flag)

    if dtype:
        argv += ["--dtype", dtype]
    if max_model_len not in (None, ""):
        argv += ["--max-model-len", str(max_model_len)]
    if gpu_memory_utilization is not None:
        argv += ["--gpu-memory-utilization", str(gpu_memory_utilization)]

    if gpus:
        gpu = gpus[0]
        if not dtype and not given("--dtype") and not gpu.supports_bfloat16:
            argv += ["--dtype", "half"]
            cc = ".".join(map(str, gpu.compute_capability or ()))
            defaults.append(ChosenDefault("--dtype half", f"{gpu.name} has compute capability {cc}; "
                                          "bfloat16 needs 8.0 or newer"))
        tuned = gpu_settings(gpu, vllm_version, extra, given, environ, gpu_memory_utilization)
        extra = tuned.extra
        argv += tuned.argv
        defaults += [ChosenDefault(setting, reason) for setting, reason in tuned.defaults]
        notes += tuned.notes
        if max_model_len in (None, "") and not given("--max-model-len"):
            default_len = GPU_DEFAULT_MAX_MODEL_LEN
            argv += ["--max-model-len", str(default_len)]
            defaults.append(ChosenDefault(f"--max-model-len {default_len}",
                                          "keeps the KV cache within a free Colab GPU; lowered automatically "
                                          "if vLLM says the GPU or the model cannot hold it"))
    else:
        if "VLLM_CPU_KVCACHE_SPACE" not in environ and not given("--kv-cache-memory-bytes"):
            env["VLLM_CPU_KVCACHE_SPACE"] = CPU_KVCACHE_SPACE_GIB
            defaults.append(ChosenDefault(f"VLLM_CPU_KVCACHE_SPACE={CPU_KVCACHE_SPACE_GIB}",
                                          "no GPU: vLLM's CPU backend needs a KV-cache size in GiB"))
        if "OMP_WAIT_POLICY" not in environ:
            # OpenMP's threads spin between steps by default: on cores shared with the notebook's kernel (or
            # another server) the spinning takes the CPU the next step needs (bench/cpu_wait_policy.py).
            env["OMP_WAIT_POLICY"] = "PASSIVE"
            defaults.append(ChosenDefault("OMP_WAIT_POLICY=PASSIVE",
                                          "no GPU: vLLM's CPU threads wait without spinning, so a server that "
                                          "shares its cores stays fast (2 to 5x faster beside two busy processes)"))
        if not given("--enforce-eager") and not given("--compilation-config") and not any(
                a.startswith("-cc") or a.startswith("-O") for a in extra):
            argv.append("--enforce-eager")
            defaults.append(ChosenDefault("--enforce-eager", "no GPU: skipping torch.compile makes a CPU "
                                          "server ready about 3x sooner (25 s instead of 75 s)"))
            if "VLLM_ENABLE_V1_MULTIPROCESSING" not in environ:
                env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
                defaults.append(ChosenDefault("VLLM_ENABLE_V1_MULTIPROCESSING=0",
                                              "no GPU: one engine process starts faster and uses less memory"))
    if lora:
        from vllm_magics.server.lora import lora_flags, parse_adapter

        adapters = lora_flags([parse_adapter(spec) for spec in lora], given, on_cpu=not gpus)
        argv += adapters.argv
        defaults += [ChosenDefault(setting, reason) for setting, reason in adapters.defaults]
        notes += adapters.notes
    argv += extra
    if lora:
        draft = ServePlan(model, host, port, argv, {}, None)
        clash = served_model_name(draft)
        if clash in adapter_names(draft):  # vLLM would serve both under one name: a request could not say which it means
            raise ValueError(f"--lora {clash}=...: the adapter's name is the served model's name; give it another")
    if api_key:
        # vLLM reads VLLM_API_KEY: unlike --api-key it shows neither in `ps` nor in its
        # "non-default args" log line.
        env["VLLM_API_KEY"] = api_key
    return ServePlan(model, host, port, argv, env, api_key, defaults, default_len,
                     notes + _exposure_notes(host, port, api_key))



def served_model_name(plan: ServePlan) -> str:
    """The name clients must send: the first --served-model-name if given, else the model argument."""
    argv = plan.argv
    for i, a in enumerate(argv):
        if a == "--served-model-name" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--served-model-name="):
            return a.split("=", 1)[1].split()[0]
    return plan.model


def adapter_names(plan: ServePlan) -> list[str]:
    """The LoRA adapters the plan's command serves (by the name clients send)."""
    from vllm_magics.server.lora import lora_names

    return lora_names(plan.argv)
