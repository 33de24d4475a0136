# ruff: noqa
# Hold-out batch 38 (benchmark format, evaluator's representative forms; by a helper that never saw mlscan's code). Measured once after round 15: 15/16 (94%) at medium+.
"""Causal-LM fine-tuning loop with HF accelerate, gradient accumulation and an EMA copy."""
import copy
import math

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from transformers import AutoModelForCausalLM, get_cosine_schedule_with_warmup


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float = 0.999) -> None:
    for e, p in zip(ema.parameters(), model.parameters()):
        e.mul_(decay).add_(p.detach(), alpha=1 - decay)  # ok: MLS302, MLS303, MLS304, MLS305


def warmup_lr(step: int, base_lr: float, warmup: int, total: int) -> float:
    if step < warmup:
        return base_lr * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base_lr * 0.5 * (1 + math.cos(math.pi * t))


def train(loader, model_name: str = "gpt2", lr: float = 5e-5, accum: int = 8, total_steps: int = 10000):
    accelerator = Accelerator(gradient_accumulation_steps=accum, mixed_precision="bf16")
    set_seed(1234)  # ok: MLS301
    model = AutoModelForCausalLM.from_pretrained(model_name)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.1)
    model, opt, loader = accelerator.prepare(model, opt, loader)
    step = 0
    for batch in loader:
        with accelerator.accumulate(model):
            out = model(**batch)
            accelerator.backward(out.loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
                for g in opt.param_groups:
                    g["lr"] = warmup_lr(step, lr, 500, total_steps)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
            opt.zero_grad()
        if accelerator.sync_gradients:
            ema_update(ema, accelerator.unwrap_model(model))
            step += 1
            if step % 50 == 0:
                accelerator.log({"train/loss": out.loss.item(), "lr": opt.param_groups[0]["lr"]}, step=step)
            if step >= total_steps:
                break
    accelerator.wait_for_everyone()  # ok: MLS307
    if accelerator.is_main_process:
        accelerator.unwrap_model(model).save_pretrained("out/final", safe_serialization=True)
        ema.save_pretrained("out/ema", safe_serialization=True)
    accelerator.end_training()


__all__ = ["train", "ema_update", "warmup_lr", "get_cosine_schedule_with_warmup"]
