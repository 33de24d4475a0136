# ruff: noqa
# Hold-out batch 36 (benchmark format, many ML domains; by a helper that never saw mlscan's code). Measured once after round 14: 15/16 (94%) at medium+.
"""Causal LM pretraining loop with accelerate: grad accumulation, warmup, clipping, EMA of loss."""
import math

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from transformers import AutoConfig, AutoModelForCausalLM


def lr_at(step, base_lr, warmup, total):
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base_lr * 0.5 * (1 + math.cos(math.pi * progress))


def train(dataset, model_name="gpt2", steps=50000, base_lr=6e-4, accum=8, seed=1234):
    set_seed(seed)  # ok: MLS301
    acc = Accelerator(gradient_accumulation_steps=accum, mixed_precision="bf16")
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_name))
    opt = torch.optim.AdamW(model.parameters(), lr=base_lr, betas=(0.9, 0.95), weight_decay=0.1)
    loader = DataLoader(dataset, batch_size=8, shuffle=True, num_workers=4)
    model, opt, loader = acc.prepare(model, opt, loader)
    smoothed = None
    step = 0
    while step < steps:
        for batch in loader:
            with acc.accumulate(model):
                out = model(input_ids=batch["input_ids"], labels=batch["input_ids"])
                acc.backward(out.loss)
                if acc.sync_gradients:
                    acc.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
                    for g in opt.param_groups:
                        g["lr"] = lr_at(step, base_lr, 2000, steps)  # ok: MLS302, MLS303, MLS304, MLS305
                opt.step()
                opt.zero_grad(set_to_none=True)
            if acc.sync_gradients:
                step += 1
                l = acc.gather(out.loss.detach()).mean().item()
                smoothed = l if smoothed is None else 0.98 * smoothed + 0.02 * l  # ok: MLS306
                if acc.is_main_process and step % 100 == 0:  # ok: MLS308
                    print(f"step {step} loss {smoothed:.4f} lr {opt.param_groups[0]['lr']:.2e}")
                if step % 5000 == 0:
                    acc.wait_for_everyone()  # ok: MLS307
                    acc.save_state(f"ckpt/step_{step}")
                if step >= steps:
                    break
    acc.end_training()
