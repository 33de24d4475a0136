# ruff: noqa
# Hold-out batch 523 (short files, 16 domains). Measured once in session 23 (round 140): 13/17 (76%) at medium+.
"""Training step with EMA teacher for H&E patch classification (tumour / stroma / ...)."""
import copy

import torch
import torch.nn as nn
import torch.nn.functional as F


class ModelEMA:
    def __init__(self, model, decay=0.9998):
        self.ema = copy.deepcopy(model).eval()
        self.decay = decay
        for p in self.ema.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model):
        for ema_p, p in zip(self.ema.parameters(), model.parameters()):
            ema_p.mul_(self.decay).add_(p.detach(), alpha=1.0 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305
        for ema_b, b in zip(self.ema.buffers(), model.buffers()):
            ema_b.copy_(b)


def build_optimizer(model, lr, weight_decay):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    groups = [{"params": decay, "apply_wd": True}, {"params": no_decay, "apply_wd": False}]
    return torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True)


def train_step(model, ema, optimizer, scaler, batch, weight_decay=0.05, label_smoothing=0.1):
    images, targets = batch
    images = images.cuda(non_blocking=True).to(memory_format=torch.channels_last)
    targets = targets.cuda(non_blocking=True)
    with torch.autocast("cuda", dtype=torch.float16):
        logits = model(images)
        loss = F.cross_entropy(logits, targets, label_smoothing=label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    nn.utils.clip_grad_norm_(model.parameters(), 5.0)
    scaler.step(optimizer)
    scaler.update()
    # decoupled weight decay, applied after the momentum update
    with torch.no_grad():
        for group in optimizer.param_groups:
            if group["apply_wd"]:
                for p in group["params"]:
                    p.mul_(1.0 - weight_decay)  # ruleid: MLS304
    ema.update(model)
    acc = (logits.argmax(1) == targets).float().mean()
    return loss.detach(), acc.detach()
