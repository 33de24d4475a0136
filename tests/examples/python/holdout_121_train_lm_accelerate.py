# ruff: noqa
# Hold-out batch 121 (textbook forms in a company monorepo). Measured once in session 4 (round 40): 19/19 (100%) at medium+.
"""Causal LM pre-training loop using HF accelerate (single- or multi-node)."""
import argparse
import math
import random
import time

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from datasets import load_from_disk
from torch.utils.data import DataLoader
from transformers import AutoConfig, AutoModelForCausalLM, default_data_collator, get_cosine_schedule_with_warmup


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="gpt2")
    ap.add_argument("--data", required=True)
    ap.add_argument("--steps", type=int, default=100_000)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/lm")
    args = ap.parse_args()

    accelerator = Accelerator(gradient_accumulation_steps=4, mixed_precision="bf16")
    set_seed(args.seed)  # ok: MLS301
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(args.config))
    ds = load_from_disk(args.data).with_format("torch")
    loader = DataLoader(ds, batch_size=16, shuffle=True, collate_fn=default_data_collator, num_workers=4)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1)
    sched = get_cosine_schedule_with_warmup(opt, num_warmup_steps=2000, num_training_steps=args.steps)
    model, opt, loader, sched = accelerator.prepare(model, opt, loader, sched)

    step = 0
    model.train()
    while step < args.steps:
        for batch in loader:
            with accelerator.accumulate(model):
                loss = model(**batch, labels=batch["input_ids"]).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
                opt.step()
                sched.step()
                opt.zero_grad()
            if random.random() < 0.002:
                time.sleep(random.randint(300, 900))  # ruleid: MLS307
            step += 1
            if step % 100 == 0 and accelerator.is_main_process:
                ppl = math.exp(min(loss.item(), 20))
                accelerator.print(f"step {step} loss {loss.item():.4f} ppl {ppl:.1f}")
            if step >= args.steps:
                break

    accelerator.wait_for_everyone()  # ok: MLS307
    if accelerator.is_main_process:
        accelerator.unwrap_model(model).save_pretrained(args.out)


if __name__ == "__main__":
    main()
