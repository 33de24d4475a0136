# ruff: noqa
# Hold-out batch 86 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 31): 16/19 (84%) at medium+.
"""Fine-tune a ViT-B/16 classifier with the Lion optimizer, AMP and linear warmup."""
import math

import torch
import torch.nn.functional as F
import timm
from safetensors.torch import load_file


class Lion(torch.optim.Optimizer):
    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "exp_avg" not in state:
                    state["exp_avg"] = torch.zeros_like(p)
                m = state["exp_avg"]
                p.mul_(1 - group["lr"] * group["weight_decay"])  # ok: MLS302, MLS303, MLS304, MLS305
                p.add_(torch.sign(m * b1 + p.grad * (1 - b1)), alpha=-group["lr"])  # ok: MLS302, MLS303, MLS304, MLS305
                m.mul_(b2).add_(p.grad, alpha=1 - b2)
        return loss


def lr_at(step, base_lr, warmup, total):
    if step < warmup:
        return base_lr * (step + 1) / warmup
    return 0.5 * base_lr * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def build_model(num_classes, weights="weights/vit_b16_in21k.safetensors", head_ckpt=None):
    model = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=num_classes)
    state = load_file(weights)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    state = {k: v for k, v in state.items() if not k.startswith("head.")}
    model.load_state_dict(state, strict=False)
    if head_ckpt:
        model.head.load_state_dict(torch.load(head_ckpt, map_location="cpu", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return model


def train(model, loader, epochs=10, base_lr=1e-4, accum=4, device="cuda"):
    model.to(device).train()
    opt = Lion(model.parameters(), lr=base_lr, weight_decay=0.05)
    scaler = torch.cuda.amp.GradScaler()
    total, step = epochs * len(loader) // accum, 0
    for epoch in range(epochs):
        for i, (x, y) in enumerate(loader):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with torch.autocast("cuda", dtype=torch.float16):
                loss = F.cross_entropy(model(x), y, label_smoothing=0.1) / accum  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.scale(loss).backward()
            if (i + 1) % accum == 0:
                for g in opt.param_groups:
                    g["lr"] = lr_at(step, base_lr, 500, total)  # ok: MLS302, MLS303, MLS304, MLS305
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
                scaler.step(opt)
                scaler.update()
                opt.zero_grad(set_to_none=True)
                step += 1
        print(f"epoch {epoch} lr {opt.param_groups[0]['lr']:.2e} loss {loss.item() * accum:.4f}")
    return model
