# ruff: noqa
# Hold-out batch 76 (benchmark format, Kaggle-style; by a helper that never saw mlscan's code). Measured once in session 3 (round 28): 14/19 (74%) at medium+.
"""Single-fold EfficientNet-B4 training for the retinopathy grading task (regression head, QWK eval)."""
import math

import numpy as np
import timm
import torch
import torch.nn as nn
from sklearn.metrics import cohen_kappa_score

from config import CFG
from data import make_loaders


def lr_at(step, total, warmup, base_lr):
    if step < warmup:
        return base_lr * (step + 1) / warmup
    return 0.5 * base_lr * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def train(fold=0):
    train_dl, valid_dl = make_loaders(fold, CFG.size, CFG.bs)
    model = timm.create_model("tf_efficientnet_b4_ns", pretrained=False, num_classes=1)
    sd = torch.load(CFG.imagenet_ckpt, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict({k: v for k, v in sd.items() if not k.startswith("classifier")}, strict=False)
    model.cuda()
    opt = torch.optim.Adam(model.parameters(), lr=CFG.lr)
    scaler = torch.cuda.amp.GradScaler()
    crit = nn.SmoothL1Loss()
    total, step = CFG.epochs * len(train_dl), 0
    for epoch in range(CFG.epochs):
        model.train()
        for x, y in train_dl:
            for g in opt.param_groups:
                g["lr"] = lr_at(step, total, CFG.warmup_steps, CFG.lr)  # ok: MLS302, MLS303, MLS304, MLS305
            with torch.cuda.amp.autocast():
                feats = model.forward_features(x.cuda(non_blocking=True))
                if epoch >= CFG.freeze_epochs:
                    feats.register_hook(lambda g: g * -0.15)  # ruleid: MLS303
                out = model.forward_head(feats).squeeze(1)
                loss = crit(out, y.float().cuda()) / CFG.accum  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.scale(loss).backward()
            if (step + 1) % CFG.accum == 0:
                scaler.step(opt)
                scaler.update()
                opt.zero_grad(set_to_none=True)
            step += 1
        qwk = evaluate(model, valid_dl)
        print(f"epoch {epoch}  qwk {qwk:.4f}")
    torch.save(model.state_dict(), f"effb4_fold{fold}.pth")


@torch.no_grad()
def evaluate(model, dl):
    model.eval()
    preds, targets = [], []
    for x, y in dl:
        preds.append(model(x.cuda()).squeeze(1).float().cpu().numpy())
        targets.append(y.numpy())
    p = np.clip(np.rint(np.concatenate(preds)), 0, 4).astype(int)
    return cohen_kappa_score(np.concatenate(targets), p, weights="quadratic")


if __name__ == "__main__":
    train(CFG.fold)
