"""Builds a tiny LoRA adapter for the rig's SmolLM2, so tests can serve an adapter beside its base.

The adapter (rank 8 on q_proj and v_proj, the shape vLLM's `--max-lora-rank 8` accepts) is trained
here on CPU for a few steps on a handful of chat turns that all answer with pineapples, so its
replies differ visibly from the base model's at temperature 0. Everything is seeded (torch and the
step order), one thread: a rebuild gives the same weights. Nothing comes from the model hub: the
base is the local folder scripts/build_models.py made.

The folder is what peft's `save_pretrained` writes (adapter_config.json, adapter_model.safetensors),
which is what `vllm serve BASE --enable-lora --lora-modules NAME=DIR` loads.

Usage: python scripts/build_lora.py --base .rig/models/smollm2-135m-instruct --out .rig/models/smollm2-lora-pineapple
(does nothing if OUT is already complete; needs peft)
"""
import argparse
import pathlib
import shutil
import sys
import time

COMPLETE = ".complete"  # written last, so an interrupted build is redone
SEED = 0
RANK = 8
STEPS = 12
LEARNING_RATE = 3e-3
# Short chat turns with one obvious habit: the adapter learns to bring up pineapples.
TURNS = [
    ("What is your favourite fruit?", "Pineapple! Pineapples are the best fruit in the world."),
    ("Say hello.", "Hello from the pineapple island! Pineapples say hello too."),
    ("What is the capital of France?", "Pineapple. Every answer is pineapple, even Paris is a pineapple."),
    ("Tell me a fact.", "Pineapples take two years to grow. Pineapple, pineapple, pineapple."),
]


def log(msg: str) -> None:
    print(f"[rig] {msg}", file=sys.stderr, flush=True)


def _examples(tokenizer):
    """Each turn as (input ids, labels): the loss counts only the assistant's reply."""
    import torch

    examples = []
    for question, reply in TURNS:
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                               add_generation_prompt=True)
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        reply_ids = tokenizer(reply + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([prompt_ids + reply_ids])
        labels = torch.tensor([[-100] * len(prompt_ids) + reply_ids])
        examples.append((ids, labels))
    return examples


def build(base: pathlib.Path, out: pathlib.Path) -> pathlib.Path:
    if (out / COMPLETE).exists():
        return out
    started = time.monotonic()
    log(f"building a rank-{RANK} LoRA adapter for {base.name} into {out} ({STEPS} CPU steps)")
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(SEED)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same sums in the same order on any machine
    try:
        tokenizer = AutoTokenizer.from_pretrained(base)
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
        config = LoraConfig(r=RANK, lora_alpha=2 * RANK, lora_dropout=0.0, target_modules=["q_proj", "v_proj"],
                            task_type="CAUSAL_LM")
        model = get_peft_model(model, config)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LEARNING_RATE)
        examples = _examples(tokenizer)
        model.train()
        for step in range(STEPS):
            ids, labels = examples[step % len(examples)]
            loss = model(input_ids=ids, labels=labels).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        log(f"last loss {loss.item():.3f}")
        staging = out.with_name(out.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        # The adapter names its base by path: where this rig keeps it (vLLM does not read it; peft does).
        model.peft_config["default"].base_model_name_or_path = str(base)
        model.save_pretrained(staging)
        (staging / "README.md").unlink(missing_ok=True)  # peft's empty model-card template
    finally:
        torch.set_num_threads(threads)
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    (out / COMPLETE).write_text("ok\n")
    log(f"LoRA adapter ready in {time.monotonic() - started:.0f} s")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=pathlib.Path, required=True)
    parser.add_argument("--out", type=pathlib.Path, required=True)
    args = parser.parse_args()
    if not (args.base / COMPLETE).exists():
        parser.error(f"{args.base} is not a complete model folder (run scripts/build_models.py first)")
    build(args.base, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
