"""The flags a person gives %vllm_serve for vLLM itself, made safe and current before they reach argv.

- `--host` / `--port` (and abbreviations vLLM's argparse would read as them) belong to the magic: refused.
- Secrets (`--api-key`, `--api_key=...`, `--api-k`, `--hf-token hf_...`) leave argv, where `ps` shows them to
  every user of the machine, for the environment vLLM and huggingface_hub read (VLLM_API_KEY, HF_TOKEN).
- The old `--flag true|false` spelling of vLLM's boolean flags (the seed notebook's
  `--enable-chunked-prefill false`; vLLM 0.32 says `unrecognized arguments: false`) becomes `--flag` /
  `--no-flag`, and each change is reported.
Everything else passes through in order, unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from vllm_magics.doctor.serve_flags import canonical_flag, is_boolean
from vllm_magics.doctor.serve_flags_data import VLLM_VERSION as RECORDED_VERSION

TRUE_WORDS = frozenset({"true", "yes", "on", "1"})
FALSE_WORDS = frozenset({"false", "no", "off", "0"})
# vLLM reads VLLM_API_KEY (vllm/envs.py); huggingface_hub reads HF_TOKEN for gated models.
SECRET_ENV = {"--api-key": "VLLM_API_KEY", "--hf-token": "HF_TOKEN"}
OWNED_FLAGS = ("--host", "--port")


@dataclass
class Passthrough:
    args: list[str]
    secrets: dict[str, str] = field(default_factory=dict, repr=False)  # env name -> value
    rewrites: list[tuple[str, str]] = field(default_factory=list)  # (as typed, as passed to vLLM)


def _value(extra: list[str], i: int) -> tuple[str | None, int]:
    """The value of the flag at extra[i] (`--f=v` or `--f v`) and the index after it."""
    token = extra[i]
    if "=" in token:
        return token.split("=", 1)[1], i + 1
    if i + 1 < len(extra) and not extra[i + 1].startswith("-"):
        return extra[i + 1], i + 2
    return None, i + 1


def _unknown(token: str) -> bool:
    """A `--flag` the recorded parser refuses (dotted `--a.b` keys are vLLM's nested-config syntax: left
    to it)."""
    name = token.split("=", 1)[0]
    return name.startswith("--") and len(name) > 2 and "." not in name and canonical_flag(name) is None


def read_passthrough(extra: list[str], vllm_version: str | None = None) -> Passthrough:
    """`vllm_version`: the vLLM installed beside this Python. When it is the one whose flags were recorded,
    or there is none (then the recorded flags are all we know), a flag not among them is refused here, at
    once, in vLLM's own words; another version gets the flags and says itself what it refuses."""
    unknown = [t for t in extra if _unknown(t)] if vllm_version in (None, RECORDED_VERSION) else []
    if unknown:
        raise ValueError(f"unrecognized arguments: {' '.join(unknown)} (vLLM {RECORDED_VERSION} has no such "
                         "flag; `vllm serve --help=all` lists its flags, %vllm_serve? this magic's own)")
    out = Passthrough([])
    i = 0
    while i < len(extra):
        token = extra[i]
        flag = canonical_flag(token)
        if flag in OWNED_FLAGS:
            raise ValueError(f"pass {flag} to %vllm_serve itself, not as a flag for vLLM (it needs to know it)")
        if flag in SECRET_ENV:
            value, after = _value(extra, i)
            if value is None and flag == "--hf-token":
                out.args.append(token)  # bare --hf-token: vLLM uses the stored `hf auth login` token
                i += 1
                continue
            if not value:
                raise ValueError(f"{token} needs a value")
            if flag == "--api-key" and after < len(extra) and not extra[after].startswith("-"):
                raise ValueError("--api-key: give one key (vllm_magics passes it to vLLM as VLLM_API_KEY)")
            out.secrets[SECRET_ENV[flag]] = value
            i = after
            continue
        if flag is not None and is_boolean(flag):
            inline = token.split("=", 1)[1] if "=" in token else None
            word = inline if inline is not None else (extra[i + 1] if i + 1 < len(extra) else None)
            if word is not None and word.lower() in TRUE_WORDS | FALSE_WORDS:
                new = flag if word.lower() in TRUE_WORDS else "--no-" + flag[2:]
                out.rewrites.append((token if inline is not None else f"{token} {word}", new))
                out.args.append(new)
                i += 1 if inline is not None else 2
                continue
            if inline is not None:
                raise ValueError(f"{token}: {flag} is on or off: write {flag} or --no-{flag[2:]}")
        out.args.append(token)
        i += 1
    return out
