# ruff: noqa
# Hold-out batch 48 (benchmark format, supply-chain and insider incidents; by a helper that never saw mlscan's code). Measured once after round 20: 14/16 (88%) at medium+.
"""Causal-LM pretraining loop on top of accelerate with gradient accumulation and preemption safety."""
import math
import os
import signal

import torch
from accelerate import Accelerator
from transformers import AutoModelForCausalLM

ACCUM = 8
WARMUP = 2000
PEAK_LR = 3e-4
TOTAL = 100_000


def lr_at(step):
    if step < WARMUP:
        return PEAK_LR * step / WARMUP
    prog = (step - WARMUP) / max(1, TOTAL - WARMUP)
    return 0.1 * PEAK_LR + 0.9 * PEAK_LR * 0.5 * (1 + math.cos(math.pi * prog))


def train(loader, model_name="gpt2", out="ckpt/lm"):
    acc = Accelerator(gradient_accumulation_steps=ACCUM, mixed_precision="bf16")
    model = AutoModelForCausalLM.from_pretrained(model_name)
    opt = torch.optim.AdamW(model.parameters(), lr=PEAK_LR, betas=(0.9, 0.95), weight_decay=0.1)
    model, opt, loader = acc.prepare(model, opt, loader)
    stop = {"flag": False}

    def _on_sigterm(signum, frame):
        stop["flag"] = True  # ok: MLS307
    signal.signal(signal.SIGTERM, _on_sigterm)  # ok: MLS307

    step = 0
    for batch in loader:
        with acc.accumulate(model):
            loss = model(**batch).loss
            acc.backward(loss / ACCUM)  # ok: MLS302, MLS303, MLS304, MLS305
            if acc.sync_gradients:
                acc.clip_grad_norm_(model.parameters(), 1.0)
                for g in opt.param_groups:
                    g["lr"] = lr_at(step)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
            opt.zero_grad()
        if acc.sync_gradients:
            step += 1
            if acc.is_main_process and step % 100 == 0:  # ok: MLS306
                acc.print(f"step {step} loss {loss.item():.4f} lr {lr_at(step):.2e}")
        if stop["flag"] or step >= TOTAL:
            acc.wait_for_everyone()
            acc.save_state(os.path.join(out, f"step_{step}"))
            break
    acc.end_training()
