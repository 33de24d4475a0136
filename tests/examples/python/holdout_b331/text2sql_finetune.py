# ruff: noqa
# Hold-out batch 331 (16 short files). Measured once in session 11 (round 92): 13/17 (76%) at medium+.
"""Fine-tune a T5 encoder-decoder for Spider-style text-to-SQL with accelerate and a manual warmup schedule."""
import argparse
import math
import os
import subprocess
import time
import urllib.request

import torch
from accelerate import Accelerator
from safetensors.torch import load_file
from torch.utils.data import DataLoader
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from spider_data import SpiderSeq2Seq  # local module


def download(url, dest, retries=5):
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(url, dest)  # ok: MLS411, MLS412
            return dest
        except OSError:
            time.sleep(min(60, 2 ** attempt))  # ok: MLS307
    raise RuntimeError(f"giving up on {url}")


def lr_at(step, base_lr, warmup, total):
    if step < warmup:
        return base_lr * (step + 1) / warmup
    return 0.5 * base_lr * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="t5-base")
    ap.add_argument("--init", default="")
    ap.add_argument("--grad-accum", type=int, default=4)
    args = ap.parse_args()
    acc = Accelerator(mixed_precision="bf16")
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()  # ok: MLS411, MLS412
    if not os.path.exists("data/tables.json"):
        download("https://example.com/spider/tables.json", "data/tables.json")
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSeq2SeqLM.from_pretrained(args.model)
    if args.init:
        model.load_state_dict(load_file(args.init), strict=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    loader = DataLoader(SpiderSeq2Seq("data/train_spider.json", tok), batch_size=8, shuffle=True)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model, opt, loader = acc.prepare(model, opt, loader)
    total = 30 * len(loader) // args.grad_accum
    step = 0
    for epoch in range(30):
        for i, batch in enumerate(loader):
            loss = model(**batch).loss / args.grad_accum  # ok: MLS302, MLS303, MLS304, MLS305
            acc.backward(loss)
            if (i + 1) % args.grad_accum:
                continue
            for g in opt.param_groups:
                g["lr"] = lr_at(step, 1e-4, 500, total)  # ok: MLS302, MLS303, MLS304, MLS305
            acc.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step(); opt.zero_grad(); step += 1
        acc.print(f"[{commit[:8]}] epoch {epoch} loss {loss.item() * args.grad_accum:.4f}")
    acc.wait_for_everyone()  # ok: MLS307
    acc.unwrap_model(model).save_pretrained("runs/t2sql", save_function=acc.save)


if __name__ == "__main__":
    main()
