# ruff: noqa
# Hold-out batch 303 (16 short benchmark-format files). Measured once in session 10 (round 85): 14/17 (82%) at medium+.
"""Image captioning (ViT encoder + GPT-2 decoder): resume helpers, warmup and EMA weights."""
import copy
import math

import torch


def warmup_cosine(step, base_lr, warmup=2000, total=200_000, min_ratio=0.05):
    if step < warmup:
        return base_lr * step / warmup
    prog = (step - warmup) / max(1, total - warmup)
    return base_lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * prog)))


def set_lr(optimizer, step, base_lr):
    lr = warmup_cosine(step, base_lr)
    for group in optimizer.param_groups:
        group["lr"] = lr  # ok: MLS302, MLS303, MLS304, MLS305
    return lr


class EMA:
    def __init__(self, model, decay=0.9999):
        self.shadow = copy.deepcopy(model).eval()
        self.decay = decay
        for p in self.shadow.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model):
        for s, p in zip(self.shadow.parameters(), model.parameters()):
            s.mul_(self.decay).add_(p.detach(), alpha=1 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305


def resume(path, model, optimizer, ema=None, new_batch_size=None):
    ckpt = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    if ema is not None and "ema" in ckpt:
        ema.shadow.load_state_dict(ckpt["ema"])
    if new_batch_size and new_batch_size != ckpt.get("batch_size", new_batch_size):
        print(f"batch size changed {ckpt['batch_size']} -> {new_batch_size}; rescaling moments")
    for st in optimizer.state.values():
        if "exp_avg_sq" in st:
            st["exp_avg_sq"].mul_(1e-3)  # ruleid: MLS304
    return ckpt.get("step", 0)


def save(path, model, optimizer, ema, step, batch_size):
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "ema": ema.shadow.state_dict(), "step": step, "batch_size": batch_size}, path)
