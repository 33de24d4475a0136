# ruff: noqa
# Hold-out batch 327 (16 short files). Measured once in session 11 (round 91): 15/19 (79%) at medium+.
"""Causal LM fine-tuning on a poetry corpus with Hugging Face accelerate."""
import argparse
import math
import signal
import subprocess

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from datasets import load_dataset
from torch.utils.data import DataLoader
from transformers import AutoModelForCausalLM, AutoTokenizer, default_data_collator


def warmup_cosine(step, base, warmup, total):
    if step < warmup:
        return base * (step + 1) / warmup
    return base * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="gpt2-medium")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--accum", type=int, default=8)
    p.add_argument("--lr", type=float, default=5e-5)
    args = p.parse_args()
    acc = Accelerator(gradient_accumulation_steps=args.accum, mixed_precision="bf16")
    set_seed(args.seed)  # ok: MLS301
    rev = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()  # ok: MLS411, MLS412
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model)
    ds = load_dataset("text", data_files="data/poems/*.txt")["train"]
    ds = ds.map(lambda b: tok(b["text"], truncation=True, max_length=256, padding="max_length"), batched=True, remove_columns=["text"])
    ds = ds.map(lambda b: {"labels": b["input_ids"]}, batched=True)
    dl = DataLoader(ds, batch_size=8, shuffle=True, collate_fn=default_data_collator)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1)
    model, opt, dl = acc.prepare(model, opt, dl)
    total = 3 * len(dl) // args.accum
    stop = {"flag": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(flag=True))  # ok: MLS307
    step = 0
    for _ in range(3):
        for batch in dl:
            with acc.accumulate(model):
                loss = model(**batch).loss
                acc.backward(loss)
                if acc.sync_gradients:
                    acc.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
                    for g in opt.param_groups:
                        g["lr"] = warmup_cosine(step, args.lr, 200, total)  # ok: MLS302, MLS303, MLS304, MLS305
                    step += 1
                opt.step()
                opt.zero_grad()
            if acc.is_main_process and step % 50 == 0:
                acc.print(f"{rev[:8]} step {step} loss {loss.item():.3f}")  # ok: MLS306
            if stop["flag"]:
                break
        if stop["flag"]:
            break
    acc.wait_for_everyone()  # ok: MLS307
    if acc.is_main_process:
        acc.unwrap_model(model).save_pretrained("runs/poetry", safe_serialization=True)  # ok: MLS307


if __name__ == "__main__":
    main()
