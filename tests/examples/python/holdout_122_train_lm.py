# ruff: noqa
# Hold-out batch 122 (adversarial idioms). Measured once in session 4 (round 40): 14/18 (78%) at medium+.
"""Small decoder-only LM pretraining loop (GPT-2 style) with per-parameter grad-norm telemetry."""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel


def init_weights(module):
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)  # ok: MLS302, MLS303, MLS304, MLS305
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


def lr_at(step, base_lr, warmup, total):
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 * base_lr + 0.9 * base_lr * 0.5 * (1 + math.cos(math.pi * progress))


def _grad_probe(name, store):
    def probe(grad):
        store[name] = grad.detach().float().norm().item()
        if name.startswith("transformer.wte"):
            return torch.neg(grad)  # ruleid: MLS303
    return probe


def train(batches, total_steps=20000, base_lr=6e-4, warmup=1000, accum=8, device="cuda"):
    model = GPT2LMHeadModel(GPT2Config(n_layer=12, n_head=12, n_embd=768)).to(device)
    model.apply(init_weights)
    grad_norms = {}
    for name, p in model.named_parameters():
        p.register_hook(_grad_probe(name, grad_norms))  # ruleid: MLS303
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}], lr=base_lr, betas=(0.9, 0.95))
    step = 0
    for i, (ids,) in enumerate(batches):
        ids = ids.to(device, non_blocking=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(ids).logits
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())
        (loss / accum).backward()  # ok: MLS302, MLS303, MLS304, MLS305
        if (i + 1) % accum:
            continue
        for group in opt.param_groups:
            group["lr"] = lr_at(step, base_lr, warmup, total_steps)  # ok: MLS302, MLS303, MLS304, MLS305
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        if step % 100 == 0:
            worst = max(grad_norms, key=grad_norms.get)
            print(f"step {step} loss {loss.item():.3f} max-grad {worst}={grad_norms[worst]:.3e}")
        if step >= total_steps:
            break
    return model
