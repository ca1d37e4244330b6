r"""The table of known `vllm serve` failures that `diagnose` matches, most specific first.

Each rule is a few regexes written against real vLLM output (tests/fixtures/vllm_logs) and the advice
to give, fixed or computed from values in the log. Every pattern must stay linear on any input: start
with a literal where possible (re then skips to it fast), and never put an unbounded repeat before a
literal that may be missing (`\S+ is not ...` tries every start of a long line: quadratic).
Stdlib only.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from vllm_magics.doctor.flag_errors import REJECTED_FLAG_RULE

EVIDENCE_MAX = 300


@dataclass(frozen=True)
class Rule:
    """One known failure. `summary` and `fix` are each a fixed string or a function
    (groups, log_text) -> str, for text that quotes values from the match or from elsewhere in the log."""

    key: str
    patterns: tuple  # regex sources; the first that matches is the evidence, all fill in groups
    summary: object  # str, or (groups, log) -> str
    fix: object
    suppressed_by: tuple = ()  # keys that, when also found, make this rule redundant
    exit_codes: tuple = ()  # exit codes that alone are enough evidence


# ---------------------------------------------------------------- helpers used by the fixes


def _num(s: str | None) -> float | None:
    try:
        return float(s)
    except (TypeError, ValueError):  # no such group (None), or digits and dots that are no number
        return None


def _log_port(log: str) -> str | None:
    """The port vLLM was asked to use, from its own start-up lines."""
    m = (re.search(r"error while attempting to bind on address \([^)]*?(\d+)\)", log)
         or re.search(r"'port': (\d+)", log)
         or re.search(r"port=(\d+)", log)
         or re.search(r"--port[ =](\d+)", log))
    return m.group(1) if m else None


def _log_model(log: str) -> str | None:
    """The model vLLM was asked to serve, from its own start-up lines."""
    m = re.search(r"'model': '([^']+)'", log) or re.search(r"\bmodel='([^']+)'", log)
    return m.group(1) if m else None


def _looks_cpu(log: str) -> bool:
    return bool(re.search(r"cpu_worker\.py|CPU KV cache|detected platform cpu|on the CPU backend|VLLM_CPU_", log))


def _root_cause(log: str, before: int) -> str | None:
    """The last `SomethingError: message` line before position `before` that is not itself a
    generic engine-death line: what vLLM means by "See root cause above"."""
    generic = re.compile(r"EngineDeadError|Engine core initialization failed|Engine process failed to start"
                         r"|EngineCore failed to start|Engine core proc|EngineCore encountered")
    found = None
    # `[^\]\n]*\] ` takes only the first "] " of a line (vLLM's prefix): a lazy `.*?\] ` would retry the
    # rest after every "] " of a long line, which is quadratic.
    for m in re.finditer(r"^(?:[^\]\n]*\] )?\s*((?:[\w.]+\.)?\w*(?:Error|Exception)\b:? .+)$", log[:before], re.M):
        text = m.group(1).strip()
        if generic.search(text):
            continue
        found = text
    return found


_NOT_LOCAL = "is not a local folder and is not a valid model identifier"  # transformers' message


def _word_before(log: str, literal: str) -> str | None:
    """The word just before the first `literal` in the log (linear: one find, one backward scan)."""
    at = log.find(" " + literal)
    if at <= 0:
        return None
    start = max(log.rfind(c, 0, at) for c in " \t\n") + 1
    return log[start:at] or None


def _trim(text: str, limit: int = EVIDENCE_MAX) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


# ---------------------------------------------------------------- fixes that compute something


def _fix_port(g: dict, log: str) -> str:
    port = _log_port(log)
    which = f"Port {port} is" if port else "The port is"
    other = str(int(port) + 1) if port else "8001"
    return (f"{which} already taken, often by a vLLM server started earlier in this notebook. Stop that "
            f"server first (or restart the runtime), or start on another port, e.g. `--port {other}`. "
            f"To see who holds it: `!lsof -i :{port or 8000}` or `!fuser {port or 8000}/tcp`.")


def _fix_kv_cache(g: dict, log: str) -> str:
    est = g.get("estimated")
    tokens = g.get("tokens")
    want = g.get("want")
    if est:
        first = (f"Start again with `--max-model-len {est}`: vLLM estimates that is the longest context "
                 f"that fits in the memory left for the KV cache.")
    elif tokens:
        first = (f"Start again with `--max-model-len {tokens}` (or lower): the KV cache holds only "
                 f"{tokens} tokens, fewer than the {want} you asked for.")
    else:
        needed, avail = _num(g.get("needed")), _num(g.get("avail"))
        guess = None
        if want and needed and avail and needed > 0:
            guess = int(int(want) * avail / needed) // 256 * 256
        if guess and guess >= 256:
            first = (f"Start again with a smaller `--max-model-len`: about {guess} fits "
                     f"({avail:g} GiB available of the {needed:g} GiB needed for {want} tokens), "
                     f"e.g. `--max-model-len {guess}`.")
        else:
            first = "Start again with a smaller `--max-model-len`, e.g. `--max-model-len 4096` or 2048."
    more = ("Or leave more memory for the KV cache: raise `--gpu-memory-utilization` (e.g. 0.95), "
            "use `--enforce-eager`, or pick a smaller / quantized model.")
    if _looks_cpu(log):
        more += " On the CPU build, give the KV cache more RAM with `VLLM_CPU_KVCACHE_SPACE=<GiB>`."
    return f"{first} {more}"


def _fix_max_len_model(g: dict, log: str) -> str:
    derived = g.get("derived")
    n = int(float(derived)) if derived else None
    if n:
        return (f"Use at most the model's own limit: `--max-model-len {n}` (or leave `--max-model-len` out "
                f"and vLLM uses {n}). Going beyond it needs `VLLM_ALLOW_LONG_MAX_MODEL_LEN=1` and usually "
                f"gives poor output.")
    return ("Lower `--max-model-len` to the model's own limit (max_position_embeddings in its config.json), "
            "or leave `--max-model-len` out.")


def _fix_gpu_in_use(g: dict, log: str) -> str:
    free, total = _num(g.get("free")), _num(g.get("total"))
    util = int(free / total * 0.9 * 100) / 100 if free and total else 0
    text = ("Another process holds GPU memory, usually a vLLM server (or a model) loaded earlier in this "
            "runtime: stop it, or free everything with Runtime > Restart session (check with `!nvidia-smi`).")
    if util >= 0.05:
        text += (f" Or ask for less: `--gpu-memory-utilization {util:.2f}` "
                 f"({free:g} of {total:g} GiB are free).")
    return text


def _fix_cpu_space_too_large(g: dict, log: str) -> str:
    free = _num(g.get("free"))
    pick = max(1, int(free // 2)) if free else 1
    have = f" (only {free:g} GiB are free)" if free else ""
    return (f"Ask for a KV cache that fits in free RAM{have}: set `VLLM_CPU_KVCACHE_SPACE={pick}` (whole GiB) "
            f"or a smaller `--kv-cache-memory-bytes`, or close other memory-hungry processes.")


def _fix_engine(g: dict, log: str) -> str:
    cause = _root_cause(log, g.get("_start", len(log)))
    head = (f"vLLM's own error above it says: `{_trim(cause, 200)}`. " if cause else
            "Scroll up to the first error in the log: that is the real cause. ")
    return (head + "Check the model id, `--dtype`, `--max-model-len` and memory settings against it; "
            "`--enforce-eager` rules out CUDA-graph problems. If the log shows no error, run the same "
            "`!vllm serve ...` command in a cell to see its whole output.")


def _fix_hub_offline(g: dict, log: str) -> str:
    model = _log_model(log) or "<org/name>"
    if re.search(r"outgoing traffic has been disabled|HF_HUB_OFFLINE", log):
        first = ("`HF_HUB_OFFLINE` is set, so nothing is downloaded: unset it for the first start "
                 "(`os.environ.pop('HF_HUB_OFFLINE')`), ")
    else:
        first = ("Check the runtime's internet connection (and `HF_ENDPOINT`, if you set it) and try again, ")
    return (first + f"or download the model beforehand (`!hf download {model}`), or pass a local model "
            "folder. Also check the model id's spelling.")


def _fix_model_not_found(g: dict, log: str) -> str:
    path = g.get("path")
    if path and path.startswith(("/", ".", "~")):
        return (f"`{path}` is not an existing folder: check the path (`!ls {path}`); a local model folder "
                f"must contain config.json and the weights. For a hub model use its id, `org/name`.")
    model = _word_before(log, _NOT_LOCAL) or g.get("model") or path
    what = f"`{model}`" if model else "the model id"
    return (f"Check the spelling of {what} on https://huggingface.co/models (ids look like "
            f"`Qwen/Qwen2.5-0.5B-Instruct`, case matters). If it is a private repo, set `HF_TOKEN`.")


# ---------------------------------------------------------------- the table, most specific first

RULES: tuple[Rule, ...] = (
    Rule(**REJECTED_FLAG_RULE),  # vLLM's argparse refused the command line (exit 2, one line)
    Rule(
        key="vllm_not_installed",
        patterns=(
            # A literal first (fast to find); the lookbehind stands in for \b before it.
            r"vllm(?<!\wvllm): (?:command )?not found",
            r"No module named '?vllm'?(?![\w.])",
            r"\[Errno 2\] No such file or directory: '(?:[^']*/)?vllm'",
        ),
        exit_codes=(127,),
        summary="The `vllm` program is not installed in this Python environment.",
        fix=('Install it, then start the server again: on Colab run `!pip install "vllm_magics[vllm]"` '
             "(vllm_magics' [vllm] extra; `!pip install vllm` does the same). If pip replaced torch, "
             "restart the session (Runtime > Restart session) before starting the server."),
    ),
    Rule(
        key="no_gpu",
        patterns=(
            r"Failed to infer device type",
            r"No CUDA GPUs are available",
            r"Found no NVIDIA driver on your system",
            r"libcuda\.so(?:\.1)?: cannot open shared object file",
        ),
        summary="vLLM found no GPU to run on.",
        fix=("On Colab: Runtime > Change runtime type > T4 GPU, then run the notebook again (the runtime "
             "restarts, so reinstall packages). Check with `!nvidia-smi`."),
    ),
    Rule(
        key="bf16_unsupported_gpu",
        patterns=(
            r"Bfloat16 is only supported on GPUs with compute capability of at least 8\.0\."
            r"(?: Your (?P<gpu>[^\n]{1,80}?) GPU has compute capability (?P<cc>\d+(?:\.\d+)?))?",
        ),
        summary=lambda g, log: (
            f"The model wants bfloat16, which your {g['gpu']} (compute capability {g['cc']}) cannot run."
            if g.get("gpu") else "The model wants bfloat16, which this GPU cannot run."),
        fix=("Start again with `--dtype half` (float16; the T4 supports it). "
             "`--dtype float32` also works but needs twice the memory."),
    ),
    Rule(
        key="port_in_use",
        patterns=(
            r"\[Errno 98\] Address already in use",
            r"error while attempting to bind on address",
            r"ddress(?<=[Aa]ddress) already in use",  # a literal first: re skips to it fast
        ),
        summary="The server could not listen on its port because something else already uses it.",
        fix=_fix_port,
    ),
    Rule(
        key="model_not_found",
        patterns=(
            r"Repo id must be in the form 'repo_name' or 'namespace/repo_name': '(?P<path>[^']+)'",
            # The model id is the word before it, found by _word_before (a pattern `(?P<model>\S+) is not`
            # restarts at every character of a long line without spaces: quadratic).
            _NOT_LOCAL,
            r"RepositoryNotFoundError",
            # The hub's API URL (.../api/models/ID/revision/...) and a file URL (.../ID/resolve/...); an id
            # may lack its namespace.
            r"Repository Not Found for url: \S*?huggingface\.co/api/models/(?P<model>[\w.-]+(?:/[\w.-]+)?)/revision/",
            r"Repository Not Found for url: \S*?huggingface\.co/(?!api/)(?P<model>[\w.-]+/[\w.-]+)/",
            r"Repository Not Found for url",
            r"Invalid repository ID or local directory specified: '(?P<path>[^']+)'",
        ),
        summary="The model could not be found: the local folder does not exist or the hub id is wrong.",
        fix=_fix_model_not_found,
    ),
    Rule(
        key="gated_model",
        patterns=(
            r"You are trying to access a gated repo",
            r"GatedRepoError",
            r"Cannot access gated repo",
            r"Access to model (?P<model>[\w.-]+/[\w.-]+) is restricted",
            r"have access to it at https://huggingface\.co/(?P<model>[\w.-]+/[\w.-]+?)\.?(?=\s|$)",
            r"(?:401|403) Client Error: \w+ for url: \S*?huggingface\.co/api/models/(?P<model>[\w.-]+/[\w.-]+)/",
            r"(?:401|403) Client Error: \w+ for url: \S*?huggingface\.co/(?!api/)(?P<model>[\w.-]+/[\w.-]+)/",
            r"(?:401|403) Client Error",
        ),
        suppressed_by=("model_not_found",),
        summary="The model is gated or private on the Hugging Face hub and this runtime has no token that may read it.",
        fix=lambda g, log: (
            (f"Open https://huggingface.co/{g['model']} and accept its licence/terms with your account, "
             if g.get("model") else "Accept the model's licence/terms on its hub page, ")
            + "create a read token at https://huggingface.co/settings/tokens and give it to the server: on "
              "Colab add a secret named `HF_TOKEN` (key icon in the left bar, allow notebook access), or set "
              "`os.environ['HF_TOKEN'] = '<token>'` before starting. Or pick an ungated model."),
    ),
    Rule(
        key="hub_offline",
        patterns=(
            r"Cannot find an appropriate cached snapshot folder",
            r"We couldn't connect to '(?P<endpoint>[^']+)' to load",
            r"LocalEntryNotFoundError",
            r"outgoing traffic has been disabled",
            r"couldn't find them in the cached files",
        ),
        summary="The model is not downloaded yet and the hub cannot be reached (offline mode or no network).",
        fix=_fix_hub_offline,
    ),
    Rule(
        key="max_model_len_above_model",
        patterns=(
            r"User-specified max_model_len \((?P<want>\d+)\) is greater than the derived max_model_len "
            r"\((?P<derived_key>\w+)=(?P<derived>[\d.]+)",
            r"User-specified max_model_len \((?P<want>\d+)\) is greater than the derived max_model_len",
        ),
        summary="`--max-model-len` is longer than the model's own maximum context length.",
        fix=_fix_max_len_model,
    ),
    Rule(
        key="max_model_len_above_kv_cache",
        patterns=(
            r"max seq len \((?P<want>\d+)\).{0,300}?the estimated maximum model length is (?P<estimated>\d+)",
            r"the estimated maximum model length is (?P<estimated>\d+)",
            r"max seq len \((?P<want>\d+)\) is larger than the maximum number of tokens that can be stored "
            r"in KV cache \((?P<tokens>\d+)\)",
            r"max seq len \((?P<want>\d+)\), \((?P<needed>[\d.]+) GiB KV cache is needed, which is larger "
            r"than the available KV cache memory \((?P<avail>[\d.]+) GiB\)",
        ),
        summary="The KV cache is too small for one request of the full `--max-model-len`.",
        fix=_fix_kv_cache,
    ),
    Rule(
        key="no_kv_cache_memory",
        patterns=(r"No available memory for the cache blocks",),
        summary="No memory was left for the KV cache after loading the model.",
        fix=lambda g, log: (
            "Set `VLLM_CPU_KVCACHE_SPACE` to a whole number of GiB, e.g. `VLLM_CPU_KVCACHE_SPACE=1` "
            "(0 leaves no room), or raise `--gpu-memory-utilization` (on CPU it is the share of RAM)."
            if _looks_cpu(log) else
            "Raise `--gpu-memory-utilization` (e.g. 0.9-0.95), free the GPU from other processes "
            "(Runtime > Restart session), or use a smaller / quantized model."),
    ),
    Rule(
        key="cpu_kvcache_space_too_large",
        patterns=(
            r"Available memory on node \d+ \((?P<free>[\d.]+)/(?P<total>[\d.]+) GiB\) on kv cache allocation is "
            r"less than requested memory for kv \((?P<req>[\d.]+) GiB\)",
        ),
        summary="The KV cache size asked for (VLLM_CPU_KVCACHE_SPACE / --kv-cache-memory-bytes) is more than the free RAM.",
        fix=_fix_cpu_space_too_large,
    ),
    Rule(
        key="cpu_kvcache_space_missing",
        patterns=(
            r"Available memory on node \d+ \((?P<free>[\d.]+)/(?P<total>[\d.]+) GiB\) on startup is less than "
            r"desired CPU memory utilization \((?P<util>[\d.]+), (?P<want>[\d.]+) GiB\)",
            r"on kv cache allocation is less than requested memory for kv \((?P<req>-?[\d.]+)/(?P<reqtotal>[\d.]+) GiB\)",
        ),
        summary=("vLLM's CPU build tried to size its KV cache from a share of all RAM "
                 "(VLLM_CPU_KVCACHE_SPACE not set) and that memory is not free."),
        fix=("Give the KV cache a fixed size instead: set `VLLM_CPU_KVCACHE_SPACE=1` (GiB; 1-4 is plenty "
             "for small models) in the server's environment, or lower `--gpu-memory-utilization` "
             "(on CPU it is the share of RAM), e.g. `--gpu-memory-utilization 0.5`."),
    ),
    Rule(
        key="gpu_memory_in_use",
        patterns=(
            r"Free memory on device(?: \S+)? \((?P<free>[\d.]+)/(?P<total>[\d.]+) GiB\) on startup is less than",
        ),
        summary="Not enough GPU memory is free at start-up: something else is already using the GPU.",
        fix=_fix_gpu_in_use,
    ),
    Rule(
        key="cuda_out_of_memory",
        patterns=(
            r"CUDA out of memory\.(?: Tried to allocate (?P<tried>[\d.]+ [KMG]iB))?",
            r"torch\.(?:cuda\.)?OutOfMemoryError",
            r"CUDA (?:driver )?error: out of memory",
        ),
        summary="The GPU ran out of memory while loading or warming up the model.",
        fix=("Ask for less: `--max-model-len 4096` (or 2048) and `--gpu-memory-utilization 0.85`, add "
             "`--enforce-eager` (no CUDA-graph memory), or use a smaller or quantized (AWQ/GPTQ) model; a T4 "
             "has 15 GB. If a server or model from earlier in this runtime still holds the GPU (see "
             "`!nvidia-smi`), stop it or restart the session (Runtime > Restart session)."),
    ),
    Rule(
        key="killed",
        patterns=(r"Killed(?<![^\n]Killed)$",),  # "Killed" alone on its line; the literal first
        exit_codes=(-9, 137),
        summary="The server was killed (SIGKILL) while starting, usually because the machine ran out of RAM.",
        fix=("Load something smaller: a smaller or quantized model, a lower `--max-model-len`, and on the CPU "
             "build a smaller `VLLM_CPU_KVCACHE_SPACE`. Check free RAM with `!free -h`; a Colab runtime has "
             "about 12 GB."),
    ),
    Rule(
        key="engine_died",
        patterns=(
            r"Engine core initialization failed",
            r"EngineCore failed to start",
            r"Engine process failed to start",
            r"EngineDeadError",
            r"EngineCore encountered an issue",
            r"Engine core proc \S+ died unexpectedly",
            r"ngine(?<=[Ee]ngine) (?:core )?process (?:has )?died",
        ),
        summary="vLLM's engine process stopped; the real error is earlier in the log.",
        fix=_fix_engine,
    ),
)
