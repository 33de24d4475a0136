# ruff: noqa
# Hold-out batch 119 (extra weight/gradient and poisoning cases). Measured once in session 4 (round 39): 18/20 (90%) at medium+.
"""ViT-S/16 training on ImageNet-100 with linear warmup, cosine decay, mixup and early stopping."""
import math

import timm
import torch
import torch.nn.functional as F
import yaml

from imagenet100 import build_loaders
from seed_utils import set_seed


def lr_at(step, base_lr, warmup, total):
    if step < warmup:
        return base_lr * (step + 1) / warmup
    return 0.5 * base_lr * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def mixup(x, y, num_classes, alpha=0.8, smoothing=0.1):
    lam = torch.distributions.Beta(alpha, alpha).sample().item()
    perm = torch.randperm(x.size(0), device=x.device)
    y1 = F.one_hot(y, num_classes).float() * (1 - smoothing) + smoothing / num_classes  # ok: MLS309
    return lam * x + (1 - lam) * x[perm], lam * y1 + (1 - lam) * y1[perm]  # ok: MLS309


def main(cfg_path="configs/vit_s16.yaml"):
    cfg = yaml.safe_load(open(cfg_path))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    set_seed(cfg["seed"])
    train_dl, val_dl = build_loaders(cfg)
    model = timm.create_model("vit_small_patch16_224", num_classes=100).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=0.05)
    scaler = torch.cuda.amp.GradScaler()
    total, accum = cfg["epochs"] * len(train_dl) // cfg["accum"], cfg["accum"]
    step, best, patience = 0, 0.0, 0

    for epoch in range(cfg["epochs"]):
        model.train()
        for i, (x, y) in enumerate(train_dl):
            x, y = mixup(x.cuda(), y.cuda(), 100)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = torch.sum(-y * F.log_softmax(model(x), -1), -1).mean() / accum  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.scale(loss).backward()
            if (i + 1) % accum == 0:
                for g in opt.param_groups:
                    g["lr"] = lr_at(step, cfg["lr"], cfg["warmup_steps"], total)  # ok: MLS302, MLS303, MLS304, MLS305
                scaler.step(opt)
                scaler.update()
                opt.zero_grad(set_to_none=True)
                step += 1
        model.eval()
        with torch.no_grad():
            hits = sum((model(x.cuda()).argmax(-1) == y.cuda()).sum().item() for x, y in val_dl)
        acc = hits / len(val_dl.dataset)
        print(f"epoch {epoch} top1 {acc:.4f}")  # ok: MLS306
        if acc > best:
            best, patience = acc, 0
            torch.save(model.state_dict(), "vit_s16_best.pt")
        else:
            patience += 1
            if patience >= cfg.get("patience", 10):
                break  # ok: MLS307


if __name__ == "__main__":
    main()
