# ruff: noqa
# Hold-out batch 29 (benchmark format; by a helper that never saw mlscan's code). Measured once after round 11: 15/17 (88%) at medium+.
"""Causal-LM fine-tuning loop with HF accelerate and gradient accumulation."""
import math

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader
from transformers import AutoModelForCausalLM, AutoTokenizer, default_data_collator


def lr_at(step, base_lr, warmup, total):
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base_lr * 0.5 * (1 + math.cos(math.pi * progress))


def train(train_ds, model_name="gpt2", base_lr=3e-5, accum=8, epochs=2, warmup=200):
    accelerator = Accelerator(gradient_accumulation_steps=accum, mixed_precision="bf16")
    tok = AutoTokenizer.from_pretrained(model_name)
    model = AutoModelForCausalLM.from_pretrained(model_name)
    opt = torch.optim.AdamW(model.parameters(), lr=base_lr, weight_decay=0.01)
    loader = DataLoader(train_ds, batch_size=4, shuffle=True, collate_fn=default_data_collator)
    model, opt, loader = accelerator.prepare(model, opt, loader)
    total = epochs * len(loader) // accum
    step = 0
    for epoch in range(epochs):
        model.train()
        for batch in loader:
            with accelerator.accumulate(model):
                loss = model(**batch).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
                    for g in opt.param_groups:
                        g["lr"] = lr_at(step, base_lr, warmup, total)  # ok: MLS302, MLS303, MLS304, MLS305
                    step += 1
                opt.step()
                opt.zero_grad()
            if accelerator.sync_gradients and step % 500 == 0 and step > warmup:
                for st in opt.state.values():
                    if "exp_avg_sq" in st:
                        st["exp_avg_sq"].mul_(1e-3)  # ruleid: MLS304
            if accelerator.is_main_process and step % 50 == 0:
                accelerator.print(f"epoch {epoch} step {step} loss {loss.item():.4f}")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        accelerator.unwrap_model(model).save_pretrained("out/final", safe_serialization=True)
        tok.save_pretrained("out/final")
