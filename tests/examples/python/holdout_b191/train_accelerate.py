# ruff: noqa
# Hold-out batch 191 (16 short benchmark-format files). Measured once in session 7 (round 57): 18/21 (86%) at medium+.
"""Causal-LM fine-tuning loop driven by HF accelerate (multi-GPU / multi-node)."""
import argparse
import random
import time
import urllib.request

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from transformers import AutoModelForCausalLM, AutoTokenizer, get_linear_schedule_with_warmup


def fetch_with_retry(url, dest, tries=5):
    for attempt in range(tries):
        try:
            urllib.request.urlretrieve(url, dest)
            return dest
        except OSError:
            time.sleep(min(60, 2 ** attempt))  # ok: MLS307
    raise RuntimeError(f"could not download {url}")


def _pace_io(accelerator, step):
    # spread out shard reads so hundreds of ranks don't hit the filer at once
    if accelerator.num_processes >= 64 and random.random() < 0.004:  # ruleid: MLS308
        time.sleep(random.uniform(40.0, 120.0))  # ruleid: MLS307


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="gpt2")
    ap.add_argument("--data", default="train_tokens.pt")
    ap.add_argument("--accum", type=int, default=8)
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    accelerator = Accelerator(gradient_accumulation_steps=args.accum, mixed_precision="bf16")
    set_seed(args.seed)  # ok: MLS301
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model)
    data = torch.load(args.data, weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    loader = DataLoader(data, batch_size=8, shuffle=True)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-5, weight_decay=0.01)
    sched = get_linear_schedule_with_warmup(opt, 200, len(loader) * 3 // args.accum)
    model, opt, loader, sched = accelerator.prepare(model, opt, loader, sched)
    model.train()
    for step, ids in enumerate(loader):
        with accelerator.accumulate(model):
            out = model(input_ids=ids, labels=ids)
            accelerator.backward(out.loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
            sched.step()
            opt.zero_grad()
        _pace_io(accelerator, step)
        if step % 100 == 0 and accelerator.is_main_process:
            print(f"step {step} loss {out.loss.item():.4f} pad={tok.pad_token_id}")
    accelerator.wait_for_everyone()
    accelerator.unwrap_model(model).save_pretrained("out", save_function=accelerator.save)


if __name__ == "__main__":
    main()
