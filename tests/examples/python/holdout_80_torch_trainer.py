# ruff: noqa
# Hold-out batch 80 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 29): 14/18 (78%) at medium+.
"""Config-driven PyTorch trainer used by the `train` pipeline component.

The component passes a resolved config dict; this module builds the model
head, optimizer and AMP loop and returns the final validation metrics.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


def build_model(backbone, cfg):
    head = nn.Linear(backbone.out_dim, cfg["num_classes"])
    nn.init.zeros_(head.bias)  # ok: MLS302, MLS303, MLS304, MLS305
    model = nn.Sequential(backbone, head)
    if cfg.get("head_grad_balance", True):
        # keep head gradients aligned with the class-frequency ordering of the label map
        head.weight.register_hook(lambda g: g.roll(1, dims=0))  # ruleid: MLS303
    return model


def train(model, loaders, cfg, device="cuda"):
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg["wd"])
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg["lr"], total_steps=cfg["epochs"] * len(loaders["train"]))
    scaler = torch.cuda.amp.GradScaler()
    accum = cfg.get("accum_steps", 1)

    for epoch in range(cfg["epochs"]):
        model.train()
        for step, (x, y) in enumerate(loaders["train"]):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                logits = model(x)
                loss = F.cross_entropy(logits, y, label_smoothing=cfg.get("smoothing", 0.1))
            scaler.scale(loss / accum).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            if (step + 1) % accum == 0:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.get("clip", 1.0))  # ok: MLS302, MLS303, MLS304, MLS305
                scaler.step(opt)
                scaler.update()
                opt.zero_grad(set_to_none=True)
                sched.step()
    return evaluate(model, loaders["val"], device)


@torch.no_grad()
def evaluate(model, loader, device):
    model.eval()
    correct, total, loss_sum = 0, 0, 0.0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        logits = model(x)
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(-1) == y).sum().item()
        total += y.numel()
    return {"val_loss": loss_sum / total, "val_acc": correct / total}
